#!/usr/bin/env bash
# HTTP/2 without TLS, with prior knowledge (plaintext gRPC, `curl
# --http2-prior-knowledge`): its first bytes are the preface "PRI * HTTP/2.0", which
# is no HTTP/1.x request. To a host no rule applies to it is relayed as it is, as any
# protocol but HTTP/1.x is; where requests would be changed or inspected it is refused.
# It used to be refused everywhere (501 http2_preface), so plaintext gRPC reached no
# host at all. At a denied host it is refused with the denial, as HTTP/1.1 and TLS are
# there: it was answered and audited as http2_preface, with no action, which told an
# operator that h2c was the problem (no_proxy would not let it through either).
# At an unknown synthetic address (a client that kept an answer from before a daemon
# restart) the preface names no host either: it is refused as unknown_synthetic_address,
# as an HTTP/1.0 request without Host there is, not by the address's egress decision.
#
#   jail: curl --http2-prior-knowledge -> authproxy -> node http2 (h2c) on 127.0.0.1
. "$(dirname "$0")/lib.sh"
require_cmd node curl

cat > "$T/h2c.js" <<'JSEOF'
const fs = require("fs");
const s = require("http2").createServer((req, res) => {
  fs.appendFileSync(process.argv[3], req.url + "\n");
  res.end("h2c " + req.httpVersion + " " + req.url + "\n");
});
s.listen(0, "127.0.0.1", () => fs.writeFileSync(process.argv[2], String(s.address().port)));
JSEOF
: > "$T/h2c.reqs"
node "$T/h2c.js" "$T/h2c.port" "$T/h2c.reqs" 2> "$T/h2c.log" &
PIDS+=($!)
wait_for "[ -s '$T/h2c.port' ]"
port=$(cat "$T/h2c.port")
mkdir -p "$T/secrets"
printf 'sk-h2c-%s\n' "$$" > "$T/secrets/KEY"
cat > "$T/config.json" <<EOF2
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] } ],
  "egress": { "deny": ["blocked.example.com"] },
  "dns": { "remap": { "grpc.example.com": "127.0.0.1:$port", "api.example.com": "127.0.0.1:$port" } } }
EOF2

out=$(jail --config "$T/config.json" --secrets-dir "$T/secrets" --log "$T/audit.jsonl" \
  --user nobody -- sh -c '
  curl -sS --max-time 10 --http2-prior-knowledge http://grpc.example.com/tunnelled
  curl -sS --max-time 10 --http2-prior-knowledge http://api.example.com/intercepted 2>&1
  echo "status $?"
  printf "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" | curl -sS --max-time 10 telnet://blocked.example.com:80 |
    tr -d "\r" |
    head -n 1' 2> "$T/jail.log")
assert_eq "$out" "h2c 2.0 /tunnelled
curl: (52) Empty reply from server
status 52
HTTP/1.1 403 Forbidden (authproxy: egress_deny)" "h2c through a tunnel, to a host with a rule, to a denied host"
assert_eq "$(cat "$T/h2c.reqs")" "/tunnelled" "requests the h2c server received"
assert_eq "$("$PY" -c '
import json, sys
print([(r.get("action"), r.get("reason")) for r in map(json.loads, open(sys.argv[1]))
       if r["event"] == "conn" and r.get("name") == "blocked.example.com"])' "$T/audit.jsonl")" \
  "[('deny', 'egress_deny')]" "the denied host's audit record"
pass "h2c with prior knowledge: relayed to a host without rules, refused where a rule applies, denied at a denied host"

# An unknown synthetic address under "default": "deny": the preface was answered and
# audited egress_not_allowed for the address (under "default": "allow" it was relayed,
# then refused as unknown_synthetic_address), while HTTP/1.0 there says
# unknown_synthetic_address.
cat > "$T/deny.json" <<EOF2
{ "egress": { "default": "deny", "allow": ["grpc.example.com"] } }
EOF2
: > "$T/audit.jsonl"
out=$(jail --config "$T/deny.json" --log "$T/audit.jsonl" --user nobody -- sh -c '
  printf "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" | curl -sS --max-time 10 telnet://198.19.255.250:80 |
    tr -d "\r" | head -n 1
  printf "GET / HTTP/1.0\r\n\r\n" | curl -sS --max-time 10 telnet://198.19.255.250:80 |
    tr -d "\r" | head -n 1' 2> "$T/jail.log")
assert_eq "$out" "HTTP/1.1 403 Forbidden (authproxy: unknown_synthetic_address)
HTTP/1.1 403 Forbidden (authproxy: unknown_synthetic_address)" "h2c and HTTP/1.0 at an unknown synthetic address"
assert_eq "$("$PY" -c '
import json, sys
print([(r.get("action"), r.get("reason")) for r in map(json.loads, open(sys.argv[1]))
       if r["event"] == "conn"])' "$T/audit.jsonl")" \
  "[('deny', 'unknown_synthetic_address'), ('deny', 'unknown_synthetic_address')]" \
  "their audit records"
pass "h2c at an unknown synthetic address: refused as unknown_synthetic_address"
