#!/usr/bin/env bash
# A record that follows a non-fatal alert in the same read is not lost: mbedTLS
# answers such an alert (and a refused renegotiation) with WANT_READ although bytes
# remain in the buffer lent to it, and those bytes used to be dropped, so the request
# sent with the alert was never answered and the stream was broken.
. "$(dirname "$0")/lib.sh"

CLIENT="$BUILD/tests/tls_alert_client"
[ -x "$CLIENT" ] || fail "$CLIENT is not built"
cp "$CLIENT" "$T/client"
cat > "$T/config.json" <<'EOF2'
{ "egress": { "default": "allow", "deny": ["denied.example.com"] } }
EOF2
out=$(jail --config "$T/config.json" --user nobody -- "$T/client" denied.example.com 443 \
  2> "$T/jail.log")
assert_contains "$out" "HTTP/1.1 403" "the request sent after the alert is answered"
pass "a request in the same read as a warning alert is answered"
