#!/usr/bin/env bash
# A detach drains a guest's connections too (traffic that entered the sandbox through
# an interface, captured in prerouting): a request in flight gets its answer, a
# kept-alive connection its FIN. The lockdown table that replaces the redirects let
# only loopback through, so the guest's packets to the proxy were dropped on their
# way in and the proxy's answers on their way out: the answer the proxy wrote (and
# logged as sent) never arrived. New connections must still get nowhere.
#
#   ap-dgu-PID (peer, unused)   ap-dgs-PID (sandbox)                 ap-dgg-PID (guest)
#   up1 10.199.1.2 ------------ up0 10.199.1.1   gw0 10.199.2.1 ---- g0 10.199.2.2
#                               attached to serve (redirect,        default via gw0
#                               then tproxy)
. "$(dirname "$0")/lib.sh"
. "$SRC/tests/adversarial/adv_lib.sh"

SBX=ap-dgs-$$ GST=ap-dgg-$$
uplink_topology "$SBX" ap-dgu-$$ "$GST"
start_upstream up
cat > "$T/cfg.json" <<EOF2
{ "dns": { "remap": { "plain.example.com": "127.0.0.1:$up_PORT" } } }
EOF2

# The guest names an address outside every namespace here (TEST-NET-2); the proxy
# dials the name in Host.
cat > "$T/client.py" <<'PYEOF'
import json, os, socket, sys, time
T = sys.argv[1]
DST = ("198.51.100.7", 80)
def answer(s):
    got = b""
    while b"\r\n\r\n" not in got:
        d = s.recv(65536)
        if not d:
            return got
        got += d
    return got
idle = socket.create_connection(DST, timeout=5)
idle.sendall(b"GET /first HTTP/1.1\r\nHost: plain.example.com\r\n\r\n")
answer(idle)
busy = socket.create_connection(DST, timeout=5)
busy.sendall(b"GET /slow?delay=1 HTTP/1.1\r\nHost: plain.example.com\r\n\r\n")
open(T + "/sent", "w").close()
for _ in range(200):
    if os.path.exists(T + "/detached"):
        break
    time.sleep(0.025)
out = {}
try:
    out["busy"] = answer(busy).split(b"\r\n")[0].decode()
except OSError as e:
    out["busy"] = type(e).__name__
try:
    out["idle"] = "eof" if idle.recv(65536) == b"" else "data"
except OSError as e:
    out["idle"] = type(e).__name__
try:
    socket.create_connection(DST, timeout=1)
    out["new"] = "connected"
except OSError as e:
    out["new"] = "refused"
print(json.dumps(out, sort_keys=True))
PYEOF

for mode in redirect tproxy; do
  rm -rf "$T/state" "$T/sent" "$T/detached"
  : > "$T/up.jsonl"
  serve_start --drain-timeout 10 --capture "$mode"
  ctl attach box --netns "/var/run/netns/$SBX" --config "$T/cfg.json" > /dev/null
  ip netns exec "$GST" "$PY" "$T/client.py" "$T" > "$T/client.out" 2> "$T/client.log" &
  client=$!
  wait_for "[ -e '$T/sent' ] && grep -q '\"target\": \"/slow' '$T/up.jsonl'"
  ctl detach box > /dev/null
  touch "$T/detached"
  wait "$client" || fail "the client failed: $(cat "$T/client.log")"
  assert_eq "$(cat "$T/client.out")" \
    '{"busy": "HTTP/1.1 200 OK", "idle": "eof", "new": "refused"}' \
    "$mode: the guest's request in flight, its idle connection and a new one, after the detach"
  assert_eq "$(grep -c '"event": "conn"' "$T/up.jsonl")" 2 "$mode: connections the upstream saw"
  kill "$serve_pid"
  wait "$serve_pid" || true
  pass "$mode: a detach drains a guest's connections"
done
