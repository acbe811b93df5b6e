#!/usr/bin/env bash
# A pooled upstream connection passes the check that the upstream has said nothing
# since it was parked (proxy_conn_upstream_fresh), and the upstream resets it (its
# idle timeout) before the next request's head is written there: the write fails and
# nothing of the request went out. The request goes out on a new connection, whatever
# its method. A POST used to get a bare reset of the sandbox's connection (only a
# request safe to repeat was sent again), which a sandbox that had opened a new
# connection for it would never meet talking directly.
#
# The window is microseconds wide; gdb holds it open deterministically: the proxy
# stops as it writes the POST's head (uv_try_write of a buffer starting "PO"), the
# upstream resets the pooled connection, and the proxy goes on. Found by
# tests/tools/relay_fuzz.py --concurrent 4 --seed 22 (case 5126, ASan build).
#
#   jail: client.py --nft--> authproxy (in-process) --remap--> up.py (resets on cue)
. "$(dirname "$0")/lib.sh"

require_cmd gdb
[ "$(uname -m)" = x86_64 ] || { echo "SKIP: the breakpoint condition reads x86-64 registers"; exit 77; }

W="$T/w"
mkdir -m 1777 "$W"

cat > "$T/up.py" <<'PYEOF'
import json, os, socket, struct, sys, threading
w = sys.argv[1]
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(8)
log = open(os.path.join(w, "up.jsonl"), "a", buffering=1)
def serve(s, conn):
    buf = b""
    s.settimeout(0.05)
    while True:
        while b"\r\n\r\n" not in buf:
            if conn == 0 and os.path.exists(os.path.join(w, "hit")):
                # The idle timeout, as a server with unread input or SO_LINGER 0 ends it.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
                open(os.path.join(w, "reset"), "w").close()
                return
            try:
                k = s.recv(65536)
            except socket.timeout:
                continue
            if not k:
                return
            buf += k
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        n = [int(l.split(b":")[1]) for l in lines if l.lower().startswith(b"content-length:")]
        n = n[0] if n else 0
        s.settimeout(10)
        while len(buf) < n:
            buf += s.recv(65536)
        body, buf = buf[:n], buf[n:]
        s.settimeout(0.05)
        log.write(json.dumps({"conn": conn, "line": lines[0].decode(),
                              "body": body.decode()}) + "\n")
        s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
with open(os.path.join(w, "port.tmp"), "w") as f:
    f.write(str(ls.getsockname()[1]))
os.rename(os.path.join(w, "port.tmp"), os.path.join(w, "port"))
conn = 0
while True:
    s, _ = ls.accept()
    threading.Thread(target=serve, args=(s, conn), daemon=True).start()
    conn += 1
PYEOF
"$PY" "$T/up.py" "$W" 2> "$T/up.log" &
PIDS+=($!)
wait_for "[ -s '$W/port' ]" 10
cat > "$T/config.json" <<EOF
{ "rules": [], "dns": { "remap": { "api.example.com": "127.0.0.1:$(cat "$W/port")" } } }
EOF

cat > "$T/client.py" <<'PYEOF'
import os, socket, sys, time
w = sys.argv[1]
with open(os.path.join(w, "ppid"), "w") as f:
    f.write("%d\n" % os.getppid())
for _ in range(400):
    if os.path.exists(os.path.join(w, "attached")):
        break
    time.sleep(0.05)
def ask(req):
    s = socket.create_connection(("api.example.com", 80), timeout=20)
    s.sendall(req)
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            k = s.recv(65536)
            if not k:
                break
            data += k
        return data.split(b"\r\n")[0].decode() or "nothing"
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()
first = ask(b"GET /a HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
time.sleep(0.3)  # its upstream connection is parked once this one has ended
print(first, "|", ask(b"POST /b HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 7\r\n\r\npayload"))
PYEOF

jail --config "$T/config.json" --user nobody -- "$PY" "$T/client.py" "$W" > "$T/out" &
client=$!
PIDS+=($client)
wait_for "[ -s '$W/ppid' ]" 20
proxy=$(cat "$W/ppid")
# Stops the proxy as it writes the POST's head (bufs[0].base begins "PO"), has the
# upstream reset the pooled connection, waits for the reset to land, goes on.
timeout 60 gdb -p "$proxy" -batch -nx \
  -ex 'set breakpoint pending on' \
  -ex 'break uv_try_write if *(char *)(*(char **)$rsi) == 0x50 && *((char *)(*(char **)$rsi) + 1) == 0x4f' \
  -ex "shell touch $W/attached" \
  -ex 'continue' \
  -ex "shell touch $W/hit; for i in \$(seq 200); do [ -e $W/reset ] && break; sleep 0.05; done; sleep 0.2" \
  -ex 'detach' > "$T/gdb.out" 2>&1 || true
if grep -qE "ptrace: Operation not permitted|Could not attach" "$T/gdb.out"; then
  echo "SKIP: gdb cannot attach here (ptrace)"
  exit 77
fi
grep -q "hit Breakpoint 1" "$T/gdb.out" || fail "gdb never stopped at the POST's head: $(tail -5 "$T/gdb.out")"
[ -e "$W/reset" ] || fail "the upstream did not reset the pooled connection"
wait "$client" || fail "the client failed"

assert_eq "$(cat "$T/out")" "HTTP/1.1 200 OK | HTTP/1.1 200 OK" "GET, then a POST on a pooled connection reset before its head"
assert_eq "$("$PY" -c 'import json,sys; print([(r["conn"], r["line"], r["body"]) for r in map(json.loads, open(sys.argv[1]))])' "$W/up.jsonl")" \
  "[(0, 'GET /a HTTP/1.1', ''), (1, 'POST /b HTTP/1.1', 'payload')]" "requests the upstream received"
pass "a POST whose head could not be written to a pooled connection goes out on a new one"
