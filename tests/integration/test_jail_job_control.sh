#!/usr/bin/env bash
# Job control of an interactive shell in the jail, as a developer uses one:
#
#   this test, as a terminal (pty master)
#     `-- bash -i             the developer's shell ("out> ")
#           `-- authproxy jail   one of its jobs
#                 `-- bash -i    CMD ("in> "), in a process group of its own, which
#                                holds the terminal
#
# `suspend` in the jailed shell stops it (SIGSTOP to its own group, not the jail's).
# The jail must stop with it, as sudo does, or the developer's shell waits for a job
# that never ends: the terminal hangs, and closing it leaves the jail and the stopped
# shell running for good. `fg` continues the jail, which gives the terminal back to
# the jailed shell and continues it.
. "$(dirname "$0")/lib.sh"

export TMPDIR=$T/jailtmp
mkdir -p "$TMPDIR"

# on_tty STEPS...: runs an interactive bash on a new terminal; each step is "<TEXT"
# (wait until the terminal shows TEXT after what the last wait matched) or ">TEXT"
# (type TEXT). Prints "ok" or the step that did not come, then what the terminal
# showed. Whatever the outer shell started is killed at the end (by pid).
on_tty() {
  PS1='out> ' "$PY" - "$@" <<'PYEOF'
import os, pty, select, signal, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execvp("bash", ["bash", "--norc", "--noprofile", "-i"])
out, pos, result = b"", 0, "ok"
def read_for(t):
    global out
    end = time.time() + t
    while time.time() < end:
        if select.select([fd], [], [], 0.05)[0]:
            try:
                out += os.read(fd, 4096)
            except OSError:
                return
for step in sys.argv[1:]:
    if step[0] == ">":
        os.write(fd, step[1:].encode())
        continue
    end = time.time() + 10
    while out.find(step[1:].encode(), pos) < 0 and time.time() < end:
        read_for(0.1)
    at = out.find(step[1:].encode(), pos)
    if at < 0:
        result = "no %r" % step[1:]
        break
    pos = at + len(step) - 1
def descendants(root):
    kids = {}
    for p in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % p) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(p))
        except (OSError, ValueError, IndexError):
            pass
    found, todo = [], [root]
    while todo:
        for k in kids.get(todo.pop(), []):
            found.append(k)
            todo.append(k)
    return found
for p in descendants(pid) + [pid]:
    try:
        os.kill(p, signal.SIGKILL)
    except OSError:
        pass
os.waitpid(pid, 0)
print(result)
print(out.decode(errors="replace"))
PYEOF
}

out=$(on_tty '<out> ' \
  ">'$AUTHPROXY' jail --user nobody -- env PS1='in> ' bash --norc --noprofile -i"$'\n' \
  '<in> ' ">suspend"$'\n' \
  '<out> ' '>echo back $((6 * 7))'$'\n' '<back 42' \
  '>fg'$'\n' '<in> ' '>echo in $((5 * 5))'$'\n' '<in 25' \
  '>exit 7'$'\n' '<out> ' '>echo rc=$?'$'\n' '<rc=7')
assert_eq "$(head -1 <<< "$out")" ok \
  "suspend, fg and exit of a shell in the jail (the terminal showed: $(tail -n +2 <<< "$out"))"
assert_eq "$(ls -A "$TMPDIR")" "" "files the jail left"
pass "suspend in a jailed shell returns to the caller's shell; fg resumes it"

# Continued, the jail learns it was stopped from its SIGCONT handler, which must run
# on the thread that stopped it (follow_stop looks for it as kill() returns). libuv's
# threadpool threads (name lookups, audit writes) took the process's signals as they
# came: now and then (4 of 7 runs of 100 suspend and fg) an `fg` left the jailed
# shell stopped and the terminal hung. Every thread of the jail but the main one
# blocks every signal.
start_upstream up
cat > "$T/pool.json" <<EOF2
{ "rules": [], "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF2
"$AUTHPROXY" jail --user nobody --config "$T/pool.json" --log "$T/audit.jsonl" -- \
  sh -c 'curl -sS -o /dev/null http://api.example.com/pool; echo fetched; exec sleep 30' \
  > "$T/pool.out" 2> "$T/pool.log" &
jail_pid=$!
PIDS+=("$jail_pid")
wait_until 10 "the jailed request and its audit record" \
  eval 'file_has "$T/pool.out" fetched && file_has "$T/audit.jsonl" api.example.com'
threads=0 unblocked=""
for task in /proc/$jail_pid/task/*; do
  [ "${task##*/}" = "$jail_pid" ] && continue
  threads=$((threads + 1))
  mask=$(awk '$1 == "SigBlk:" { print $2 }' "$task/status")
  (( (16#$mask >> ($(kill -l CONT) - 1)) & 1 )) || unblocked+="${task##*/} "
done
kill -TERM "$jail_pid"
wait "$jail_pid" 2>/dev/null || true
[ "$threads" -gt 0 ] || fail "the jail started no thread (its threadpool did not start)"
assert_eq "$unblocked" "" "threads of the jail that take SIGCONT"
pass "only the jail's main thread takes its signals (SIGCONT after fg among them)"
