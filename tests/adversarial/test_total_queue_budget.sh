#!/usr/bin/env bash
# Sandboxes that ask for large answers and never read them, on one daemon (invariant
# I8: memory is bounded; one sandbox cannot starve another). Each sandbox's queues
# stop at --sandbox-queue-bytes (64 MiB), but nothing bounded their sum: 100 such
# sandboxes made the daemon hold 6.4 GiB, and the kernel's OOM killer took the
# network of every sandbox on the host. All queues together now stop at
# --queue-bytes, after which every sandbox's connections are read a TLS record at a
# time, and only while their own queue holds less than one: a sandbox that reads
# keeps going, and once half of the budget drains, every connection stopped for it
# is read again.
#
#   ap-a-PID (24 connections, unread, then killed)  --nft--> authproxy serve
#   ap-b-PID (4 connections, unread, then read)     --nft-->  (--queue-bytes 3 MiB)
#   ap-c-PID (curl, reads)                          --nft-->    --> fake upstream /big
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

NA=24 NB=4
BUDGET=3145728
RECORD=16896
start_upstream up
NSA=$(make_netns a)
NSB=$(make_netns b)
NSC=$(make_netns c)
serve_start --queue-bytes $BUDGET
metric() { ctl metrics | awk -v m="$1" '$1 == m { print $2 }'; }
queued() { metric authproxy_write_queued_bytes; }
# settle: samples the queued bytes until the figure has held for 2 s (at most 30 s);
# prints the largest seen and the last.
settle() {
  local last=-1 same=0 peak=0 now i
  for i in $(seq 150); do
    now=$(queued)
    [ "$now" -gt "$peak" ] && peak=$now
    if [ "$now" = "$last" ]; then
      same=$((same + 1))
      [ $same -ge 10 ] && break
    else
      same=0
    fi
    last=$now
    sleep 0.2
  done
  echo "$peak $now"
}

cat > "$T/cfg.json" <<EOF
{ "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
for box in a b c; do
  ctl attach box-$box --netns "/var/run/netns/ap-$box-$$" --config "$T/cfg.json" >/dev/null
done
assert_eq "$(metric authproxy_write_queue_max_bytes)" $BUDGET "the budget in /metrics"


# box-a alone would queue 24 x 256 KiB (6 MiB, a tenth of its own budget): the
# daemon's budget stops it. Then box-b's connections start with the budget spent.
ip netns exec "$NSA" "$PY" "$TOOLS/unread_downloads.py" $NA 16777216 "$T/a-sent" "$T/a-go" \
  > "$T/hog-a.out" 2> "$T/hog-a.log" &
hog_a=$!
PIDS+=($hog_a)
wait_for "[ -e '$T/a-sent' ]" 30
read -r peak_a _ < <(settle)
ip netns exec "$NSB" "$PY" "$TOOLS/unread_downloads.py" $NB 8388608 "$T/b-sent" "$T/b-go" \
  > "$T/hog-b.out" 2> "$T/hog-b.log" &
hog_b=$!
PIDS+=($hog_b)
wait_for "[ -e '$T/b-sent' ]" 30
read -r peak _ < <(settle)
[ "$peak_a" -gt "$peak" ] && peak=$peak_a
echo "queued: at most $peak bytes (budget $BUDGET, $((NA + NB)) unread connections)"
# Past the budget each connection may still hold two TLS-record-sized reads, and the
# read that spent it one more; without the budget the per-connection limits alone
# allow 28 x 256 KiB (7 MiB) here.
max=$((BUDGET + (NA + NB + 1) * 2 * RECORD))
[ "$peak" -le "$max" ] || fail "all queues hold $peak bytes, over the daemon's budget ($max)"
[ "$peak" -gt $((BUDGET / 2)) ] || fail "only $peak bytes queued: the load did not reach the budget"
[ "$(metric authproxy_write_queue_full_total)" -ge 1 ] ||
  fail "authproxy_write_queue_full_total: $(metric authproxy_write_queue_full_total)"
grep -q "the daemon's budget (--queue-bytes $BUDGET)" "$T/serve.log" ||
  fail "no log line for the spent budget"
pass "sandboxes that read nothing hold at most the daemon's budget in queues ($peak bytes)"

out=$(ip netns exec "$NSC" curl -sS --max-time 60 -o /dev/null \
  -w '%{http_code} %{size_download}' "http://api.example.com/big?bytes=8388608" 2>&1) || true
assert_eq "$out" "200 8388608" "box-c's download while the budget is spent"
pass "a sandbox that reads gets its whole download meanwhile"

# box-a goes away: less than half of the budget is left queued (box-b's connections,
# a record or two each), and box-b's connections, stopped for the budget while box-b
# still reads nothing, are read again up to their own limit (256 KiB each).
kill "$hog_a"
wait "$hog_a" 2>/dev/null || true
read -r _ now < <(settle)
echo "queued once box-a is gone: $now bytes"
[ "$now" -gt $((NB * 128 * 1024)) ] ||
  fail "box-b's unread connections hold $now bytes: not read again once the budget drained"
pass "connections stopped for the budget are read again once it drains"

: > "$T/b-go"
wait "$hog_b" || fail "box-b's reader failed: $(cat "$T/hog-b.log")"
assert_eq "$(cat "$T/hog-b.out")" "$((NB * 8388608))" "body bytes box-b read once it read"
wait_for "[ \"\$(ctl metrics | awk '\$1 == \"authproxy_write_queued_bytes\" { print \$2 }')\" = 0 ]" 10
pass "box-b gets every byte once it reads; nothing stays queued"
