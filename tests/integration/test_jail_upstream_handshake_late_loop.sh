#!/usr/bin/env bash
# An intercepted upstream whose TLS handshake answer arrived in time, but waits unread
# behind a late event loop, is not a 504 upstream_timeout. Under a flood of one
# sandbox's new intercepted connections (a Go program's 1,000 goroutines with its
# default transport, which closes all but 2 idle connections per host and dials
# anew), upstream handshake reads wait their turn behind the sandbox's own (2 reads
# of connections being set up per sandbox per turn): 17 of 5,000 requests got 504
# upstream_timeout ("the destination did not answer in time") after --connect-timeout,
# while nginx on 127.0.0.1 had answered each handshake at once. libuv runs expired
# timers before it polls for input, so the dial's timer took the unread ServerHello
# for silence. Made deterministic here by stopping the proxy (SIGSTOP) while the
# upstream sends its ServerHello, past twice the connect timeout: the rest of the
# handshake has a whole connect timeout from when the proxy ran again (a bound of
# twice the connect timeout from the dial, counting the loop's lateness again, left
# an ASan build too little to finish it in, under load).
#
#   jail netns                                  host netns
#   curl https://api.example.com/  -nft->       authproxy jail (intercepts: a rule)
#                                                 -> held.py: TLS, handshake held until
#                                                    $T/go exists, then 200 "ok"
. "$(dirname "$0")/lib.sh"

make_ca "$T/ca" api.example.com
cat > "$T/held.py" <<'PYEOF'
import os, socket, ssl, sys, time
t, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
ctx.load_cert_chain(cert, key)
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(8)
with open(t + "/held.port.tmp", "w") as f:
    f.write("%d\n" % ls.getsockname()[1])
os.rename(t + "/held.port.tmp", t + "/held.port")
c, _ = ls.accept()
c.settimeout(30)
c.recv(1, socket.MSG_PEEK)          # the proxy's ClientHello is here: it is dialing
open(t + "/hello", "w").close()
for _ in range(600):                 # the test stops the proxy, then says go
    if os.path.exists(t + "/go"):
        break
    time.sleep(0.05)
s = ctx.wrap_socket(c, server_side=True, do_handshake_on_connect=False)
s.do_handshake()                     # ServerHello now, read when the proxy resumes
s.recv(65536)
s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
s.close()
PYEOF
"$PY" "$T/held.py" "$T" "$T/ca/server.pem" "$T/ca/server.key" 2> "$T/held.log" &
PIDS+=($!)
wait_for "[ -s '$T/held.port' ]"
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Team", "type": "plaintext", "value": "agents" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$(cat "$T/held.port")" } } }
EOF
"$AUTHPROXY" jail --config "$T/config.json" --upstream-ca "$T/ca/ca.pem" \
  --connect-timeout 2 --log "$T/audit.jsonl" --user nobody -- \
  curl -sS -m 30 -w " code=%{http_code}" https://api.example.com/ > "$T/out" 2> "$T/jail.log" &
jail_pid=$!
PIDS+=($jail_pid)
wait_for "[ -e '$T/hello' ]" 20
# The proxy sent its ClientHello and armed what is left of the 2 s dial: stop it
# before that runs out, let the upstream answer, and resume it past twice that.
kill -STOP "$jail_pid"
CLEANUP_HOOKS+=("kill -CONT $jail_pid 2>/dev/null")
: > "$T/go"
sleep 4.5
kill -CONT "$jail_pid"
wait "$jail_pid" || true
out=$(cat "$T/out")
assert_not_contains "$out" "upstream_timeout" "the answer blames the upstream (got: $out)"
assert_contains "$out" "ok code=200" "the answer (got: $out)"
pass "an upstream handshake answered in time is read after a late loop, not timed out"
