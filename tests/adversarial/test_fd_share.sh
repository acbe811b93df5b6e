#!/usr/bin/env bash
# One sandbox opens more connections than the daemon has file descriptors for
# (invariant I8: one sandbox cannot starve another). Each connection costs the daemon
# a descriptor or two, and --max-conns (4096 by default) is per sandbox: the flood
# used to take every descriptor the process may open, after which accept failed with
# EMFILE for every sandbox and for the control socket alike. A sandbox's connections
# now hold at most half of the descriptor limit; the rest stay for the others.
# Two flooding sandboxes at half each would still take them all: all sandboxes'
# connections together hold at most three quarters, the rest staying for the
# control socket (and callbacks, DNS over TCP, attaching); the sandboxes' own
# listening sockets count against the three quarters.
#
#   ap-a-PID (300 connections, held) --nft--> authproxy serve (RLIMIT_NOFILE 256)
#   ap-b-PID (curl)                  --nft-->          |          --> fake upstream
#   ap-c-PID (300 more, held)        --nft-->          |
#   ap-e1-PID .. ap-e8-PID (idle)     --nft-->          |
#   ctl list, ctl attach             --control.sock--> +
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

N=300
start_upstream up
NSA=$(make_netns a)
NSB=$(make_netns b)
NSC=$(make_netns c)
NSD=$(make_netns d)

# A small descriptor limit for the daemon, so that the flood reaches it.
serve_start --wrap prlimit --nofile=256:256 --  # prlimit execs the daemon

cat > "$T/cfg.json" <<EOF
{ "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
ctl attach box-a --netns "/var/run/netns/$NSA" --config "$T/cfg.json" >/dev/null
ctl attach box-b --netns "/var/run/netns/$NSB" --config "$T/cfg.json" >/dev/null
ctl attach box-c --netns "/var/run/netns/$NSC" --config "$T/cfg.json" >/dev/null

flood "$NSA" a conns $N
FLOOD_A=$FLOOD_PID

out=$(ip netns exec "$NSB" curl -sS --max-time 10 -o /dev/null -w '%{http_code}' \
  http://api.example.com/from-b 2>&1) || true
assert_eq "$out" "200" "box-b's request while box-a floods"
ctl list > "$T/list.json" 2>&1 || fail "the control socket while box-a floods: $(cat "$T/list.json")"
assert_contains "$(cat "$T/list.json")" '"box-b"' "ctl list while box-a floods"
fds=$(ls "/proc/$serve_pid/fd" | wc -l)
[ "$fds" -lt 256 ] || fail "the daemon holds $fds descriptors, all it may open"
pass "a sandbox flooding past the descriptor limit leaves the others theirs ($fds in use)"

# Eight more sandboxes, idle: their listeners and responder sockets (six each here)
# count against the connections' share too, or many sandboxes would eat into the
# daemon's quarter (the old daemon's share left 64 descriptors for everything else,
# and these take 48 of them).
for i in 1 2 3 4 5 6 7 8; do
  ns=$(make_netns "e$i")
  ctl attach "box-e$i" --netns "/var/run/netns/$ns" --config "$T/cfg.json" >/dev/null
done

# A second sandbox floods: together the two may not take the descriptors the daemon
# needs for itself. The control socket still answers and a new sandbox attaches.
flood "$NSC" c conns $N
ctl list > "$T/list.json" 2>&1 || fail "the control socket while two sandboxes flood: $(cat "$T/list.json")"
assert_contains "$(cat "$T/list.json")" '"box-c"' "ctl list while two sandboxes flood"
ctl attach box-d --netns "/var/run/netns/$NSD" --config "$T/cfg.json" > "$T/attach-d.log" 2>&1 ||
  fail "attaching a sandbox while two sandboxes flood: $(cat "$T/attach-d.log")"
ctl detach box-d > "$T/detach-d.log" 2>&1 ||
  fail "detaching a sandbox while two sandboxes flood: $(cat "$T/detach-d.log")"
assert_contains "$(cat "$T/serve.log")" "all sandboxes'" "the daemon-wide refusal is logged"
fds=$(ls "/proc/$serve_pid/fd" | wc -l)
[ "$fds" -lt 256 ] || fail "the daemon holds $fds descriptors, all it may open"
pass "two flooding sandboxes leave the daemon its control socket ($fds descriptors in use)"

# The floods end and box-b's connections are accepted again; a later flood is logged
# again (the daemon-wide refusals are logged at most every 5 s, with their count; a
# count of refusals used to stay silent until the 1000th of the daemon's life).
# (box-a's flood alone holds its half, and with eleven sandboxes' listeners that is
# past the three quarters: box-c's ending is not enough.)
runs() { grep -c "all sandboxes'" "$T/serve.log" || true; }
logged=$(runs)
kill "$FLOOD_A" "$FLOOD_PID"
wait_for "[ \"\$(ip netns exec '$NSB' curl -sS --max-time 5 -o /dev/null -w '%{http_code}' http://api.example.com/after 2>/dev/null)\" = 200 ]" 30
sleep 5
flood "$NSC" c2 conns $N
[ "$(runs)" -gt "$logged" ] || fail "the second flood's refusals were not logged ($logged line(s) before it, $(runs) after)"
pass "each flood's daemon-wide refusals are logged ($(runs) lines)"
