#!/usr/bin/env bash
# Every HTTP request has its audit record, also one its connection's end cut short: the
# sandbox resets the connection while the upstream thinks, the upstream closes in the
# middle of its answer, the jail ends (the sandbox detaches) with a request in flight.
# Such a request was forwarded, with its injected credentials; its record says so, with
# the path, the header names and why it ended, also when the proxy answers it itself
# after it went out (502). A regression test: only the connection
# record used to be written, so the log had no trace of these requests.
#
#   jail: client --> authproxy --log --> plain upstream (http) / TLS upstream (intercepted,
#         Authorization injected); the client waits for the upstream's log of each
#         request before it cuts it
. "$(dirname "$0")/lib.sh"

make_ca "$T/ca" api.example.com
start_upstream plain
start_upstream tls "$T/ca/server.pem" "$T/ca/server.key"
mkdir -p "$T/secrets"
printf 'sk-cut-%s\n' $$ > "$T/secrets/KEY"
cat > "$T/config.json" <<EOF2
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$tls_PORT",
                      "plain.example.com": "127.0.0.1:$plain_PORT" } } }
EOF2
# An answer that promises 100 bytes and brings 3 before the upstream closes.
CUT=$(printf 'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc' | base64 -w0 | tr '+/' '-_')

set +e
jail --config "$T/config.json" --secrets-dir "$T/secrets" --upstream-ca "$T/ca/ca.pem" \
  --user nobody --log "$T/audit.jsonl" -- "$PY" - "$T" "$CUT" > "$T/client.out" \
  2> "$T/client.log" <<'PYEOF'
import json, socket, ssl, struct, sys, time
T, cut = sys.argv[1], sys.argv[2]

def seen(upstream, path):
    # Polls the upstream's log until it has received the request for path.
    for _ in range(200):
        for line in open("%s/%s.jsonl" % (T, upstream)):
            r = json.loads(line)
            if r.get("event") == "request" and r.get("target") == path:
                return
        time.sleep(0.025)
    sys.exit("the upstream never got " + path)

def reset(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()

def get(s, host, path):
    s.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path.encode(), host.encode()))

# The sandbox resets a plain request the upstream is answering slowly.
s = socket.create_connection(("plain.example.com", 80), timeout=10)
get(s, "plain.example.com", "/slow?delay=3&n=1")
seen("plain", "/slow?delay=3&n=1")
reset(s)
# The same over intercepted TLS, with a credential injected.
ctx = ssl.create_default_context()
s = ctx.wrap_socket(socket.create_connection(("api.example.com", 443), timeout=10),
                    server_hostname="api.example.com")
get(s, "api.example.com", "/slow?delay=3&n=2")
seen("tls", "/slow?delay=3&n=2")
reset(s)
# The upstream closes in the middle of its answer.
s = socket.create_connection(("plain.example.com", 80), timeout=10)
get(s, "plain.example.com", "/exact?r=%s&close=1" % cut)
while s.recv(65536):
    pass
s.close()
# The upstream closes without answering: the proxy answers 502 itself, but the
# request had gone out.
s = socket.create_connection(("plain.example.com", 80), timeout=10)
s.sendall(b"POST /exact?r=&close=1 HTTP/1.1\r\nHost: plain.example.com\r\n"
          b"Content-Length: 0\r\n\r\n")
while s.recv(65536):
    pass
s.close()
# CMD ends with a request in flight: the jail ends and the sandbox detaches.
s = socket.create_connection(("plain.example.com", 80), timeout=10)
get(s, "plain.example.com", "/slow?delay=3&n=3")
seen("plain", "/slow?delay=3&n=3")
print("sent")
PYEOF
rc=$?
set -e
assert_eq "$rc" "0" "the client's status ($(cat "$T/client.log"))"
cat "$T/audit.jsonl"

q() {
  "$PY" - "$T/audit.jsonl" "$1" <<'PYEOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
reqs = [r for r in recs if r["event"] == "request"]
def req(path, method="GET"):
    m = [r for r in reqs if r["path"] == path and r["method"] == method]
    return m[0] if len(m) == 1 else {"records": len(m)}
print(eval(sys.argv[2]))
PYEOF
}
assert_eq "$(q 'len(reqs)')" "5" "request records"
assert_eq "$(q 'sorted(r["path"] for r in reqs)')" "['/exact', '/exact', '/slow', '/slow', '/slow']" "paths"
assert_eq "$(q '[(r["action"], r["reason"]) for r in reqs if r["name"] == "plain.example.com" and r["path"] == "/slow"]')" \
  "[('forward', 'sandbox_error'), ('forward', 'sandbox_detached')]" "plain requests the sandbox cut, then the jail's end"
assert_eq "$(q '[(r["action"], r["reason"], r["rule"], r["injected"]) for r in reqs if r["name"] == "api.example.com"]')" \
  "[('forward', 'sandbox_error', 'api', ['Authorization'])]" "the intercepted request with a credential"
assert_eq "$(q '(req("/exact")["action"], req("/exact")["reason"], req("/exact")["status"])')" \
  "('forward', 'upstream_closed', 200)" "the answer the upstream cut"
assert_eq "$(q '(req("/exact", "POST")["action"], req("/exact", "POST")["reason"], req("/exact", "POST")["status"])')" \
  "('forward', 'upstream_closed', 502)" "a request the upstream closed on unanswered"
if grep -q "sk-cut-$$" "$T/audit.jsonl"; then fail "the secret is in the audit log"; fi
pass "requests cut by the sandbox, the upstream or the jail's end each have their record"
