#!/usr/bin/env bash
# An upstream resets its connection in the middle of an answer's head (the first bytes
# of the status line or of the fields went out; the rest was still held by its kernel,
# which a reset throws away: a keep-alive idle close with SO_LINGER 0, Nagle holding a
# small write). The framing of that answer was not known yet, and the proxy took it for
# a body delimited by the connection's end (llhttp_message_needs_eof says so of a head
# not parsed yet), which a reset must end: it reset the sandbox's connection outright.
# That cancelled what was still queued toward a sandbox reading more slowly than the
# upstream sent: whole answers to the requests it had pipelined before, lost although
# the upstream had sent them in full, and the pipelining client's next write met a
# reset. The cut answer now ends as any other cut inside its head: what came goes out,
# then the connection's end (a head cut short cannot pass for a whole answer).
# Found by tests/tools/relay_fuzz.py --concurrent 12 --seed 42 (cases 7619, 13185).
#
#   jail: client.py --nft--> authproxy (in-process) --remap--> up.py (resets on cue)
. "$(dirname "$0")/lib.sh"

W="$T/w"
mkdir -m 1777 "$W"
BIG=$((8 << 20)) # more than the kernel holds between the proxy and the client

cat > "$T/up.py" <<'PYEOF'
import fcntl, os, socket, struct, sys, termios, time
w, big = sys.argv[1], int(sys.argv[2])
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(8)
with open(os.path.join(w, "port.tmp"), "w") as f:
    f.write(str(ls.getsockname()[1]))
os.rename(os.path.join(w, "port.tmp"), os.path.join(w, "port"))
s, _ = ls.accept()
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.settimeout(20)
buf = b""
def head():
    global buf
    while b"\r\n\r\n" not in buf:
        k = s.recv(65536)
        if not k:
            sys.exit("connection ended before a request")
        buf += k
    h, buf = buf.split(b"\r\n\r\n", 1)
    with open(os.path.join(w, "up.log"), "a") as f:
        f.write(h.split(b"\r\n")[0].decode() + "\n")
def sent():
    # Until the proxy's kernel has taken all of it: a reset drops what is unsent.
    for _ in range(2000):
        if struct.unpack("i", fcntl.ioctl(s, termios.TIOCOUTQ, b"\0\0\0\0"))[0] == 0:
            return
        time.sleep(0.005)
    sys.exit("the proxy did not read the answer")
head()
s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % big + b"a" * big)
head()
s.sendall(b"HTTP/1.1 200 OK\r\nContent-Le")
sent()
time.sleep(0.3)  # read by the proxy before the reset comes
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
open(os.path.join(w, "reset"), "w").close()
PYEOF
"$PY" "$T/up.py" "$W" "$BIG" 2> "$T/up.log" &
PIDS+=($!)
wait_for "[ -s '$W/port' ]" 10
cat > "$T/config.json" <<EOF
{ "rules": [], "dns": { "remap": { "api.example.com": "127.0.0.1:$(cat "$W/port")" } } }
EOF

cat > "$T/client.py" <<'PYEOF'
import os, socket, sys, time
w, big = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow reader
s.settimeout(20)
s.connect(("api.example.com", 80))
s.sendall(b"GET /a HTTP/1.1\r\nHost: api.example.com\r\n\r\n"
          b"GET /b HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
for _ in range(400):
    if os.path.exists(os.path.join(w, "reset")):
        break
    time.sleep(0.05)
time.sleep(0.3)
got, end = b"", "open"
try:
    while True:
        k = s.recv(1 << 20)
        if not k:
            end = "eof"
            break
        got += k
except OSError as e:
    end = type(e).__name__
first = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % big + b"a" * big
if got.startswith(first):
    print("answer a whole | then %r | %s" % (got[len(first):].decode(), end))
else:
    print("answer a cut after %d of %d bytes | %s" % (len(got), len(first), end))
PYEOF

jail --config "$T/config.json" --user nobody --write-queue-bytes $((32 << 20)) \
  -- "$PY" "$T/client.py" "$W" "$BIG" > "$T/out" 2> "$T/jail.log" || fail "the jail failed"
[ -e "$W/reset" ] || fail "the upstream did not reset"
assert_eq "$(cat "$W/up.log")" "GET /a HTTP/1.1
GET /b HTTP/1.1" "requests the upstream received"
assert_eq "$(cat "$T/out")" "answer a whole | then 'HTTP/1.1 200 OK\r\nContent-Le' | eof" \
  "what the pipelining client read"
pass "an answer whose head a reset cut ends the connection after what was queued before it"
