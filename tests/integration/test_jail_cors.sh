#!/usr/bin/env bash
# A browser page's cross-origin fetch() through `authproxy jail`, as curl sends it:
# the CORS preflight of a PUT that an egress allow entry's methods let through. The
# proxy's own answers stay unreadable to a page of another origin: they carry no
# CORS headers (they would tell any page which hosts the policy refuses, which ports
# are closed, and which name a synthetic address stands for).
#
#   jail netns                                   host netns
#   +------------------------------------+       +-----------------------------------+
#   | curl: OPTIONS + Origin +           | -nft->| authproxy: egress default deny,    |
#   |   Access-Control-Request-Method    |       |   allow api.example.com GET, PUT   |
#   |   (what Chromium sends for a PUT)  |       |   -> fake upstream (api.example.com)|
#   +------------------------------------+       +-----------------------------------+
. "$(dirname "$0")/lib.sh"

make_ca "$T/ca" api.example.com
start_upstream up "$T/ca/server.pem" "$T/ca/server.key"
cat > "$T/config.json" <<EOF
{ "egress": { "default": "deny", "allow": [
    { "hosts": ["api.example.com"], "methods": ["GET", "PUT", "PATCH"] } ],
    "deny": [ { "hosts": ["api.example.com"], "paths": ["/admin/*"] },
              { "hosts": ["127.0.0.1/32"], "methods": ["PATCH"] } ] },
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
run() { jail --config "$T/config.json" --upstream-ca "$T/ca/ca.pem" --user nobody -- "$@"; }
pre=(-H "Origin: https://www.example.com" -H "Access-Control-Request-Method: PUT")

# The preflight of an allowed PUT reaches the upstream (before: 403 egress_not_allowed,
# which Chromium reports as "Response to preflight request doesn't pass access control
# check", and the PUT is never sent).
out=$(run curl -sS -o /dev/null -w '%{http_code}' -X OPTIONS "${pre[@]}" https://api.example.com/v1/items)
assert_eq "$out" "200" "preflight of an allowed PUT"
assert_eq "$(upq up 'reqs[-1]["method"] + " " + reqs[-1]["target"]')" "OPTIONS /v1/items" \
  "the upstream answers the preflight"
pass "a CORS preflight passes where the method it asks for is allowed"

# Not for a method the allow entry leaves out, nor past an explicit deny, nor an
# OPTIONS that is no preflight.
out=$(run curl -sS -o /dev/null -w '%{http_code}' -X OPTIONS -H "Origin: https://www.example.com" \
  -H "Access-Control-Request-Method: DELETE" https://api.example.com/v1/items)
assert_eq "$out" "403" "preflight of a DELETE the policy does not allow"
out=$(run curl -sS -o /dev/null -w '%{http_code}' -X OPTIONS "${pre[@]}" https://api.example.com/admin/x)
assert_eq "$out" "403" "preflight past an explicit deny"
# A deny entry on the address the name is sent to (dns.remap into 127.0.0.1) holds
# the preflight too, as it holds the PATCH itself.
out=$(run curl -sS -o /dev/null -w '%{http_code}' -X PATCH https://api.example.com/v1/items)
assert_eq "$out" "403" "a PATCH to the denied address"
out=$(run curl -sS -o /dev/null -w '%{http_code}' -X OPTIONS -H "Origin: https://www.example.com" \
  -H "Access-Control-Request-Method: PATCH" https://api.example.com/v1/items)
assert_eq "$out" "403" "preflight of a PATCH to the denied address"
out=$(run curl -sS -o /dev/null -w '%{http_code}' -X OPTIONS \
  -H "Access-Control-Request-Method: PUT" https://api.example.com/v1/items)
assert_eq "$out" "403" "OPTIONS without Origin"
assert_eq "$(upq up 'len(reqs)')" "1" "nothing else reached the upstream"
pass "other preflights and OPTIONS are decided as OPTIONS"

# The proxy's own answer to a page of another origin: no CORS headers.
out=$(run curl -sS -D - -o /dev/null -X DELETE -H "Origin: https://evil.example" \
  https://api.example.com/v1/items)
assert_contains "$out" "403 Forbidden (authproxy: egress_not_allowed)"
case "$out" in
*[Aa]ccess-[Cc]ontrol-*) fail "the proxy's 403 carries CORS headers: $out" ;;
esac
pass "the proxy's own answers are not readable cross-origin"
