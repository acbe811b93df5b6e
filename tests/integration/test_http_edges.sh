#!/usr/bin/env bash
# Edges of the HTTP engine through `authproxy jail`, each once lost data or a request:
# a slow reader of the last response on a closing connection, a 304 that carries a
# Content-Length, bytes an upstream sends between responses, and a pooled upstream
# taken by a request whose head outgrew the first read buffer.
#
#   jail netns (anonymous)                       host netns
#   python / curl --nft--> authproxy (in-process) --remap--> fake upstream 127.0.0.1
. "$(dirname "$0")/lib.sh"

start_upstream up
api_config "sk-edges-$$"
run() { jail --config "$T/config.json" --secrets-dir "$T/secrets" --user nobody "$@"; }

# 1. The proxy has the whole answer queued toward a sandbox that pauses before reading
#    it, and the connection is to close after it (Connection: close). The lingering
#    close waits for the queue to drain: it used to close 2 s after the upstream's last
#    byte, cancelling what the sandbox had not read yet (what the kernel's socket
#    buffers held still arrived; a pause keeps them small).
SIZE=$((4 << 20))
cat > "$T/slow.py" <<'PYEOF'
import socket, sys, time
size = int(sys.argv[1])
s = socket.create_connection(("api.example.com", 80), timeout=20)
s.sendall(b"GET /big?bytes=%d HTTP/1.1\r\nHost: api.example.com\r\n"
          b"Connection: close\r\n\r\n" % size)
data = s.recv(65536)
time.sleep(3)  # busy elsewhere, past the 2 s of lingering
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    k = s.recv(1 << 20)
    if not k:
        break
    data += k
head, _, body = data.partition(b"\r\n\r\n")
print(head.split(b"\r\n")[0].decode(), len(body) == size and body.count(b"x") == size)
PYEOF
out=$(run --write-queue-bytes $((8 << 20)) -- "$PY" "$T/slow.py" "$SIZE")
assert_eq "$out" "HTTP/1.1 200 OK True" "a slow reader got the whole answer before the close"
pass "lingering close waits for the answer to be written"

# 2. A 304 with a Content-Length has no body: the next request on the connection is
#    answered (it used to wait for 1234 bytes that never come).
: > "$T/up.jsonl"
out=$(run -- curl -sS --max-time 10 -o /dev/null -o /dev/null -w '%{http_code} ' \
  http://api.example.com/not-modified http://api.example.com/after-304 2>&1 || true)
assert_eq "$out" "304 200 " "304 then the next request, kept alive"
assert_eq "$(upq up 'len(set(r["conn"] for r in reqs))')" "1" "one upstream connection"
pass "a 304 with a Content-Length ends at its head"

# 3. Bytes the upstream sends while no request is outstanding are not passed on as an
#    answer: that upstream connection goes, the sandbox's stays, and its next request
#    is served on a new one. Whether they come after the answer or with its last bytes
#    (which used to reset the sandbox's connection, its good answer with it).
for stray in /stray "/stray?same=1"; do
  : > "$T/up.jsonl"
  cat > "$T/stray.py" <<'PYEOF'
import http.client, sys, time
c = http.client.HTTPConnection("api.example.com", 80, timeout=10)
c.request("GET", sys.argv[1])
r = c.getresponse()
first = (r.status, r.read())
port = c.sock.getsockname()[1]
time.sleep(0.5)  # the stray bytes arrive meanwhile
c.request("GET", "/after-stray")
r = c.getresponse()
body = r.read()
print(first, r.status, b"/after-stray" in body,
      c.sock is not None and c.sock.getsockname()[1] == port)
PYEOF
  out=$(run -- "$PY" "$T/stray.py" "$stray")
  assert_eq "$out" "(200, b'ok\\n') 200 True True" "$stray: the answer, and the request after"
  assert_eq "$(upq up 'len(set(r["conn"] for r in reqs))')" "2" "$stray: the upstream not reused"
done
pass "stray upstream bytes after an answer drop that upstream, not the sandbox"

# 4. A new sandbox connection takes the upstream its predecessor left in the pool, with a
#    request head over 4 KiB (a long cookie): the buffer that held the head is freed as
#    it is consumed, and deciding whether the request may be sent again used to read it
#    afterwards (AddressSanitizer's pass of this test caught it).
: > "$T/up.jsonl"
cookie=$(head -c 6000 /dev/zero | tr '\0' 'c')
out=$(run -- sh -c "curl -sS -o /dev/null -w '%{http_code} ' http://api.example.com/p1 &&
  curl -sS -o /dev/null -w '%{http_code}' -H 'Cookie: k=$cookie' http://api.example.com/p2")
assert_eq "$out" "200 200" "both requests answered"
assert_eq "$(upq up '[r["path"] for r in reqs]')" "$(jlist /p1 /p2)" "both reached the upstream"
assert_eq "$(upq up 'len(set(r["conn"] for r in reqs))')" "1" "the second took the pooled upstream"
assert_eq "$(upq up 'hdr(reqs[1], "Authorization")')" "$(jlist "Bearer sk-edges-$$")" \
  "the header injected on the pooled connection"
pass "a large head on a pooled upstream"
