#!/usr/bin/env bash
# A sandbox that shuts down its side of a connection (shutdown(SHUT_WR), `nc -N`, a
# TLS close_notify) still gets every answer, and a relayed stream ends on the other
# side the way it ended: a FIN as a FIN, a reset as a reset.
#
#   jail netns (anonymous)                       host netns
#   python --nft--> authproxy (in-process) --remap--> fake upstream 127.0.0.1 (HTTP)
#                                          --remap--> fake upstream 127.0.0.1 (HTTPS)
#                                          --remap--> raw TCP peer 127.0.0.1 (tunnel)
. "$(dirname "$0")/lib.sh"

make_ca "$T/ca" secure.example.com
start_upstream up
start_upstream tls "$T/ca/server.pem" "$T/ca/server.key"

# A raw TCP peer for the tunnel: logs how each connection ended (a FIN or a reset)
# and, after a FIN, answers with what it received.
cat > "$T/raw_peer.py" <<'PYEOF'
import json, os, socket, sys, threading
log = open(sys.argv[2], "a", buffering=1)
def serve(s):
    got = b""
    try:
        while True:
            k = s.recv(65536)
            if not k:
                break
            got += k
            log.write(json.dumps({"event": "data", "bytes": len(got)}) + "\n")
    except ConnectionResetError:
        log.write(json.dumps({"event": "reset", "bytes": len(got)}) + "\n")
        return
    log.write(json.dumps({"event": "eof", "bytes": len(got)}) + "\n")
    s.sendall(b"after your FIN: " + got)
    s.close()
    log.write(json.dumps({"event": "closed"}) + "\n")
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(16)
open(sys.argv[1] + ".tmp", "w").write(str(ls.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    threading.Thread(target=serve, args=(ls.accept()[0],), daemon=True).start()
PYEOF
: > "$T/raw.jsonl"
"$PY" "$T/raw_peer.py" "$T/raw.port" "$T/raw.jsonl" 2> "$T/raw.log" &
PIDS+=($!)
wait_for "[ -s '$T/raw.port' ]" 10

mkdir -p "$T/secrets"
printf 'sk-half-%s\n' "$$" > "$T/secrets/KEY"
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true,
    "match_hosts": ["api.example.com", "secure.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT",
                      "secure.example.com": "127.0.0.1:$tls_PORT",
                      "raw.example.com": "127.0.0.1:$(cat "$T/raw.port")" } } }
EOF
run() {
  jail --config "$T/config.json" --secrets-dir "$T/secrets" --upstream-ca "$T/ca/ca.pem" \
    --user nobody "$@"
}

# 1. A keep-alive answer the proxy has read whole but not yet written to a sandbox
#    that reads slowly; the sandbox then shuts down its write side (it sends no more
#    requests). The answer is written before the connection ends: the close used to
#    cancel the queued part, and the sandbox read a clean EOF after 2.6 of 4 MiB.
#    (--write-queue-bytes lets the proxy read all of it while the sandbox pauses; the
#    default 256 KiB showed the same for answers of 2.7-2.9 MiB.)
SIZE=$((4 << 20))
cat > "$T/halfclose.py" <<'PYEOF'
import socket, sys, time
size = int(sys.argv[1])
s = socket.create_connection(("api.example.com", 80), timeout=20)
s.sendall(b"GET /big?bytes=%d HTTP/1.1\r\nHost: api.example.com\r\n\r\n" % size)
time.sleep(1)  # busy elsewhere: the proxy reads the whole answer meanwhile
s.shutdown(socket.SHUT_WR)
time.sleep(0.5)
data = b""
while True:
    k = s.recv(1 << 20)
    if not k:
        break
    data += k
head, _, body = data.partition(b"\r\n\r\n")
print(head.split(b"\r\n")[0].decode(), len(body) == size and body.count(b"x") == size)
PYEOF
out=$(run --write-queue-bytes $((8 << 20)) -- "$PY" "$T/halfclose.py" "$SIZE")
assert_eq "$out" "HTTP/1.1 200 OK True" "the whole answer after the sandbox's FIN"
pass "a half-close between requests waits for the last answer to be written"

# 2. Requests pipelined in one TLS flight with the sandbox's close_notify behind them
#    (a client that is done writing). Every one is answered, as after a plain FIN: the
#    TLS read decrypts the close_notify with the requests, and the connection used to
#    end after the first answer, the others never sent upstream.
cat > "$T/notify.py" <<'PYEOF'
import socket, ssl
host = "secure.example.com"
inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
o = ssl.create_default_context().wrap_bio(inc, outg, server_hostname=host)
s = socket.create_connection((host, 443), timeout=10)
while True:
    try:
        o.do_handshake()
        break
    except ssl.SSLWantReadError:
        s.sendall(outg.read())
        inc.write(s.recv(65536))
