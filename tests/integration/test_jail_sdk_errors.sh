#!/usr/bin/env bash
# The proxy's own answers (a 403 deny, a 502 for an upstream it could not reach), as
# the official API SDKs read them. The OpenAI and Anthropic SDKs (Stainless-generated,
# Node and Python) take an error's text from the JSON body's `error` member: its
# `message` when it is an object with one, else the member JSON-encoded; `code` and
# `type` from the same object (openai-node APIError.generate/makeMessage,
# openai-python APIStatusError); the Anthropic SDK takes the top-level `message`.
# The proxy's body used to be {"error": "forbidden", ...}, so the OpenAI SDK said
# `403 "forbidden"` and `502 "upstream"`: nothing about why. This test reads the
# answers with that logic, in Python, since CI has no npm registry.
#
#   jail netns                               host netns
#   +-------------------------------+        +---------------------------------------+
#   | python urllib over HTTPS      | -nft-> | authproxy: 403 egress_deny (a path),   |
#   | (trusts the sandbox CA)       |        |   502 upstream_unreachable (nothing    |
#   +-------------------------------+        |   listens where dead.example.com goes) |
#                                            +---------------------------------------+
. "$(dirname "$0")/lib.sh"

make_ca "$T/ca" api.example.com
start_upstream tls "$T/ca/server.pem" "$T/ca/server.key"
# A port nothing listens on: 1 (tcpmux), as test_audit_bytes and test_serve_metrics use.
# A port bound and closed again is free for the next bind(0) of any test running
# beside this one, whose server would then answer for dead.example.com.
DEAD_PORT=1
mkdir -p "$T/secrets"
printf 'sk-sdk-%s\n' "$$" > "$T/secrets/KEY"

cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com", "dead.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] } ],
  "egress": { "default": "allow", "deny": [ { "hosts": ["api.example.com"], "paths": ["/v1/denied"] } ] },
  "dns": { "remap": { "api.example.com": "127.0.0.1:$tls_PORT",
                      "dead.example.com": "127.0.0.1:$DEAD_PORT" } } }
EOF

out=$(jail --config "$T/config.json" --secrets-dir "$T/secrets" --upstream-ca "$T/ca/ca.pem" \
  --user nobody -- "$PY" -c '
import json, urllib.error, urllib.request
for url in ("https://api.example.com/v1/denied", "https://dead.example.com/v1/chat/completions"):
    req = urllib.request.Request(url, data=b"{}", headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req)
        print("no error for", url)
        continue
    except urllib.error.HTTPError as e:
        status, body = e.code, json.loads(e.read())
    # openai-node APIError.generate + makeMessage; openai-python takes code/type alike.
    err = body.get("error")
    if isinstance(err, dict) and err.get("message"):
        openai_msg = err["message"] if isinstance(err["message"], str) else json.dumps(err["message"])
    else:
        openai_msg = json.dumps(err) if err else None
    openai_code = err.get("code") if isinstance(err, dict) else None
    # anthropic-sdk APIError.makeMessage: the top-level message.
    anthropic_msg = body.get("message") or json.dumps(body)
    print(json.dumps({"status": status, "openai": "%d %s" % (status, openai_msg),
                      "code": openai_code, "anthropic": "%d %s" % (status, anthropic_msg)}))
')
echo "$out"
deny=$(echo "$out" | sed -n 1p)
dead=$(echo "$out" | sed -n 2p)
q() { "$PY" -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

assert_eq "$(q "$deny" status)" "403" "deny status"
assert_eq "$(q "$deny" openai)" "403 the sandbox's egress policy denies this destination" \
  "the OpenAI SDK's message for the proxy's 403"
assert_eq "$(q "$deny" code)" "egress_deny" "the OpenAI SDK's error code for the proxy's 403"
assert_eq "$(q "$deny" anthropic)" "403 the sandbox's egress policy denies this destination" \
  "the Anthropic SDK's message for the proxy's 403"
pass "an SDK's error for the proxy's 403 names the cause"

assert_eq "$(q "$dead" status)" "502" "unreachable status"
assert_eq "$(q "$dead" openai)" "502 the destination could not be reached" \
  "the OpenAI SDK's message for the proxy's 502"
assert_eq "$(q "$dead" code)" "upstream_unreachable" "the OpenAI SDK's error code for the proxy's 502"
assert_eq "$(q "$dead" anthropic)" "502 the destination could not be reached" \
  "the Anthropic SDK's message for the proxy's 502"
pass "an SDK's error for the proxy's 502 names the cause"
assert_eq "$(upq tls 'len(reqs)')" "0" "a denied request reached the upstream"
