#!/usr/bin/env bash
# Secrets never reach a core file, and no other process of the same user reads them
# from memory (invariant I3): every authproxy process marks itself not dumpable.
#
#   authproxy config check - , run as nobody, blocked reading its config from a pipe.
#
# The kernel shows the flag: the /proc/PID files of a dumpable process belong to its
# user, those of one that is not belong to root. A process running as nobody makes
# the difference visible (a root process's files are root's either way).
. "$(dirname "$0")/lib.sh"

NOBODY=65534

# A writer that never writes: authproxy blocks in read(2) on its standard input.
mkfifo "$T/stdin"
sleep 60 > "$T/stdin" &
PIDS+=($!)
setpriv --reuid=$NOBODY --regid=$NOBODY --clear-groups \
  "$AUTHPROXY" config check - < "$T/stdin" > "$T/check.log" 2>&1 &
pid=$!
PIDS+=($pid)

# Past exec and past the start of main: the process sleeps, and the only place it can
# sleep is the read of its standard input.
wait_for "[ \"\$(cat /proc/$pid/comm 2>/dev/null)\" = authproxy ] &&
          [ \"\$(awk '{ print \$3 }' /proc/$pid/stat 2>/dev/null)\" = S ]"
assert_eq "$(stat -c %u /proc/$pid/status)" 0 \
  "owner of /proc/PID/status of authproxy running as nobody (root: not dumpable)"
assert_eq "$(stat -c %u /proc/$pid/mem)" 0 "owner of /proc/PID/mem"
pass "authproxy is not dumpable: no core file, no ptrace or /proc/PID/mem for its user"
