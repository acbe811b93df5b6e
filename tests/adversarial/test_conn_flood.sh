#!/usr/bin/env bash
# One sandbox opens 10,000 connections and keeps them idle (a request head begun,
# never finished) to exhaust the proxy (invariant I8: one sandbox cannot starve
# another). With --max-conns 1000 the proxy keeps exactly 1000 and resets the rest;
# its file descriptors stay bounded; a second sandbox, running at the same time,
# is served normally; the flooding sandbox's next connection is refused while it is
# at the cap, and served again once it lets some go.
#
#   jail A (flood, --max-conns 1000)  \
#                                      > authproxy x2 (in $HNS) --remap--> fake upstream
#   jail B (curl, while A is at cap)  /
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

N=10000
CAP=1000
# The flooding client holds N sockets: raise the soft limit as far as needed.
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt $((N + 200)) ]; then
  N=$((hard - 200))
  echo "note: RLIMIT_NOFILE hard limit $hard: flooding with $N connections"
fi
[ $N -gt $((CAP + 100)) ] || { echo "SKIP: RLIMIT_NOFILE too low for the flood"; exit 77; }
ulimit -Sn $((N + 200))

host_ns_start
hupstream up
cat > "$T/config.json" <<EOF
{ "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
mkdir -m 1777 "$T/w"

cat > "$T/flood.py" <<'PYEOF'
import json, os, select, socket, struct, sys, time
sys.path.insert(0, sys.argv[1])
from advlib import wait_file
n, w = int(sys.argv[2]), sys.argv[3]

def emit(**kv):
    print(json.dumps(kv)); sys.stdout.flush()

with open(os.path.join(w, "ppid"), "w") as f:
    f.write("%d\n" % os.getppid())
wait_file(os.path.join(w, "start"))
addr = socket.gethostbyname("api.example.com")
head = b"GET /idle HTTP/1.1\r\nHost: api.example.com\r\n"
socks, failed, t0 = {}, 0, time.time()
for i in range(n):
    s = socket.socket()
    s.settimeout(10)
    try:
        s.connect((addr, 80))
        s.send(head)
    except OSError:
        failed += 1
        s.close()
        continue
    socks[s.fileno()] = s
opened = time.time() - t0
# The proxy resets what is over its cap; wait until no more resets arrive (bounded).
# Quiet alone is not enough: when the flood overflows the listener's accept queue,
# the kernel drops the handshake's last ACK, the client believes itself connected,
# and the connection only reaches the proxy (to be reset) at a retransmission,
# seconds later. Such a connection's head is not acknowledged; a held one's is.
def unacked(s):
    return struct.unpack_from("I", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104), 24)[0]
p = select.poll()
for fd in socks:
    p.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
quiet, late = 0, 0
for _ in range(120):
    events = p.poll(500)
    if not events:
        quiet += 1
        if quiet >= 4:
            waiting = sum(1 for s in socks.values() if unacked(s))
            if waiting == 0:
                break
            late = max(late, waiting)
        continue
    quiet = 0
    for fd, ev in events:
        p.unregister(fd)
        socks.pop(fd).close()
# "reset_early": reset before the head could even be sent.
emit(case="flood", attempted=n, reset_early=failed, alive=len(socks), late=late,
     seconds=round(opened, 1))
open(os.path.join(w, "held"), "w").close()
wait_file(os.path.join(w, "release"))
# At the cap: a new connection is reset. The proxy accepts and resets at once, so
# the reset may already be there when connect() returns (a timed connect polls and
# reads SO_ERROR) or arrive on the first send or read: all three are the refusal.
try:
    s = socket.create_connection((addr, 80), timeout=10)
    try:
        s.sendall(b"GET /over HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")
        emit(case="over_cap", answer=len(s.recv(100)))
    finally:
        s.close()
except (ConnectionResetError, BrokenPipeError):
    emit(case="over_cap", answer="reset")
# Let 100 go; the proxy notices the FINs and frees their slots.
for fd in list(socks)[:100]:
    socks.pop(fd).close()
for attempt in range(40):
    time.sleep(0.25)
    try:
        s = socket.create_connection((addr, 80), timeout=10)
    except ConnectionResetError:
        continue
    try:
        s.sendall(b"GET /after HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")
        r = s.recv(100)
        if r.startswith(b"HTTP/1.1 200"):
            emit(case="after_release", answer=r.split(b"\r\n")[0].decode(), attempts=attempt + 1)
            break
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
else:
    emit(case="after_release", answer="none")
PYEOF

hjail --config "$T/config.json" --max-conns $CAP --head-timeout 120 --user nobody -- \
  "$PY" "$T/flood.py" "$TOOLS" $N "$T/w" > "$T/flood.out" 2> "$T/flood.log" &
flood_jail=$!
PIDS+=($flood_jail)
wait_for "[ -s '$T/w/ppid' ]"
proxy=$(cat "$T/w/ppid")
rss0=$(proxy_rss_kb "$proxy")
fds0=$(ls "/proc/$proxy/fd" | wc -l)
: > "$T/w/start"
wait_for "[ -e '$T/w/held' ]" 120
rss1=$(proxy_rss_kb "$proxy")
fds1=$(ls "/proc/$proxy/fd" | wc -l)
load_results "$T/flood.out"
echo "flood: $N connections attempted in $(result "$T/flood.out" flood seconds) s ($(result "$T/flood.out" flood reset_early) reset before the head was sent, $(result "$T/flood.out" flood late) waited for after a quiet 2 s); $(result "$T/flood.out" flood alive) kept"
echo "proxy: $fds0 -> $fds1 file descriptors, VmRSS $rss0 -> $rss1 kB ($(( (rss1 - rss0) * 1024 / CAP )) bytes per held connection)"
assert_eq "$(result "$T/flood.out" flood alive)" "$CAP" "connections the proxy kept"
if [ "$fds1" -gt $((fds0 + CAP + 8)) ]; then
  # What the descriptors are, and the state of the proxy's TCP sockets.
  echo "proxy descriptors by kind:"
  for f in /proc/"$proxy"/fd/*; do readlink "$f"; done | sed 's/\[[0-9]*\]//' | sort | uniq -c
  echo "TCP sockets in the proxy's namespace by state and local port:"
  nsenter -t "$proxy" -n ss -Htan | awk '{ n = split($4, a, ":"); print $1, a[n] }' | sort | uniq -c | sort -rn | head -20
  fail "the proxy holds $fds1 descriptors (cap $CAP)"
fi
pass "$N idle connections: exactly $CAP kept, the rest reset; $fds1 descriptors"

# Another sandbox, served by its own proxy at the same time, is unaffected.
out=$(hjail --config "$T/config.json" --user nobody -- curl -sS --max-time 10 http://api.example.com/other)
assert_contains "$out" '"path": "/other"' "the second sandbox's request"
pass "a second sandbox is served while the first is at its cap"

: > "$T/w/release"
wait "$flood_jail" || fail "the flooding jail failed: $(tail -3 "$T/flood.log")"
load_results "$T/flood.out"
assert_eq "$(result "$T/flood.out" over_cap answer)" "reset" "a new connection at the cap"
assert_eq "$(result "$T/flood.out" after_release answer)" "HTTP/1.1 200 OK" "a request after releasing 100"
assert_eq "$(upq up 'sorted(r["path"] for r in reqs)')" "$(jlist /after /other)" "upstream requests"
pass "at the cap the flooding sandbox is refused; after releasing some it is served again"