for i in range(3):
    o.write(b"GET /p%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (i, host.encode()))
try:
    o.unwrap()  # queues our close_notify; the server's comes later
except ssl.SSLWantReadError:
    pass
s.sendall(outg.read())  # requests and close_notify, one flight
data = b""
while True:
    k = s.recv(65536)
    if not k:
        break
    inc.write(k)
    try:
        while True:
            data += o.read(65536)
    except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
        pass
print(data.count(b"HTTP/1.1 200 OK"), [p for p in (b"/p0", b"/p1", b"/p2") if p in data])
PYEOF
: > "$T/tls.jsonl"
out=$(run -- "$PY" "$T/notify.py")
assert_eq "$out" "3 [b'/p0', b'/p1', b'/p2']" "three answers after the close_notify"
assert_eq "$(upq tls '[r["path"] for r in reqs]')" "$(jlist /p0 /p1 /p2)" \
  "every request reached the upstream"
pass "pipelined requests before a TLS close_notify are all answered"

# 3. A tunnel (raw.example.com has no rules): the sandbox's FIN reaches the peer, which
#    still answers, and the answer and the peer's FIN reach the sandbox.
cat > "$T/tunnel.py" <<'PYEOF'
import json, socket, struct, sys, time
s = socket.create_connection(("raw.example.com", 7000), timeout=10)
s.sendall(b"\x00\x01opaque bytes")
if sys.argv[1] == "fin":
    s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        k = s.recv(65536)
        if not k:
            break
        data += k
    print(data)
    sys.exit(0)
# Reset once the peer has the bytes: the peer must see a reset, not a FIN that says
# the stream is whole.
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    if any(json.loads(l).get("bytes") == 14 for l in open(sys.argv[2])):
        break
    time.sleep(0.05)
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
print("reset")
PYEOF
: > "$T/raw.jsonl"
out=$(run -- "$PY" "$T/tunnel.py" fin)
assert_eq "$out" "b'after your FIN: \\x00\\x01opaque bytes'" "the peer answered after the FIN"
assert_eq "$(grep -c '"eof"' "$T/raw.jsonl")" "1" "the peer saw a FIN"
pass "a tunnel passes a FIN on and relays the answer after it"

# 3b. The same with an answer the proxy holds in its write queue (the sandbox reads
#     nothing until the peer has sent it all and closed, and the queue may hold it
#     all): both ends have sent their FIN while the answer still waits toward the
#     sandbox. The connection ends once that queue has drained (its record written
#     then), not at the idle timeout (600 s here) as if both ends were still open.
cat > "$T/drain.py" <<'PYEOF'
import json, socket, sys, time
size, log, peer = int(sys.argv[1]), sys.argv[2], sys.argv[3]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
s.settimeout(20)
s.connect(("raw.example.com", 7000))
s.sendall(b"y" * size)
s.shutdown(socket.SHUT_WR)
deadline = time.monotonic() + 10
while time.monotonic() < deadline and '"closed"' not in open(peer).read():
    time.sleep(0.05)
time.sleep(0.5)  # the proxy reads the rest of the answer, and the peer's FIN
got = 0
while True:
    k = s.recv(1 << 20)
    if not k:
        break
    got += len(k)
print(got == len(b"after your FIN: ") + size, end=" ")
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    recs = [json.loads(l) for l in open(log) if l.strip()]
    done = [r for r in recs if r.get("event") == "conn" and r.get("name") == "raw.example.com"]
    if done:
        print("ended", done[0]["bytes_down"] == got)
        sys.exit(0)
    time.sleep(0.05)
print("still open")
PYEOF
: > "$T/raw.jsonl"
out=$(jail --config "$T/config.json" --secrets-dir "$T/secrets" --idle-timeout 600 \
  --write-queue-bytes $((32 << 20)) --sandbox-queue-bytes $((64 << 20)) \
  --log "$T/drain-audit.jsonl" -- "$PY" "$T/drain.py" $((8 << 20)) "$T/drain-audit.jsonl" \
  "$T/raw.jsonl")
assert_eq "$out" "True ended True" \
  "the tunnel ended once the answer queued after both FINs was written"
pass "a tunnel whose ends both closed ends when its queue drains"

: > "$T/raw.jsonl"
chmod 644 "$T/raw.jsonl"
out=$(run -- "$PY" "$T/tunnel.py" rst "$T/raw.jsonl")
assert_eq "$out" "reset" "the sandbox reset its connection"
wait_for "grep -Eq '\"(eof|reset)\"' '$T/raw.jsonl'" 10
assert_eq "$(grep -o '"event": "[a-z]*", "bytes": 14' "$T/raw.jsonl" | tail -n 1)" \
  '"event": "reset", "bytes": 14' "how the peer saw the stream end"
pass "a tunnel passes the sandbox's reset on as a reset"
