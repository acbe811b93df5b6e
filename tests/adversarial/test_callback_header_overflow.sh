#!/usr/bin/env bash
# A callback answer whose headers do not all fit beside the rules' fails the request
# closed (invariant I4). A request carries at most 64 injected headers; the rules' come
# first and the callback's are added after them. The callback may send 64 itself, so
# with one rule header the callback's last one has no room: it used to be dropped
# silently and the request forwarded without it, and since the proxy removes only the
# sandbox's copies of headers it injects, the sandbox's own Authorization then reached
# the upstream in place of the callback's credential.
#
#   jail netns (anonymous)                   host netns
#   +-------------------------------+        +-----------------------------------------+
#   | curl -H 'Authorization: own'  | -nft-> | authproxy: rule "api" injects X-Team;   |
#   |   http://api.corp.example/x   |        |   callback (many_headers) answers 63    |
#   +-------------------------------+        |   X-Cb-* and then Authorization         |
#                                            |   fake upstream 127.0.0.1:$up_PORT      |
#                                            +-----------------------------------------+
. "$(dirname "$0")/../integration/lib.sh"

start_upstream up
start_callback --mode many_headers
cb_PORT=$CB

cat > "$T/config.json" <<EOF
{
  "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.corp.example"],
               "headers": [ { "name": "X-Team", "type": "plaintext", "value": "agents" } ] } ],
  "callback": { "url": "http://127.0.0.1:$cb_PORT/creds", "match_hosts": ["*.corp.example"], "allow_plain_http": true,
                "ttl_seconds": 0, "timeout_ms": 3000 },
  "dns": { "remap": { "api.corp.example": "127.0.0.1:$up_PORT",
                      "fit.corp.example": "127.0.0.1:$up_PORT" } }
}
EOF

out=$(timeout 60 "$AUTHPROXY" jail --config "$T/config.json" --user nobody -- sh -c "
  curl -sS -o /dev/null -D - -H 'Authorization: Bearer sandbox-own' http://api.corp.example/x
  curl -sS -o /dev/null -w 'fit=%{http_code}\n' -H 'Authorization: Bearer sandbox-own' \
    http://fit.corp.example/y" 2> "$T/jail.log" || true)

# The callback was asked for both hosts.
calls=$("$PY" -c 'import json, sys
print(sum(1 for l in open(sys.argv[1]) if json.loads(l).get("event") == "call"))' "$T/cb.jsonl")
assert_eq "$calls" "2" "callback calls"

# api.corp.example: 1 rule header + 64 callback headers do not fit: 502, nothing sent.
assert_contains "$out" "HTTP/1.1 502" "overflowing callback answer"
assert_contains "$out" "callback_failed" "the reason names the callback"
assert_eq "$(upq up '[r["target"] for r in reqs if r["target"] == "/x"]')" "[]" \
  "a request with part of the callback's headers reached the upstream"
assert_eq "$(upq up 'sum(1 for r in reqs for v in hdr(r, "Authorization") if "sandbox-own" in v)')" \
  "0" "the sandbox's own Authorization reached the upstream"

# fit.corp.example: no rule header, so the callback's 64 fit and all are sent.
assert_contains "$out" "fit=200" "an answer that fits is used"
assert_eq "$(upq up 'hdr(reqs[-1], "Authorization")')" '["Bearer cb-2"]' \
  "the callback's Authorization, last of 64"
assert_eq "$(upq up 'len([k for k, v in reqs[-1]["headers"] if k.startswith("X-Cb-")])')" "63" \
  "every other callback header"
pass "callback headers that do not fit beside the rules' fail the request closed"
