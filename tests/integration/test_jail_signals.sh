#!/usr/bin/env bash
# Signals a developer sends `authproxy jail -- CMD` from a terminal or with kill:
#
#   this test, as a terminal (pty master)
#     `-- authproxy jail   session leader, the terminal's foreground process group
#           `-- CMD        the same process group: Ctrl-C and Ctrl-\ reach it directly
#
# A signal the terminal sends to the whole group reached CMD already: the jail neither
# dies of it (Ctrl-\) nor counts it toward killing CMD, so a REPL that handles Ctrl-C
# survives any number of them. The same signals sent to the jail alone (kill, a
# supervisor) are passed on to CMD.
. "$(dirname "$0")/lib.sh"

export TMPDIR=$T/jailtmp
mkdir -p "$TMPDIR"

# CMD: counts SIGINT and SIGQUIT; before each it prints "ready N"; exits N once it
# has had the number given (99 if one does not come within 10 s).
cat > "$T/cmd.py" <<'PYEOF'
import signal, sys, time
n = 0
def seen(signum, frame):
    global n
    n += 1
signal.signal(signal.SIGINT, seen)
signal.signal(signal.SIGQUIT, seen)
while n < int(sys.argv[1]):
    k = n
    print("ready", k, flush=True)
    for _ in range(200):
        if n > k:
            break
        time.sleep(0.05)
    else:
        sys.exit(99)
sys.exit(n)
PYEOF

# on_tty KEYS ARGV...: runs ARGV on a new terminal; types the I-th character of KEYS
# once it has printed "ready I"; prints its exit status (or "hung").
on_tty() {
  "$PY" - "$@" <<'PYEOF'
import os, pty, select, sys, time
keys, argv = sys.argv[1], sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)
out, deadline, status = b"", time.time() + 20, None
def step():
    """Reads what the terminal shows for up to 0.1 s; notes the exit status."""
    global out, status
    if select.select([fd], [], [], 0.1)[0]:
        try:
            out += os.read(fd, 4096)
        except OSError:  # EIO: no process has the terminal open any more
            time.sleep(0.1)
    if status is None:
        p, st = os.waitpid(pid, os.WNOHANG)
        if p:
            status = os.waitstatus_to_exitcode(st)
for i, k in enumerate(keys):
    while ("ready %d" % i).encode() not in out and status is None and time.time() < deadline:
        step()
    if status is not None:
        break
    os.write(fd, k.encode())
while status is None and time.time() < deadline:
    step()
if status is None:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
sys.stderr.write(out.decode(errors="replace"))
print("hung" if status is None else status)
PYEOF
}

# Five Ctrl-C and a Ctrl-\ from the terminal: CMD handles each and exits 6.
rc=$(on_tty $'\x03\x03\x03\x03\x03\x1c' "$AUTHPROXY" jail --user nobody -- \
  "$PY" "$T/cmd.py" 6 2> "$T/tty.log")
assert_eq "$rc" 6 "status of a CMD that handled 5 Ctrl-C and a Ctrl-\\ (137: the jail killed it; 131: Ctrl-\\ killed the jail)"
assert_eq "$(ls -A "$TMPDIR")" "" "files the jail left"
pass "Ctrl-C and Ctrl-\\ from the terminal are CMD's to handle, however many"

# SIGINT and SIGQUIT sent to the jail's process alone are passed on to CMD.
"$AUTHPROXY" jail --user nobody -- "$PY" "$T/cmd.py" 2 > "$T/kill.out" &
jpid=$!
PIDS+=($jpid)
wait_for "grep -qs 'ready 0' '$T/kill.out'"
kill -INT "$jpid"
wait_for "grep -qs 'ready 1' '$T/kill.out'"
kill -QUIT "$jpid"
set +e
wait "$jpid"; rc=$?
set -e
assert_eq "$rc" 2 "status of a CMD that was sent SIGINT and SIGQUIT through the jail (99: they never came)"
pass "kill -INT and kill -QUIT of the jail reach CMD"

# The third signal sent to the jail alone ends CMD for good (SIGKILL), whether CMD
# handles them or not: a supervisor's last resort, as the README says.
"$AUTHPROXY" jail --user nobody -- "$PY" "$T/cmd.py" 5 > "$T/third.out" &
jpid=$!
PIDS+=($jpid)
wait_for "grep -qs 'ready 0' '$T/third.out'"
kill -INT "$jpid"
wait_for "grep -qs 'ready 1' '$T/third.out'"
kill -QUIT "$jpid"
wait_for "grep -qs 'ready 2' '$T/third.out'"
kill -INT "$jpid"
set +e
wait "$jpid"; rc=$?
set -e
assert_eq "$rc" 137 "status of a CMD handling signals, after the third sent to the jail (99: it kept waiting)"
assert_eq "$(ls -A "$TMPDIR")" "" "files the jail left"
pass "the third signal sent to the jail kills CMD"
