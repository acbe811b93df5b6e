#!/usr/bin/env bash
# A credential goes in cleartext only where the config says so (DESIGN.md I2). A rule
# whose secret header (workspace_secret, opaque) would be injected into a plain-HTTP
# request, or a callback whose credentials would be, refuses the request with 403
# tls_required unless it has "allow_plain_http": true; the upstream receives nothing.
# A `:443` in match_hosts does not help a sandbox that speaks plain HTTP to port 443.
# Over intercepted HTTPS the same rule injects; a plaintext header always may.
. "$(dirname "$0")/../integration/lib.sh"

make_ca "$T/ca" api.example.com
start_upstream tls "$T/ca/server.pem" "$T/ca/server.key"
start_upstream plain
start_upstream cb
mkdir -p "$T/secrets"
SECRET="sk-plain-$$"
printf '%s\n' "$SECRET" > "$T/secrets/KEY"

cat > "$T/config.json" <<EOF2
{
  "rules": [
    { "name": "api", "match_hosts": ["api.example.com", "api443.example.com:443"],
      "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] },
    { "name": "mirror", "match_hosts": ["mirror.example.com"], "allow_plain_http": true,
      "headers": [ { "name": "Authorization", "type": "opaque", "value": "Basic bWlycm9y" } ] },
    { "name": "tag", "match_hosts": ["tag.example.com", "mirror.example.com"],
      "headers": [ { "name": "X-Team", "type": "plaintext", "value": "agents" } ] }
  ],
  "callback": { "url": "http://127.0.0.1:$cb_PORT/creds", "match_hosts": ["cb.example.com"] },
  "dns": { "remap": {
    "api.example.com": "127.0.0.1:$tls_PORT",
    "api443.example.com": "127.0.0.1:$plain_PORT",
    "mirror.example.com": "127.0.0.1:$plain_PORT",
    "tag.example.com": "127.0.0.1:$plain_PORT",
    "cb.example.com": "127.0.0.1:$plain_PORT"
  } }
}
EOF2

run() {
  jail --config "$T/config.json" --secrets-dir "$T/secrets" --upstream-ca "$T/ca/ca.pem" \
    --user nobody --log "$T/audit.jsonl" -- "$@"
}
count() { "$PY" -c 'import json,sys; print(sum(1 for l in open(sys.argv[1]) if l.strip()))' "$1"; }

# Plain HTTP to the rule's host, on port 80 and on the port 443 its match_hosts names:
# refused, naming the rule; nothing reaches either upstream; nothing is called back.
out=$(run sh -c 'curl -sS -i http://api.example.com/v1/models;
                 curl -sS -i http://api443.example.com:443/v1/models;
                 curl -sS -i http://cb.example.com/x')
assert_eq "$(printf '%s\n' "$out" | grep -c '^HTTP/1.1 403')" "3" "three refusals ($out)"
assert_eq "$(printf '%s\n' "$out" | grep -ci '^X-Authproxy-Error: tls_required')" "3" "reason header"
assert_contains "$out" '"rule":"api"' "the refusal names the rule"
assert_contains "$out" '"rule":"callback"' "the refusal names the callback"
assert_not_contains "$out" "$SECRET" "the secret reached the sandbox"
assert_eq "$(count "$T/plain.jsonl")" "0" "requests at the plain upstream"
assert_eq "$(count "$T/tls.jsonl")" "0" "requests at the TLS upstream"
assert_eq "$(count "$T/cb.jsonl")" "0" "callback calls"
assert_contains "$(cat "$T/audit.jsonl")" '"reason":"tls_required"' "audit reason"
pass "plain HTTP that would carry a secret: 403 tls_required, nothing sent"

# The same rule over intercepted HTTPS injects.
out=$(run curl -sS https://api.example.com/v1/models)
assert_contains "$out" '"ok": true' "HTTPS through interception"
assert_eq "$(upq tls 'hdr(reqs[-1], "Authorization")')" "$(jlist "Bearer $SECRET")" "HTTPS: injected"
pass "the same rule over HTTPS: injected"

# A rule with allow_plain_http injects over plain HTTP; a plaintext header always does.
out=$(run sh -c 'curl -sS http://mirror.example.com/simple/; curl -sS http://tag.example.com/')
assert_eq "$(upq plain 'hdr(reqs[0], "Authorization")')" "$(jlist "Basic bWlycm9y")" "opted-in secret"
assert_eq "$(upq plain 'hdr(reqs[0], "X-Team")')" "$(jlist agents)" "plaintext beside it"
assert_eq "$(upq plain 'hdr(reqs[1], "X-Team")')" "$(jlist agents)" "plaintext header alone"
assert_eq "$(upq plain 'len(reqs)')" "2" "requests at the plain upstream"
pass "allow_plain_http and plaintext headers go over plain HTTP"
