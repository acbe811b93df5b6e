#!/usr/bin/env bash
# A request waiting for the credential callback longer than --idle-timeout gets an
# answer naming the callback, not a reset. The idle timer armed for the wait used to
# close the connection as any idle one (audit reason idle_timeout): curl saw
# "Connection reset by peer" where README promises an HTTP answer and every callback
# failure is a 502/503 naming it. The call itself goes on (its answer is cached), so
# the next request gets the credential.
#
#   jail netns                              host netns
#   curl http://api.corp.example  -nft->    authproxy jail --idle-timeout 1
#                                             POST -> fake callback (gate: answers only
#                                                     once the test opens the gate)
#                                             GET + Authorization -> fake upstream
. "$(dirname "$0")/lib.sh"

start_upstream up
mkdir -p "$T/gates"
chmod 777 "$T/gates" # CMD runs as nobody and opens the gate
start_callback --mode gate --gate "$T/gates"
cat > "$T/config.json" <<EOF
{ "callback": { "url": "http://127.0.0.1:$CB/creds", "match_hosts": ["*.corp.example"],
                "allow_plain_http": true, "timeout_ms": 20000 },
  "dns": { "remap": { "api.corp.example": "127.0.0.1:$up_PORT" } } }
EOF

# The first request waits on a callback that does not answer before the idle timeout
# (1 s); the test opens the gate once curl has its answer; the second request gets
# the credential the call brought.
out=$(jail --idle-timeout 1 --config "$T/config.json" --log "$T/audit.jsonl" --user nobody -- \
  sh -c "curl -sS -m 15 -w ' code=%{http_code}' http://api.corp.example/first 2>&1; echo
         touch '$T/gates/api.corp.example'
         curl -sS -m 15 -o /dev/null -w 'code=%{http_code}' http://api.corp.example/second 2>&1" \
  2> "$T/jail.log") || true
first=$(echo "$out" | sed '$d' | tr -d '\n')
assert_contains "$first" "code=503" "the request waiting for the callback (got: $first)"
assert_contains "$first" '"code":"callback_timeout"' "the cause named in the answer"
assert_eq "$(echo "$out" | tail -1)" "code=200" "the next request, once the callback answered"
assert_eq "$(upq up '[r["path"] for r in reqs]')" '["/second"]' "what reached the upstream"
assert_eq "$(upq up 'hdr(reqs[0], "Authorization")')" '["Bearer cb-1"]' "its credential"
assert_eq "$(grep -c '"event": "call"' "$T/cb.jsonl")" "1" "callback calls"
assert_contains "$(grep '"path":"/first"' "$T/audit.jsonl")" '"reason":"callback_timeout"' \
  "the first request's record"
pass "a request waiting for the callback past --idle-timeout is answered 503 callback_timeout"
