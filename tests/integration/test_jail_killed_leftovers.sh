#!/usr/bin/env bash
# A CI runner that times a job out sends SIGTERM to `authproxy jail`, then SIGKILL
# once its grace period is over; a runner cancelling a job kills its whole process
# group. A jail killed that way must still leave nothing of CMD's running: a
# background process CMD started (a test server, `sleep 1000 &`) and the one CMD
# waits on hold the step's output pipe, and the runner waits on that pipe for ever.
#
#   this test (reads the step's output through a pipe)
#     `-- authproxy jail          killed with SIGKILL
#           `-- sh (CMD)          killed with it (PR_SET_PDEATHSIG)
#                 |-- sleep 1000 &    background: must end too
#                 `-- sleep 1000      what CMD waits on: must end too
#
# It looks only at the processes its own jails started.
. "$(dirname "$0")/lib.sh"

export TMPDIR=$T/jailtmp
mkdir -p "$TMPDIR"

# alive FILE: the processes named in FILE that are still CMD's sleeps.
alive() {
  local pid
  for pid in $(cat "$1"); do
    if grep -qs '^sleep$' "/proc/$pid/comm"; then echo "$pid"; fi
  done
}
# gone FILE: 0 once none of FILE's sleeps is left, waiting up to 5 s; kills (and
# prints) those still left then.
gone() {
  local i left
  for ((i = 0; i < 100; i++)); do
    [ -z "$(alive "$1")" ] && return 0
    sleep 0.05
  done
  left=$(alive "$1")
  for pid in $left; do kill -KILL "$pid" 2>/dev/null || true; done
  echo $left
}
: > "$T/pids.txt"
: > "$T/grp.txt"
CLEANUP_HOOKS+=('gone "$T/pids.txt" > /dev/null; gone "$T/grp.txt" > /dev/null')

# SIGKILL to the jail alone, CMD's output read through a pipe as a runner reads a
# step's: the reader sees its end once nothing holds the pipe open.
( "$AUTHPROXY" jail --user nobody -- sh -c \
    'sleep 1000 & echo $!; sleep 1000 & echo $!; wait' | cat > "$T/pids.txt" || true
  echo eof > "$T/eof" ) &
reader=$!
PIDS+=($reader)
wait_for "[ \$(grep -c . '$T/pids.txt') -eq 2 ]" 10
kill -KILL "$(pgrep -P "$reader" -x authproxy)"
assert_eq "$(gone "$T/pids.txt")" "" "CMD's processes left running 5 s after the jail's SIGKILL (now killed)"
wait_for "[ -s '$T/eof' ]" 5
assert_eq "$(ls -A "$TMPDIR")" "" "the jail's temporary directory"
pass "a jail killed with SIGKILL leaves none of CMD's processes, and its output ends"

# SIGKILL to the jail's whole process group (a runner cancelling the job); CMD left
# a daemon in a session of its own, and is itself the sleep it exec'd.
setsid "$AUTHPROXY" jail --user nobody -- sh -c \
  'setsid sleep 1000 > /dev/null 2>&1 < /dev/null & echo $!; exec sleep 1000' \
  > "$T/grp.txt" &
jpid=$!
PIDS+=($jpid)
wait_for "[ -s '$T/grp.txt' ] && pgrep -P $jpid -x sleep > /dev/null" 10
pgrep -P "$jpid" -x sleep >> "$T/grp.txt"
kill -KILL -- "-$jpid"
assert_eq "$(gone "$T/grp.txt")" "" "CMD's processes left running 5 s after its group's SIGKILL (now killed)"
pass "a jail's process group killed with SIGKILL leaves none of CMD's processes"

# A jail inside a jail, the outer killed with SIGKILL: the outer's warden kills
# every process in the outer namespace, the inner jail among them (here not the
# outer's CMD, so not ended by PR_SET_PDEATHSIG first). The inner CMD's processes
# are in the inner namespace; the inner jail's warden must still end them. It used
# to be in the outer namespace, killed there with the inner jail before it could.
: > "$T/nested.txt"
CLEANUP_HOOKS+=('gone "$T/nested.txt" > /dev/null')
setsid "$AUTHPROXY" jail --user root -- sh -c "\"$AUTHPROXY\" jail --user nobody -- \
  sh -c 'sleep 1000 & echo \$!; sleep 1000 & echo \$!; wait'; true" \
  > "$T/nested.txt" 2> "$T/nested.err" &
jpid=$!
PIDS+=($jpid)
wait_for "[ \$(grep -c . '$T/nested.txt') -eq 2 ]" 10
kill -KILL "$jpid"
assert_eq "$(gone "$T/nested.txt")" "" "the inner CMD's processes left running 5 s after the outer jail's SIGKILL (now killed)"
assert_eq "$(ls -A "$TMPDIR")" "" "the jails' temporary directories"
pass "a jail inside a jail killed with SIGKILL leaves none of the inner CMD's processes"

# The jail removes its directory in TMPDIR once CMD has started; the name is then
# free, and CMD reads it in its mountinfo. Anyone who can write TMPDIR (CMD's user,
# in a sticky /tmp with fs.protected_symlinks=0) may put a symlink there under that
# name; the jail killed with SIGKILL then, its warden must not remove files through
# it (it used to unlink resolv.conf and nsswitch.conf wherever the symlink pointed:
# /etc, as root). Here the symlink points at a directory of the test's.
mkdir -p "$T/victim"
echo keep > "$T/victim/resolv.conf"
echo keep > "$T/victim/nsswitch.conf"
: > "$T/name.txt"
setsid "$AUTHPROXY" jail --user nobody -- sh -c \
  'grep -o "authproxy-jail\.[A-Za-z0-9]*" /proc/self/mountinfo | head -n 1; exec sleep 1000' \
  > "$T/name.txt" &
jpid=$!
PIDS+=($jpid)
wait_for "[ -s '$T/name.txt' ] && [ -z \"\$(ls -A '$TMPDIR')\" ]" 10
warden=$(pgrep -P "$jpid" -x authproxy)
ln -s "$T/victim" "$TMPDIR/$(cat "$T/name.txt")"
kill -KILL "$jpid"
wait_for "[ ! -e /proc/$warden ] || grep -qs '^State:.*Z' /proc/$warden/status" 5
rm -f "$TMPDIR/$(cat "$T/name.txt")"
assert_eq "$(ls "$T/victim" | tr '\n' ' ')" "nsswitch.conf resolv.conf " "files where the jail's former directory name points, after its SIGKILL"
pass "a killed jail's warden removes nothing through a name the jail had already freed"
