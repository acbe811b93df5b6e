#!/usr/bin/env bash
# A credential callback that answered within its timeout_ms, its answer waiting behind
# a late event loop, is not a callback_timeout. libuv runs expired timers before it
# polls, so the call's timer took the unread answer for a callback that never
# answered: 503 callback_timeout, "no answer within 2000 ms (waiting for the
# answer)", blaming a callback that had answered. Made deterministic here: the proxy
# is stopped (SIGSTOP) while the callback answers, and resumed past timeout_ms.
#
#   jail netns                              host netns
#   curl http://api.corp.example  -nft->    authproxy jail (stopped while the callback
#                                             answers)
#                                             POST -> fake callback (gate: answers once
#                                                     the test opens the gate)
#                                             GET + Authorization -> fake upstream
. "$(dirname "$0")/lib.sh"

start_upstream up
mkdir -p "$T/gates"
start_callback --mode gate --gate "$T/gates"
cat > "$T/config.json" <<EOF
{ "callback": { "url": "http://127.0.0.1:$CB/creds", "match_hosts": ["*.corp.example"],
                "allow_plain_http": true, "timeout_ms": 2000 },
  "dns": { "remap": { "api.corp.example": "127.0.0.1:$up_PORT" } } }
EOF
# answer_unread: whether the proxy's socket to the callback holds the answer, unread
# (the callback may have closed its end already).
answer_unread() {
  ss -Htn "( dport = :$CB )" | awk '$2 > 0 { x = 1 } END { exit !x }'
}

# try N: the scenario, in $T/N; 1 if the stop came too late (stop_in_time). A call of
# a try that came too late waits at the gate until the test opens it.
try() {
  local d=$T/$1
  mkdir "$d"
  jail_curl "$d" "$T/config.json" http://api.corp.example/late
  # The callback has the request: stop the proxy before its 2 s run out, let the
  # callback answer, and resume the proxy past them.
  wait_for "[ \"\$(grep -c '\"event\": \"call\"' '$T/cb.jsonl')\" -ge $1 ]" 20
  if ! stop_in_time "$jail_pid" "$CB"; then
    wait "$jail_pid" || true
    return 1
  fi
  touch "$T/gates/api.corp.example"
  wait_for answer_unread
  sleep 2.5
  kill -CONT "$jail_pid"
  wait "$jail_pid" || true
  out=$(cat "$d/out")
  calls=$1
}
late_tries try
assert_not_contains "$out" "callback_timeout" "the answer blames the callback (got: $out)"
assert_contains "$out" "code=200" "the answer (got: $out)"
assert_eq "$(upq up 'hdr(reqs[0], "Authorization")')" "$(jlist "Bearer cb-$calls")" \
  "the callback's credential, injected"
assert_eq "$(upq up 'len(reqs)')" "1" "requests that reached the upstream"
pass "a callback's answer that came in time is read after a late loop, not timed out"
