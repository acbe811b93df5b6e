#!/usr/bin/env bash
# The Python client (clients/python/authproxy_client.py) under an orchestrator's load
# and with the daemon down.
#
# The control socket serves 64 clients at once; the README says more wait in its
# backlog for a slot, and are answered 503 too_many_clients only when none has freed
# for 2 s. `authproxy ctl` waits so (a blocking connect, bounded). The Python client
# set a timeout on its socket first, which makes Python connect without blocking: to
# a Unix socket whose backlog is full that fails at once with EAGAIN, so a burst of
# workers (150 threads attaching) got BlockingIOError "Resource temporarily
# unavailable", which names neither the daemon nor what to do. And with the daemon
# down its errors were the bare OSError, "[Errno 2] No such file or directory",
# naming no socket; a call the daemon dropped as it stopped (SIGTERM: it closes
# the connections it has not answered) raised "Connection reset by peer".
. "$(dirname "$0")/lib.sh"

export PYTHONPATH=$SRC/clients/python
SOCK=$T/control.sock

# Down: the error names the socket and says the daemon may not be running.
out=$("$PY" -c "
from authproxy_client import Client
try:
    Client('$SOCK').list()
except FileNotFoundError as e:
    print(e)")
assert_contains "$out" "$SOCK" "a missing socket's error names it"
assert_contains "$out" "authproxy serve" "a missing socket's error says the daemon may be down"
pass "daemon down: the error names the control socket and the daemon"

"$AUTHPROXY" serve --state-dir "$T/state" --control "$SOCK" >> "$T/serve.log" 2>&1 &
SERVE_PID=$!
PIDS+=($SERVE_PID)
wait_for "[ -S '$SOCK' ] && '$AUTHPROXY' ctl --control '$SOCK' health >/dev/null 2>&1"

# 64 clients that send nothing hold every slot, and more fill the backlog (until a
# connect would block); then the client's call waits for the daemon to refuse (or
# serve) it, with an answer it can act on.
out=$("$PY" -c "
import socket
from authproxy_client import Client, AuthproxyError
held = []
for i in range(2000):
    s = socket.socket(socket.AF_UNIX)
    s.setblocking(False)
    try:
        s.connect('$SOCK')
    except BlockingIOError:
        s.close()
        break
    held.append(s)
assert len(held) > 64, len(held)
try:
    print('ok', Client('$SOCK', timeout=10).health()['status'])
except AuthproxyError as e:
    print('answered', e.status, e.code)
except OSError as e:
    print('failed', type(e).__name__, e)
for s in held:
    s.close()")
case "$out" in
  "answered 503 too_many_clients" | "ok ok") ;;
  *) fail "a call with the daemon's backlog full: $out" ;;
esac
pass "backlog full: the call waits and is answered ($out)"

wait_until 5 "the daemon to serve again" \
  "$PY" -c "from authproxy_client import Client; Client('$SOCK').health()"
pass "served again once the idle clients left"

# A call waiting for a slot when the daemon stops: closed unanswered, and the error
# says the daemon stopped (not a bare reset, nor a guess at descriptors).
out=$("$PY" -c "
import os, signal, socket, threading, time
from authproxy_client import Client
held = []
for i in range(64):
    s = socket.socket(socket.AF_UNIX)
    s.connect('$SOCK')
    held.append(s)
res = []
def call():
    try:
        Client('$SOCK', timeout=10).list()
        res.append('answered')
    except Exception as e:
        res.append('%s: %s' % (type(e).__name__, e))
t = threading.Thread(target=call)
t.start()
time.sleep(0.3)
os.kill($SERVE_PID, signal.SIGTERM)
t.join()
print(res[0])")
case "$out" in
  *"the daemon stopped"*) ;;
  # It had not connected yet when the daemon went: the error of a daemon down.
  *"is \`authproxy serve\` running?"*) ;;
  *) fail "a call dropped by the daemon stopping: $out" ;;
esac
assert_not_contains "$out" "file descriptors" "the stop is not taken for descriptors"
pass "daemon stopped during a call: $out"
