#!/usr/bin/env bash
# A sandbox that asks for large answers and never reads them (invariant I8: memory is
# bounded; one sandbox cannot starve another). Each connection's write queue is
# bounded (--write-queue-bytes), but a sandbox may hold thousands of connections:
# 2 GiB at the defaults. All of a sandbox's queues together now stop at
# --sandbox-queue-bytes, after which its connections are read a TLS record at a time,
# and only while their own queue holds less than one: another sandbox is served
# meanwhile, and the stalled one's program gets every byte when it reads its
# connections one after another.
#
#   ap-a-PID (16 connections, unread) --nft--> authproxy serve --> fake upstream /big
#   ap-b-PID (curl)                   --nft-->        (--sandbox-queue-bytes 1 MiB)
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

N=16
BUDGET=1048576
start_upstream up
NSA=$(make_netns a)
NSB=$(make_netns b)
serve_start --sandbox-queue-bytes $BUDGET
queued() { ctl metrics | awk '$1 == "authproxy_write_queued_bytes" { print $2 }'; }

cat > "$T/cfg.json" <<EOF
{ "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
ctl attach box-a --netns "/var/run/netns/$NSA" --config "$T/cfg.json" >/dev/null
ctl attach box-b --netns "/var/run/netns/$NSB" --config "$T/cfg.json" >/dev/null

# box-a: N connections, each asking for 16 MiB with a small receive buffer, unread
# until the go-ahead file appears; then each reads its answer to the end.
ip netns exec "$NSA" "$PY" "$TOOLS/unread_downloads.py" $N 16777216 "$T/a-sent" "$T/a-go" \
  > "$T/hog.out" 2> "$T/hog.log" &
hog=$!
PIDS+=($hog)
wait_for "[ -e '$T/a-sent' ]" 30
# The queues fill until the budget stops every read: sample until the figure has held
# for 2 s (at most 30 s), keeping the largest seen.
last=-1 same=0 peak=0
for i in $(seq 150); do
  now=$(queued)
  [ "$now" -gt "$peak" ] && peak=$now
  if [ "$now" = "$last" ] && [ "$now" -gt 0 ]; then
    same=$((same + 1))
    [ $same -ge 10 ] && break
  else
    same=0
  fi
  last=$now
  sleep 0.2
done
now=$peak
echo "queued after the fill: at most $now bytes (budget $BUDGET, $N connections)"
# Past the budget each connection may still hold two TLS-record-sized reads (33 KiB),
# so that a connection being read keeps going; without the budget the
# per-connection limits alone would allow 16 x 256 KiB (4 MiB).
max=$((BUDGET + N * 2 * 16896))
[ "$now" -le "$max" ] || fail "box-a's queues hold $now bytes, over its budget ($max)"
[ "$now" -gt $((BUDGET / 2)) ] || fail "only $now bytes queued: the load did not reach the budget"
pass "a sandbox that reads nothing holds at most its budget in queues ($now bytes)"

out=$(ip netns exec "$NSB" curl -sS --max-time 10 -o /dev/null -w '%{http_code}' \
  http://api.example.com/from-b 2>&1) || true
assert_eq "$out" "200" "box-b's request while box-a's budget is spent"
pass "another sandbox is served meanwhile"

: > "$T/a-go"
wait "$hog" || fail "box-a's reader failed: $(cat "$T/hog.log")"
assert_eq "$(cat "$T/hog.out")" "$((N * 16777216))" "body bytes box-a read once it read"
pass "the stalled sandbox gets every byte once it reads"
