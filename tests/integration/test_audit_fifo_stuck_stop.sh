#!/usr/bin/env bash
# A daemon whose audit log FIFO has a reader that stopped reading (a log shipper
# hung, the pipe full) still stops on SIGTERM: the records the reader does not take
# within --drain-timeout are counted lost and logged, naming the FIFO, and the daemon
# exits 0. A regression test: the stop waited for the write in flight on the thread
# pool, then wrote the rest with blocking writes, so the daemon never exited (systemd
# killed it after TimeoutStopSec, with nothing in the log).
#
#   ap-afs-PID (sandbox)  --600 denied requests-->  authproxy serve --log $T/audit.fifo
#                                                     --> reader that reads nothing
. "$(dirname "$0")/lib.sh"
. "$SRC/tests/adversarial/adv_lib.sh"

FIFO=$T/audit.fifo
mkfifo "$FIFO"
# The reader holds the FIFO open and never reads; a writer of its own fills the pipe
# first, so that the daemon's first write waits, whenever it comes (a write of a
# smaller batch, flushed by the timer on a slow machine, would fit in an empty pipe).
"$PY" -c 'import os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
w = os.open(sys.argv[1], os.O_WRONLY | os.O_NONBLOCK)
try:
    while True:
        os.write(w, b"\n" * 4096)
except BlockingIOError:
    pass
os.close(w)
open(sys.argv[2], "w").close()
time.sleep(120)' "$FIFO" "$T/ready" &
PIDS+=($!)
wait_for "[ -e '$T/ready' ]"
serve_start --log "$FIFO"
ns=$(make_netns afs)
echo '{ "egress": { "default": "deny" } }' > "$T/cfg.json"
ctl attach box --netns "/var/run/netns/$ns" --config "$T/cfg.json" > /dev/null

# Two records per request, about 600 bytes: several times what the pipe holds.
ip netns exec "$ns" "$PY" - <<'PYEOF'
import socket
for i in range(600):
    s = socket.create_connection(("198.51.100.1", 80), timeout=5)
    s.sendall(b"GET /x HTTP/1.1\r\nHost: denied.example\r\nConnection: close\r\n\r\n")
    while s.recv(65536):
        pass
    s.close()
PYEOF
# The pipe is full: the first batch's write waits for room, so none has completed.
assert_eq "$(ctl metrics | awk '$1 == "authproxy_audit_records_total" { print $2 }')" 0 \
  "audit records written with a reader that reads nothing"

kill -TERM "$serve_pid"
wait_for "! kill -0 $serve_pid 2>/dev/null" 30
rc=0
wait "$serve_pid" || rc=$?
assert_eq "$rc" "0" "the daemon's exit status after SIGTERM"
grep "audit log $FIFO" "$T/serve.log" || true
grep -q "audit log $FIFO: its reader did not take the last records within 1000 ms of the close (.*records lost)" \
  "$T/serve.log" || fail "the records lost at the stop are not logged, naming the FIFO"
pass "SIGTERM stops the daemon whose audit reader stopped reading, and the loss is logged"
