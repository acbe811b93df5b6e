#!/usr/bin/env bash
# A detach (DELETE) drains the sandbox's connections (--drain-timeout): a request in
# flight gets its answer, a kept-alive connection its FIN. The lockdown table that
# replaces the redirects had neither a nat chain nor a rule using conntrack, so the
# kernel stopped translating the connections redirected before it: the answer the
# proxy wrote (and logged as sent, status 200) was reset, the client waited out its
# timeout. New connections must still get nowhere.
#
#   ap-dd-PID: client --nft--> authproxy serve (detached mid-request) --> upstream
. "$(dirname "$0")/lib.sh"
. "$SRC/tests/adversarial/adv_lib.sh"

start_upstream up
serve_start --drain-timeout 10 --log "$T/audit.jsonl"
wait_for "[ -S '$T/c.sock' ] && ctl health >/dev/null 2>&1"
cat > "$T/cfg.json" <<EOF2
{ "dns": { "remap": { "plain.example.com": "127.0.0.1:$up_PORT" } } }
EOF2
ns=$(make_netns dd)
ctl attach box --netns "/var/run/netns/$ns" --config "$T/cfg.json" > /dev/null

ip netns exec "$ns" "$PY" - "$T" > "$T/client.out" 2> "$T/client.log" <<'PYEOF' &
import json, os, socket, sys, time
T = sys.argv[1]
def answer(s):
    got = b""
    while b"\r\n\r\n" not in got:
        d = s.recv(65536)
        if not d:
            return got
        got += d
    return got
idle = socket.create_connection(("plain.example.com", 80), timeout=5)
idle.sendall(b"GET /first HTTP/1.1\r\nHost: plain.example.com\r\n\r\n")
answer(idle)
busy = socket.create_connection(("plain.example.com", 80), timeout=5)
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
    socket.create_connection(("plain.example.com", 80), timeout=1)
    out["new"] = "connected"
except OSError as e:
    out["new"] = "refused"
print(json.dumps(out, sort_keys=True))
PYEOF
client=$!
wait_for "[ -e '$T/sent' ] && grep -q '\"target\": \"/slow' '$T/up.jsonl'"
ctl detach box > /dev/null
touch "$T/detached"
wait "$client" || fail "the client failed: $(cat "$T/client.log")"
assert_eq "$(cat "$T/client.out")" \
  '{"busy": "HTTP/1.1 200 OK", "idle": "eof", "new": "refused"}' \
  "the request in flight, the idle connection and a new one, after the detach"
assert_eq "$(grep -c '"event": "conn"' "$T/up.jsonl")" 2 "connections the upstream saw"
pass "a detach drains the connections open; new ones get nowhere"
