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
