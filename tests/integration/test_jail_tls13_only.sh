#!/usr/bin/env bash
# A sandbox client restricted to TLS 1.3 cannot be intercepted (mbedTLS 2.28 speaks
# TLS 1.2): the log says so at the default level, instead of saying nothing (the
# generic handshake failure is logged at info) or blaming trust in the sandbox CA.
. "$(dirname "$0")/lib.sh"

cat > "$T/config.json" <<'EOF2'
{ "rules": [ { "name": "r", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Seen", "type": "plaintext", "value": "1" } ] } ] }
EOF2
cat > "$T/c13.py" <<'EOF2'
import socket, ssl
ctx = ssl.create_default_context()
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
try:
    with socket.create_connection(("api.example.com", 443), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="api.example.com"):
            print("connected")
except (OSError, ssl.SSLError):
    print("refused")
EOF2
out=$(jail --config "$T/config.json" --user nobody -- "$PY" "$T/c13.py" 2> "$T/jail.log")
assert_eq "$out" "refused" "a TLS 1.3-only client's handshake"
grep -q "offers only TLS 1.3; intercepted connections speak TLS 1.2" "$T/jail.log" ||
  fail "no warning names TLS 1.3 as the cause: $(cat "$T/jail.log")"
assert_not_contains "$(cat "$T/jail.log")" "trust the sandbox CA" "the log blames the CA"
pass "a TLS 1.3-only client is told apart in the log"
