#!/usr/bin/env bash
# A sandbox that shuts down its side of a connection (shutdown(SHUT_WR), `nc -N`)
# still gets every answer.
#
#   jail netns (anonymous)                       host netns
#   python --nft--> authproxy (in-process) --remap--> fake upstream 127.0.0.1 (HTTP)
. "$(dirname "$0")/lib.sh"

start_upstream up

mkdir -p "$T/secrets"
printf 'sk-half-%s\n' "$$" > "$T/secrets/KEY"
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
run() {
  jail --config "$T/config.json" --secrets-dir "$T/secrets" --user nobody "$@"
}

# 1. A keep-alive answer the proxy has read whole but not yet written to a sandbox
#    that reads slowly; the sandbox then shuts down its write side (it sends no more
#    requests). The answer is written before the connection ends: the close used to
#    cancel the queued part, and the sandbox read a clean EOF after 2.6 of 4 MiB.
#    (--write-queue-bytes lets the proxy read all of it while the sandbox pauses; the
#    default 256 KiB showed the same for answers of 2.7-2.9 MiB.)
SIZE=$((4 << 20))
cat > "$T/halfclose.py" <<'PYEOF'
import socket, sys, time
size = int(sys.argv[1])
s = socket.create_connection(("api.example.com", 80), timeout=20)
s.sendall(b"GET /big?bytes=%d HTTP/1.1\r\nHost: api.example.com\r\n\r\n" % size)
time.sleep(1)  # busy elsewhere: the proxy reads the whole answer meanwhile
s.shutdown(socket.SHUT_WR)
time.sleep(0.5)
data = b""
while True:
    k = s.recv(1 << 20)
    if not k:
        break
    data += k
head, _, body = data.partition(b"\r\n\r\n")
print(head.split(b"\r\n")[0].decode(), len(body) == size and body.count(b"x") == size)
PYEOF
out=$(run --write-queue-bytes $((8 << 20)) -- "$PY" "$T/halfclose.py" "$SIZE")
assert_eq "$out" "HTTP/1.1 200 OK True" "the whole answer after the sandbox's FIN"
pass "a half-close between requests waits for the last answer to be written"
