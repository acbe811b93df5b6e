#!/usr/bin/env bash
# An intercepted answer that ends the connection (Connection: close) reaches a client
# that reads it slowly whole, when the upstream's close_notify follows it at once.
# The close lingers while the answer waits in the write queue toward the sandbox, and
# the upstream is closed then; but the TLS read that brought the answer's last record
# decrypted on, and passed the close_notify behind it on as the end of a connection
# already lingering: the connection was closed at once, and the tail still queued
# never reached the client, which saw a clean end after a short body (found by a
# differential fuzzer: 41,856 bytes short of 2.7 MB through a client reading 4 KiB
# at a time).
#
#   jail: client (reads late) -> authproxy (TLS both sides) -> upstream below
. "$(dirname "$0")/lib.sh"

make_ca "$T/ca" api.example.com
# Larger than the kernel's buffers toward the client can hold (tcp_wmem's 4 MiB at
# most, and the client's 8 KiB): with a write queue that takes the rest, the proxy
# reads the whole answer and the close_notify behind it before the client reads.
BODY=12000000
# The upstream: one answer, then its close_notify, written in one go.
"$PY" - "$T/ca/server.pem" "$T/ca/server.key" "$T/up.port" "$T/upstream-closed" "$BODY" \
  > "$T/up.log" 2>&1 <<'PYEOF' &
import os, socket, ssl, sys
cert, key, portfile, closed, size = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(1)
open(portfile + ".tmp", "w").write(str(ls.getsockname()[1]))
os.rename(portfile + ".tmp", portfile)
ls.settimeout(20)
conn, _ = ls.accept()
conn.settimeout(20)
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
obj = ctx.wrap_bio(inc, out, server_side=True)
def pump():
    data = out.read()
    if data:
        conn.sendall(data)
def feed():
    pump()
    d = conn.recv(65536)
    if not d:
        sys.exit("peer closed")
    inc.write(d)
while True:
    try:
        obj.do_handshake()
        break
    except ssl.SSLWantReadError:
        feed()
pump()
req = b""
while b"\r\n\r\n" not in req:
    try:
        req += obj.read(65536)
    except ssl.SSLWantReadError:
        feed()
body = (bytes(range(251)) * (size // 251 + 1))[:size]
view = memoryview(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size + body)
while len(view) > 0:
    view = view[obj.write(view):]
try:
    obj.unwrap()
except ssl.SSLWantReadError:
    pass
conn.sendall(out.read())
# The proxy closes its end once it has read the whole answer: the client may read.
while conn.recv(65536):
    pass
open(closed, "w").close()
PYEOF
PIDS+=($!)
wait_for "[ -s '$T/up.port' ]" 10
mkdir -p "$T/secrets"
printf 'sk-tail-%s\n' "$$" > "$T/secrets/KEY"
cat > "$T/config.json" <<EOF2
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$(cat "$T/up.port")" } } }
EOF2

out=$(jail --write-queue-bytes $((32 << 20)) --config "$T/config.json" --secrets-dir "$T/secrets" --upstream-ca "$T/ca/ca.pem" \
  --user nobody -- "$PY" -c '
import os, socket, ssl, sys, time
size = int(sys.argv[2])
raw = socket.socket()
raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # the answer waits in the proxy
raw.settimeout(20)
raw.connect(("api.example.com", 443))
s = ssl.create_default_context().wrap_socket(raw, server_hostname="api.example.com")
s.sendall(b"GET /big HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
# Read only once the proxy has read all of the answer (it then closes the upstream).
for _ in range(200):
    if os.path.exists(sys.argv[1]):
        break
    time.sleep(0.05)
else:
    print("the proxy did not close the upstream", file=sys.stderr)
data, end = bytearray(), "eof"
try:
    while True:
        d = s.recv(4096)
        if not d:
            break
        data += d
except (OSError, ssl.SSLError) as e:
    end = type(e).__name__
body = data.partition(b"\r\n\r\n")[2]
print(len(body), body == (bytes(range(251)) * (size // 251 + 1))[:size], end)' "$T/upstream-closed" "$BODY" 2> "$T/jail.log")
assert_eq "$out" "$BODY True eof" "the slow client's answer"
pass "an answer ended by Connection: close and the upstream's close_notify reaches a slow TLS client whole"
