#!/usr/bin/env bash
# A daemon started before its audit log FIFO's reader says it waits for one. SIGHUP
# reopens the audit log, and a log that is a FIFO whose reader went away (a log
# shipper restarting) does not stop the daemon: the reopen fails and says why, the
# daemon goes on serving, and a SIGHUP once a reader is back reopens it, for blocking
# writes as before. A regression test: the reopen's open(2) waited for a reader on
# the event loop, so every sandbox's traffic, the control API and SIGTERM waited too.
#
#   authproxy serve --log $T/audit.fifo  -->  reader, killed, then a new one
. "$(dirname "$0")/lib.sh"

STATE=$T/state
SOCK=$T/control.sock
FIFO=$T/audit.fifo
mkfifo "$FIFO"
# If the daemon is stuck opening the FIFO, a reader lets it go so that cleanup ends.
CLEANUP_HOOKS+=("exec 9<>'$FIFO'")

# reader N: holds the FIFO open for reading (without blocking) once $T/readyN exists.
reader() {
  "$PY" -c 'import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
open(sys.argv[2], "w").close()
time.sleep(60)' "$FIFO" "$T/ready$1" &
  PIDS+=($!)
  wait_for "[ -e '$T/ready$1' ]"
}

# Started before any reader, the daemon waits for one (its open(2) does), and says so:
# it used to wait with nothing in its log, as if hung.
"$AUTHPROXY" serve --state-dir "$STATE" --control "$SOCK" --log "$FIFO" \
  >> "$T/serve.log" 2>&1 &
SERVE_PID=$!
PIDS+=($SERVE_PID)
ctl() { timeout 10 "$AUTHPROXY" ctl --control "$SOCK" "$@"; }
health() { ctl health | tr -d ' \t\n'; }
wait_for "grep -q 'audit log $FIFO: a FIFO that no reader has open; waiting for one' '$T/serve.log'"
reader 1
reader=${PIDS[-1]}
wait_for "[ -S '$SOCK' ] && ctl health >/dev/null 2>&1"
pass "started before the FIFO's reader, the daemon says it waits for one, then serves"

kill "$reader"
wait "$reader" 2>/dev/null || true
kill -HUP "$SERVE_PID"
wait_for "grep -q 'cannot reopen the audit log' '$T/serve.log'"
assert_contains "$(grep 'cannot reopen' "$T/serve.log")" "a FIFO that no reader has open" \
  "the reason the reopen failed"
assert_contains "$(health)" '"status":"ok"' "health while the FIFO has no reader"
pass "SIGHUP with the FIFO's reader gone: the reopen fails and the daemon serves on"

reader 2
kill -HUP "$SERVE_PID"
wait_for "[ \$(grep -c 'audit log reopened' '$T/serve.log') -ge 1 ]"
# The log's descriptor writes blocking (O_NONBLOCK, octal 04000, is off): a full
# pipe makes a write wait, not fail and drop records.
fd=$(find "/proc/$SERVE_PID/fd" -lname "$FIFO" -printf '%f\n' | head -n 1)
[ -n "$fd" ] || fail "the daemon has no descriptor for $FIFO"
flags=$(awk '/^flags:/ { print $2 }' "/proc/$SERVE_PID/fdinfo/$fd")
assert_eq "$(( 0$flags & 04000 ))" "0" "O_NONBLOCK on the reopened log ($flags)"
assert_contains "$(health)" '"status":"ok"' "health after the reopen"
pass "a SIGHUP once a reader is back reopens the FIFO for blocking writes"
