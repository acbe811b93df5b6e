#!/usr/bin/env bash
# An intercepted upstream that ends the TLS handshake without a certificate (a port
# that does not speak TLS, a server that hangs up on the ClientHello) is a 502
# upstream_tls_failed whose message names the handshake: the answer's message, what
# the OpenAI and Anthropic SDKs report, said "the destination's TLS certificate did
# not verify for its name", sending an agent after a trust problem that was not there.
#
#   jail netns                                  host netns
#   curl https://api.example.com/  -nft->       authproxy jail (intercepts: a rule)
#                                                 -> tcp_server: reads the ClientHello,
#                                                    closes
. "$(dirname "$0")/lib.sh"

start_tcp_server hangup --reply none
cat > "$T/config.json" <<EOF2
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Team", "type": "plaintext", "value": "agents" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$hangup_PORT" } } }
EOF2
out=$(jail --config "$T/config.json" --log "$T/audit.jsonl" --user nobody -- \
  curl -sS -m 20 -w " code=%{http_code}" https://api.example.com/ 2> "$T/jail.log") || true
assert_contains "$out" "code=502" "the answer (got: $out)"
assert_contains "$out" '"code":"upstream_tls_failed"' "the reason"
assert_contains "$out" "TLS handshake" "the message names the handshake"
assert_not_contains "$out" "certificate did not verify" "the message blames a certificate"
pass "an upstream that hangs up in the TLS handshake is not called a certificate failure"
