#!/usr/bin/env bash
# Stopping the daemon (SIGTERM) or detaching a sandbox drains connections with a
# deadline (--drain-timeout), but a kept-alive HTTP connection between requests has
# nothing to finish: it ends at once (FIN), as after an answer, instead of holding the
# stop for the whole deadline (which, with the default 5 s, every restart paid). A
# request in flight is still answered whole, and its connection ends after it, as does
# one whose last answer is still being written to a slow reader when the stop comes.
#
#   ap-idle-PID (lo only)                          host
#   client.py --redirect--> authproxy serve --remap--> fake upstream 127.0.0.1
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/../adversarial/adv_lib.sh"

start_upstream up
echo "{ \"dns\": { \"remap\": { \"api.example.com\": \"127.0.0.1:$up_PORT\" } } }" \
  > "$T/config.json"

# Three keep-alive connections: "idle" after one answer, "busy" with a 3 s request in
# flight when the stop comes, and "queued", whose answer the proxy has whole (its
# audit record is written) but still queued toward a reader that has not read it.
# Prints how each ended; every wait is bounded.
cat > "$T/client.py" <<'PYEOF'
import os, socket, sys, time
t = sys.argv[1]

def request(s, path):
    s.sendall(b"GET %s HTTP/1.1\r\nHost: api.example.com\r\n\r\n" % path.encode())

def read_answer(s):
    data = b""
    while b"\r\n\r\n" not in data:
        k = s.recv(65536)
        if not k:
            return None
        data += k
    head, _, body = data.partition(b"\r\n\r\n")
    n = int([l.split(b":")[1] for l in head.split(b"\r\n")
             if l.lower().startswith(b"content-length:")][0])
    while len(body) < n:
        k = s.recv(65536)
        if not k:
            return None
        body += k
    return head.split(b"\r\n")[0].decode()

def ending(s):
    try:
        return "eof" if s.recv(1) == b"" else "data"
    except socket.timeout:
        return "open"
    except ConnectionResetError:
        return "reset"

idle = socket.create_connection(("api.example.com", 80), timeout=40)
request(idle, "/first")
first = read_answer(idle)
busy = socket.create_connection(("api.example.com", 80), timeout=40)
request(busy, "/slow?delay=3")
queued = socket.socket()
queued.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
queued.settimeout(40)
queued.connect(("api.example.com", 80))
request(queued, "/big?bytes=6000000")
for _ in range(400):
    if b'"/big"' in open(os.path.join(t, "audit.jsonl"), "rb").read():
        break
    time.sleep(0.025)
open(os.path.join(t, "ready"), "w").close()
print("idle", first, ending(idle), flush=True)
print("busy", read_answer(busy), ending(busy), flush=True)
queued.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # now read it quickly
print("queued", read_answer(queued), ending(queued), flush=True)
PYEOF

: > "$T/audit.jsonl"
serve_start --drain-timeout 60 --log "$T/audit.jsonl" --write-queue-bytes 16777216
ns=$(make_netns idle)
ctl attach idle --netns "/var/run/netns/$ns" --config "$T/config.json" > /dev/null
ip netns exec "$ns" "$PY" "$T/client.py" "$T" > "$T/client.out" 2> "$T/client.log" &
CLIENT=$!
PIDS+=($CLIENT)
wait_for "[ -e '$T/ready' ]" 20
# The stop comes once the slow request has reached the upstream: the client used to
# sleep 0.5 s for that, which a loaded machine need not honour.
wait_for "grep -q '\"path\": \"/slow\"' '$T/up.jsonl'"
kill -TERM "$serve_pid"
# Bounded by the client's 40 s socket timeouts, under the 60 s drain deadline: the
# old daemon held the idle connection open until the deadline.
wait "$CLIENT" || fail "client failed: $(cat "$T/client.log")"
assert_eq "$(cat "$T/client.out")" "idle HTTP/1.1 200 OK eof
busy HTTP/1.1 200 OK eof
queued HTTP/1.1 200 OK eof" "how the connections ended"
wait_for "! kill -0 $serve_pid 2>/dev/null" 20
rc=0
wait "$serve_pid" || rc=$?
assert_eq "$rc" "0" "the daemon's status after the drain"
pass "a stop ends idle keep-alive connections at once, or after the answer in flight or queued"
