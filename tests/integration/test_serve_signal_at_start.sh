#!/usr/bin/env bash
# A signal that reaches the daemon while it starts (before its control socket opens:
# it waits for its audit log FIFO's reader, or restores its sandboxes, serving each as
# it is back) is handled as at any other time. A SIGHUP (`systemctl reload`, a log
# rotation) reopens the audit log and the daemon goes on; a SIGTERM (a stop, a
# rollback right after an upgrade) stops it as README says: it logs that it stops,
# drains, exits 0, and every sandbox keeps its state and rules (no network). Both
# signals used to kill the daemon by their default action (status 129 and 143, no log
# line), the connections it served during the restore cut unannounced: its handlers
# were installed only once the restore was done. The FIFO holds the daemon at a
# known point of its start, before the restore (a test with no timing).
#
#   ap-sa-PID                          host
#   curl http://api.example.com  -->   authproxy serve --log FIFO --> fake upstream
. "$(dirname "$0")/lib.sh"

start_upstream up
STATE=$T/state
SOCK=$T/control.sock
FIFO=$T/audit.fifo
mkfifo "$FIFO"
# If the daemon is stuck opening the FIFO, a reader lets it go so that cleanup ends.
CLEANUP_HOOKS+=("exec 9<>'$FIFO'")
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Tag", "type": "plaintext", "value": "tag-$$" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
ctl() { timeout 10 "$AUTHPROXY" ctl --control "$SOCK" "$@"; }
# serve LOG: the daemon, logging its audit records to LOG.
serve() {
  "$AUTHPROXY" serve --state-dir "$STATE" --control "$SOCK" --log "$1" --drain-timeout 1 \
    >> "$T/serve.log" 2>&1 &
  SERVE_PID=$!
  PIDS+=($SERVE_PID)
}
# at_fifo_wait: waits until the daemon (started on the FIFO) waits for its reader.
at_fifo_wait() {
  wait_for "[ \$(grep -c 'a FIFO that no reader has open' '$T/serve.log') -ge $1 ]"
}
# reader N: reads the FIFO into $T/fifoN.jsonl until the daemon closes it.
reader() {
  cat "$FIFO" > "$T/fifo$1.jsonl" &
  READER=$!
  PIDS+=($READER)
}
get() {
  ip netns exec "$ns" curl -sS -m 5 -o /dev/null -w '%{http_code}' \
    "http://api.example.com$1" 2>> "$T/curl.log" || true
}

serve "$T/audit.jsonl"
wait_for "[ -S '$SOCK' ] && ctl health >/dev/null 2>&1"
ns=$(make_netns sa)
ctl attach box --netns "/var/run/netns/$ns" --config "$T/config.json" > /dev/null
assert_eq "$(get /before)" "200" "before the restart"
kill -TERM "$SERVE_PID"
wait "$SERVE_PID" || fail "the first daemon's stop: exit $?"

# A SIGHUP while it starts: the daemon goes on, restores the sandbox and serves.
serve "$FIFO"
at_fifo_wait 1
kill -HUP "$SERVE_PID"
reader 1
wait_for "! kill -0 $SERVE_PID 2>/dev/null || ctl health >/dev/null 2>&1"
rc=0
kill -0 "$SERVE_PID" 2>/dev/null || { wait "$SERVE_PID" || rc=$?; }
assert_eq "$rc" "0" "the daemon's status after a SIGHUP while it started"
assert_contains "$(ctl health)" '"sandboxes":	1' "the sandbox restored"
assert_eq "$(get /after-hup)" "200" "after a SIGHUP while the daemon started"
# Nothing was open to reopen: the log says so, not "reopened".
grep -q "SIGHUP: the audit log $FIFO is not open yet" "$T/serve.log" ||
  fail "the SIGHUP while waiting for the reader is not logged as such"
! grep -q 'audit log reopened' "$T/serve.log" || fail "a reopen logged while nothing was open"
pass "a SIGHUP while the daemon starts does not kill it"

kill -TERM "$SERVE_PID"
wait "$SERVE_PID" || fail "the second daemon's stop: exit $?"

# A SIGTERM while it starts: the daemon stops as at any time, and the sandbox keeps
# its state (the next start restores it) and its rules (no network meanwhile).
serve "$FIFO"
at_fifo_wait 2
kill -TERM "$SERVE_PID"
reader 2
rc=0
wait "$SERVE_PID" || rc=$?
assert_eq "$rc" "0" "the daemon's status after a SIGTERM while it started"
grep -q 'serve: stopping' "$T/serve.log" || fail "the stop is not logged"
[ -S "$SOCK" ] && ctl health > /dev/null 2>&1 && fail "a daemon stopped at its start serves"
[ -e "$STATE/sandboxes/box.sealed" ] || fail "the sandbox's state is gone"
ip netns exec "$ns" nft list table inet authproxy > /dev/null ||
  fail "the sandbox's rules are gone"
assert_eq "$(get /while-down)" "000" "no network while the daemon is down"
pass "a SIGTERM while the daemon starts stops it, and the sandbox keeps state and rules"

# A SIGTERM or SIGINT while it waits for the FIFO's reader, and none ever comes: the
# daemon stops there as well. Its open(2) of the FIFO was restarted after the loop's
# signal handler, and the daemon ignored both until a reader came (a `systemctl stop`
# waited for its timeout and a SIGKILL, a Ctrl-C did nothing).
# gone PID: the process has exited (a zombie until waited for counts).
gone() { [ ! -e "/proc/$1/stat" ] || [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" = Z ]; }
# The last reader, if the daemon stopped before it came, still waits in its open(2),
# and the daemon would find it.
kill "$READER" 2>/dev/null || true
wait "$READER" 2>/dev/null || true
n=2
for sig in TERM INT; do
  serve "$FIFO"
  n=$((n + 1))
  at_fifo_wait $n
  kill -$sig "$SERVE_PID"
  wait_for "gone $SERVE_PID"
  rc=0
  wait "$SERVE_PID" || rc=$?
  assert_eq "$rc" "0" "the daemon's status after a SIG$sig while it waited for the FIFO"
  [ -e "$STATE/sandboxes/box.sealed" ] || fail "the sandbox's state is gone after SIG$sig"
done
assert_contains "$(tail -n 2 "$T/serve.log")" "1 sandbox(es) not re-attached yet keep" \
  "the stop while the daemon waited for the FIFO"
pass "a SIGTERM or SIGINT while the daemon waits for its FIFO's reader stops it"

serve "$T/audit.jsonl"
wait_for "[ -S '$SOCK' ] && ctl health >/dev/null 2>&1"
assert_eq "$(get /again)" "200" "after the next start"
assert_eq "$(upq up "[hdr(r, 'X-Tag') for r in reqs]")" \
  "[[\"tag-$$\"], [\"tag-$$\"], [\"tag-$$\"]]" "the requests the upstream got"
pass "the next start restores the sandbox"
