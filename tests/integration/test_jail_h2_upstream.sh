#!/usr/bin/env bash
# An upstream that speaks only HTTP/2 (ALPN h2 alone: a Node http2 or gRPC server
# without HTTP/1.1) behind a host whose requests authproxy changes. The proxy offers
# http/1.1 alone, and such a server ends the handshake with a no_application_protocol
# alert. That was answered 502 upstream_tls_failed, "a certificate that did not verify
# for its name, no TLS 1.2, or a connection it ended", and logged at info as "a fatal
# alert message was received": an operator went looking at certificates. The answer,
# the audit record and the log now name HTTP/2 as the cause.
#
#   jail: curl -> authproxy (intercepts api.example.com) -> node http2 server, h2 only
. "$(dirname "$0")/lib.sh"
require_cmd node curl

make_ca "$T/ca" api.example.com
cat > "$T/h2only.js" <<'JSEOF'
const fs = require("fs");
const s = require("http2").createSecureServer(
  { cert: fs.readFileSync(process.argv[2]), key: fs.readFileSync(process.argv[3]) },
  (req, res) => res.end("h2 " + req.httpVersion + "\n"));
s.listen(0, "127.0.0.1", () => fs.writeFileSync(process.argv[4], String(s.address().port)));
JSEOF
node "$T/h2only.js" "$T/ca/server.pem" "$T/ca/server.key" "$T/h2.port" 2> "$T/h2.log" &
PIDS+=($!)
wait_for "[ -s '$T/h2.port' ]"
cat > "$T/config.json" <<EOF2
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Team", "type": "plaintext", "value": "agents" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$(cat "$T/h2.port")" } } }
EOF2

out=$(jail --config "$T/config.json" --upstream-ca "$T/ca/ca.pem" --log "$T/audit.jsonl" \
  --user nobody -- curl -sS -m 10 -w '\n%{http_code}' https://api.example.com/v1 2> "$T/jail.log")
assert_eq "$(tail -n 1 <<<"$out")" "502" "the status"
assert_contains "$out" '"code":"upstream_alpn_not_http11"' "the answer's reason"
assert_contains "$out" "speaks only HTTP/2" "the answer's message"
assert_not_contains "$out" "certificate" "the answer blames a certificate"
assert_contains "$(cat "$T/audit.jsonl")" '"reason":"upstream_alpn_not_http11"' "the audit reason"
assert_contains "$(cat "$T/jail.log")" "upstream api.example.com refused http/1.1 in ALPN" \
  "the jail's log (at the default level)"
pass "an HTTP/2-only upstream of an intercepted host: 502 naming HTTP/2, audited and logged"
