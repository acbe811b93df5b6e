#!/usr/bin/env bash
# A detach waits for requests the sandbox sent before it, also ones the loop has not
# read yet (setup reads are rationed per turn: stream.c, SETUP_READS). A resumed TLS
# handshake's last flight (the client's Finished) and the first request often come in
# one read: the handshake ended during the drain, found the sandbox closing and no
# byte waiting in the socket, and ended the connection, though the request sat right
# behind the Finished in the same read. The client got a close_notify for a request
# sent before the DELETE.
#
# The proxy is stopped (SIGSTOP) while N clients send their Finished and a request,
# and the DELETE is written to the control socket; once resumed, the loop reads two
# of those connections a turn and the DELETE comes within the first few turns. One
# more client sends its Finished and request only after the detach: that request is
# a new one, and must not go out under the detached sandbox's credentials.
#
#   ap-dt-PID: N TLS clients (resumed) --nft--> authproxy serve (sandbox a) --> upstream
. "$(dirname "$0")/lib.sh"
. "$SRC/tests/adversarial/adv_lib.sh"

N=24
make_ca "$T/ca" api.example.com
start_upstream up "$T/ca/server.pem" "$T/ca/server.key"
serve_start --drain-timeout 30 --log "$T/audit.jsonl" --upstream-ca "$T/ca/ca.pem"
cat > "$T/cfg.json" <<EOF2
{ "rules": [ { "name": "r", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "plaintext", "value": "Bearer key-a" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF2
ns=$(make_netns dt)
ctl attach a --netns "/var/run/netns/$ns" --config "$T/cfg.json" > "$T/ca-a.pem"

ip netns exec "$ns" "$PY" - "$T" "$N" > "$T/client.out" 2> "$T/client.log" <<'PYEOF' &
import json, os, socket, ssl, sys, time
T, N = sys.argv[1], int(sys.argv[2])
def wait(name):
    for _ in range(800):
        if os.path.exists(T + "/" + name):
            return
        time.sleep(0.025)
    sys.exit("no " + name)
ctx = ssl.create_default_context(cafile=T + "/ca-a.pem")
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
first = ctx.wrap_socket(socket.create_connection(("api.example.com", 443), timeout=10),
                        server_hostname="api.example.com")
first.sendall(b"GET /first HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
first.recv(65536)
session = first.session
# Each client runs its handshake up to its last flight (the proxy's Finished read,
# the client's Finished and its request written to memory, not yet sent).
conns = []
for i in range(N + 1):
    s = socket.create_connection(("api.example.com", 443), timeout=10)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    o = ctx.wrap_bio(inc, out, server_hostname="api.example.com", session=session)
    while True:
        try:
            o.do_handshake()
            break
        except ssl.SSLWantReadError:
            if out.pending:
                s.sendall(out.read())
            data = s.recv(65536)
            if not data:
                sys.exit("eof in the handshake")
            inc.write(data)
    if not o.session_reused:
        sys.exit("the session was not resumed")
    path = "/late" if i == N else "/sent-%d" % i
    o.write(("GET %s HTTP/1.1\r\nHost: api.example.com\r\n\r\n" % path).encode())
    conns.append((s, inc, o, out.read()))
open(T + "/ready", "w").close()
wait("stopped")
for s, inc, o, last in conns[:N]:
    s.sendall(last)
open(T + "/sent", "w").close()
wait("detached")
conns[N][0].sendall(conns[N][3])
got = {}
for i, (s, inc, o, last) in enumerate(conns):
    status = "eof"
    try:
        while True:
            try:
                line = o.read(65536)
                status = line.split(b"\r\n")[0].decode() if line else "eof"
                break
            except ssl.SSLWantReadError:
                data = s.recv(65536)
                if not data:
                    break
                inc.write(data)
    except (OSError, ssl.SSLError) as e:
        status = type(e).__name__
    if i < N:
        got[status] = got.get(status, 0) + 1
    else:
        late = status
print(json.dumps(got, sort_keys=True))
print(late)
PYEOF
client=$!
PIDS+=($client)
wait_for "[ -e '$T/ready' ] || ! kill -0 $client 2>/dev/null" 20
[ -e "$T/ready" ] || fail "the client failed: $(cat "$T/client.log")"
kill -STOP "$serve_pid"
CLEANUP_HOOKS+=("kill -CONT $serve_pid 2>/dev/null")
: > "$T/stopped"
wait_for "[ -e '$T/sent' ] || ! kill -0 $client 2>/dev/null" 20
# The DELETE, written to the control socket while the proxy is stopped.
"$PY" - "$T" <<'PYEOF' > "$T/delete.out" 2>&1 &
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1] + "/c.sock")
s.sendall(b"DELETE /v1/sandboxes/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
open(sys.argv[1] + "/deleted", "w").close()
print(s.recv(4096).split(b"\r\n")[0].decode())
PYEOF
del=$!
wait_for "[ -e '$T/deleted' ]" 10
kill -CONT "$serve_pid"
# The answer to the DELETE, not the "detaching" line: that is logged before the
# namespace's lockdown, and a request sent while that ran is one sent before the detach.
wait_for "grep -q 'HTTP/1.1 ' '$T/delete.out'" 10
: > "$T/detached"
wait "$client" || fail "the client failed: $(cat "$T/client.log")"
wait "$del" || true
assert_eq "$(sed -n 1p "$T/client.out")" "{\"HTTP/1.1 200 OK\": $N}" \
  "answers to requests sent before the detach, on resumed TLS connections"
assert_eq "$(sed -n 2p "$T/client.out")" "eof" "the request sent after the detach"
assert_eq "$(upq up '[r["path"] for r in reqs if r["path"] == "/late"]')" "[]" \
  "late requests the upstream got"
pass "a resumed handshake's request sent before a detach is answered; one sent after it is not"
