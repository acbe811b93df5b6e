#!/usr/bin/env bash
# A daemon out of file descriptors, the spare one libuv keeps for that case gone too
# (its soft RLIMIT_NOFILE lowered under it with prlimit, below every descriptor it
# holds), while a sandbox connects: libuv calls the listener's callback again at
# once, without returning to the loop, for as long as the connection waits. The
# callback logged a line each time: 66 MB of "sandbox box: accept: too many open
# files" in three seconds, enough to fill the disk the audit log and the journal
# are on. Now a line at most every 5 s, with the count and the fix; once the limit
# is raised again the daemon serves on. (The loop is held while it lasts: see
# proxy_log_accept_failed.)
#
#   ap-sfe-PID (sandbox) --curl--> authproxy serve (soft limit 5)
. "$(dirname "$0")/lib.sh"
. "$SRC/tests/adversarial/adv_lib.sh"
require_cmd prlimit

start_upstream up
serve_start
ns=$(make_netns sfe)
cat > "$T/cfg.json" <<EOF
{ "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
ctl attach box --netns "/var/run/netns/$ns" --config "$T/cfg.json" > /dev/null
code() { ip netns exec "$ns" curl -sS -m "$1" -o /dev/null -w '%{http_code}' http://api.example.com/ 2>/dev/null || true; }
assert_eq "$(code 5)" "200" "a request before the limit is lowered"
lines() { grep -c "sandbox box: accept:" "$T/serve.log" || true; }

prlimit --pid "$serve_pid" --nofile=5:4096
# If the test fails midway, the daemon must be able to stop (SIGTERM needs the loop).
CLEANUP_HOOKS+=("prlimit --pid $serve_pid --nofile=4096:4096 2>/dev/null")
code 1 > /dev/null &
client=$!
wait_for "[ \$(lines) -ge 1 ]"
# Let the callback be called for a second (libuv calls it in a loop that does not
# return: nothing to poll for), then count the lines it logged.
sleep 1
n=$(lines)
prlimit --pid "$serve_pid" --nofile=4096:4096
wait "$client" || true
[ "$n" -le 2 ] || fail "$n lines about the failed accept in a second"
grep "sandbox box: accept:" "$T/serve.log"
assert_contains "$(grep "sandbox box: accept:" "$T/serve.log" | head -n 1)" \
  "Too many open files (1 failed accepts so far; logged at most every 5 s): the daemon is out of file descriptors; raise its limit (LimitNOFILE="
wait_for "ctl health > /dev/null 2>&1"
assert_eq "$(code 5)" "200" "a request once the limit is raised again"
pass "out of file descriptors: $n line(s) about it in a second, naming the fix; the daemon serves on"
