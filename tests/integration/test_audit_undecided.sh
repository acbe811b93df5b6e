#!/usr/bin/env bash
# A connection record names an action (intercept, tunnel, bypass, deny) only when the
# policy decided one. A connection the sandbox closed before anything could be
# decided (a head cut short, half a ClientHello, nothing at all) to a host the policy
# allows was recorded as "deny": a security team counting denials counted these too,
# and the metrics (authproxy_connections_total{action="deny"}) did not. A real denial
# still says "deny", and so does a request refused before the connection was decided
# (its Host disagrees with the name the sandbox connected to), as in TLS, and a
# connection to a synthetic address the responder never handed out (denied when it is
# accepted), however soon the sandbox closes it.
#
#   jail: client --> authproxy --log (allowed: ok.example.com; denied: bad.example.com)
. "$(dirname "$0")/lib.sh"

start_upstream plain
cat > "$T/config.json" <<EOF2
{ "egress": { "default": "allow", "deny": ["bad.example.com"] },
  "dns": { "remap": { "ok.example.com": "127.0.0.1:$plain_PORT" } } }
EOF2

jail --config "$T/config.json" --user nobody --log "$T/audit.jsonl" -- "$PY" -c '
import socket
def cut(host, port, data):
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    s.recv(100)  # the proxy ends its side too
    s.close()
cut("ok.example.com", 80, b"GET / HTTP/1.1\r\nHo")   # a head cut short
cut("ok.example.com", 443, b"\x16\x03\x01\x00")       # half a ClientHello
cut("ok.example.com", 80, b"")                        # nothing
try:
    cut("bad.example.com", 22, b"SSH-2.0-x\r\n")      # denied
except OSError:  # reset: at once, or before the shutdown
    pass
cut("ok.example.com", 80, b"GET / HTTP/1.1\r\nHost: other.example.com\r\n\r\n")
cut("198.19.255.250", 80, b"")                        # an unknown synthetic address
' || fail "the client failed"
cat "$T/audit.jsonl"

q() {
  "$PY" - "$T/audit.jsonl" "$1" <<'PYEOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
print(eval(sys.argv[2]))
PYEOF
}
assert_eq "$(q 'len([r for r in recs if r["event"] == "conn"])')" "6" "connection records"
assert_eq "$(q '[(r["name"], r.get("action"), r.get("reason")) for r in recs if r["event"] == "conn" and r["conn"] <= 3]')" \
  "[('ok.example.com', None, 'sandbox_closed'), ('ok.example.com', None, 'sandbox_closed'), ('ok.example.com', None, 'sandbox_closed')]" \
  "connections closed before a decision"
assert_eq "$(q '[(r.get("action"), r.get("reason")) for r in recs if r["event"] == "conn" and r["conn"] >= 4]')" \
  "[('deny', 'egress_deny'), ('deny', 'host_mismatch'), ('deny', 'unknown_synthetic_address')]" \
  "the denied connections"
pass "only a decision makes a connection record's action; a denial is still a deny"
