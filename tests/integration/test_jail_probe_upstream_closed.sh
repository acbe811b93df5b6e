#!/usr/bin/env bash
# A probe whose server closes before either side spoke ends the relay; the client's
# later bytes are not judged anew. A connection silent for 500 ms at a rule's host on
# a port but 80 and 443 is relayed as a probe until one side speaks (7be7f19). A
# server that closed that connection (an idle timeout, a refusal) had its FIN passed
# to the client, which reads "closed" as "my request was not taken"; but a request
# the client sent then was sniffed anew, dialed on a new upstream connection and
# executed there, with the rule's credential, and its answer written to a connection
# already ended: executed, answer lost, and a client that retries (as clients do
# when a connection closes before any answer) sends it twice. The server's close now
# settles the probe as a relay, as it would a greeting: what the client sends after
# it goes down the closed connection, as without the proxy.
#
#   jail: client (connect, silence, request after the close)
#         -> authproxy -> closer (closes the first connection of each run, answers
#                                 any other)
. "$(dirname "$0")/lib.sh"

cat > "$T/closer.py" <<'PYEOF'
import os, socket, sys
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(16)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(ls.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    c, _ = ls.accept()
    if os.path.exists(sys.argv[3]):  # the probe's connection: closed before anyone spoke
        os.unlink(sys.argv[3])
        c.close()
        continue
    data = c.recv(65536)
    with open(sys.argv[2], "ab") as f:
        f.write(data.split(b"\r\n")[0] + b"\n")
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    c.close()
PYEOF
"$PY" "$T/closer.py" "$T/closer.port" "$T/closer.requests" "$T/close-next" 2> "$T/closer.log" &
PIDS+=($!)
wait_for "[ -s '$T/closer.port' ]"
# run CONFIG: the client, in a jail under CONFIG; prints what it saw.
run() {
  jail --config "$1" --log "$T/audit.jsonl" --user nobody -- "$PY" -c '
import socket
s = socket.create_connection(("api.example.com", 8080), timeout=10)
print("before the request:", s.recv(4096))  # the server closed: b""
try:
    s.sendall(b"POST /once HTTP/1.1\r\nHost: api.example.com:8080\r\nContent-Length: 0\r\n\r\n")
    print("answer:", s.recv(4096)[:12])
except OSError as e:
    print("answer:", type(e).__name__)' 2>> "$T/jail.log"
}
cat > "$T/inject.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "plaintext", "value": "Bearer x" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$(cat "$T/closer.port")" } } }
EOF
# Where request-level policy applies the probe is one too, and ends with the close.
sed 's/"dns":/"egress": { "deny": [ { "hosts": ["api.example.com"], "methods": ["DELETE"] } ] }, "dns":/' \
  "$T/inject.json" > "$T/inspect.json"
for cfg in inject inspect; do
  : > "$T/closer.requests"
  : > "$T/audit.jsonl"
  : > "$T/close-next"
  out=$(run "$T/$cfg.json")
  assert_contains "$out" "before the request: b''" "$cfg: the server's close reached the client"
  assert_not_contains "$out" "200 OK" "$cfg: an answer after the close"
  assert_eq "$(cat "$T/closer.requests")" "" "$cfg: requests the upstream executed"
  assert_not_contains "$(cat "$T/audit.jsonl")" '"event":"request"' "$cfg: request records"
done
pass "a request sent after the probe's server closed is not executed"
