#!/usr/bin/env bash
# Attaching a sandbox whose credential callback is new to the daemon looks for open
# connections that reach it (77e4d77), but asks the kernel (a netlink route query,
# some 7 us) only about those that could: connections at the callback's port, to a
# callback on loopback. It asked about every connected upstream of every sandbox,
# whatever its port and whatever the callback, so with the 9,900 connections of the
# README's memory figure one attach held the loop some 65 ms, 30 times an attach's
# own cost, and every sandbox's traffic with it.
#
#   b: 20 kept-alive connections --> authproxy serve --> 127.0.0.1:UP (fake upstream)
#   attach c (no callback), a (callback on loopback, another port), n (callback named
#   by a host name at UP's port), each under strace: the route queries they cost.
. "$(dirname "$0")/lib.sh"
. "$SRC/tests/adversarial/adv_lib.sh"
require_cmd strace

N=20
start_upstream up
start_callback
serve_start
echo "{ \"dns\": { \"remap\": { \"up.example\": \"127.0.0.1:$up_PORT\" } } }" > "$T/b.json"
echo '{}' > "$T/c.json"
cat > "$T/a.json" <<EOF
{ "callback": { "url": "http://127.0.0.1:$CB/creds", "match_hosts": ["*.corp.example"] } }
EOF
cat > "$T/n.json" <<EOF
{ "callback": { "url": "http://creds.internal.example:$up_PORT/creds",
                "match_hosts": ["*.corp.example"] } }
EOF
NSB=$(make_netns cab)
ctl attach b --netns "/var/run/netns/$NSB" --config "$T/b.json" > /dev/null

# N connections that each had an answer (their upstreams are connected), held open
# until $T/done exists; then one more request on each: what is still open.
cat > "$T/client.py" <<'PYEOF'
import os, socket, sys, time
t, n = sys.argv[1], int(sys.argv[2])
def ask(s):
    s.sendall(b"GET /?keep=1 HTTP/1.1\r\nHost: up.example\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        d = s.recv(4096)
        if not d:
            return "closed"
        got += d
    return got.split(b"\r\n")[0].decode()
socks = [socket.create_connection(("up.example", 8080), timeout=5) for _ in range(n)]
print(" ".join(sorted(set(ask(s) for s in socks))), flush=True)
open(os.path.join(t, "opened"), "w").close()
for _ in range(600):
    if os.path.exists(os.path.join(t, "done")):
        break
    time.sleep(0.05)
out = []
for s in socks:
    try:
        out.append(ask(s))
    except OSError as e:
        out.append(type(e).__name__)
print(" ".join(sorted(set(out))), flush=True)
PYEOF
ip netns exec "$NSB" "$PY" "$T/client.py" "$T" "$N" > "$T/client.out" 2> "$T/client.log" &
CLIENT=$!
PIDS+=($CLIENT)
wait_for "[ -e '$T/opened' ]" 20

# queries NAME CONFIG: attaches sandbox NAME under strace; prints the route queries
# (RTM_GETROUTE) the daemon sent meanwhile.
queries() {
  local ns st
  ns=$(make_netns "ca$1")
  strace -f -qq -p "$serve_pid" -e trace=sendto,sendmsg -e signal=none -s 64 \
    -o "$T/strace-$1.out" 2> "$T/strace-$1.log" &
  st=$!
  PIDS+=($st)
  # strace has stopped every thread once it reports nothing more to attach.
  wait_for "[ -e /proc/$st ] && grep -qx \"TracerPid:.$st\" /proc/$serve_pid/status" 10
  ctl attach "$1" --netns "/var/run/netns/$ns" --config "$2" > /dev/null
  ctl health > /dev/null
  kill "$st"
  wait "$st" 2>/dev/null || true
  grep -c RTM_GETROUTE "$T/strace-$1.out" || true
}
base=$(queries c "$T/c.json")
assert_eq "$(queries a "$T/a.json")" "$base" \
  "route queries attaching a callback on loopback at another port than the open connections'"
assert_eq "$(queries n "$T/n.json")" "$base" \
  "route queries attaching a callback named by a host name at the open connections' port"
: > "$T/done"
wait "$CLIENT" || fail "the client failed: $(cat "$T/client.log")"
assert_eq "$(cat "$T/client.out")" "HTTP/1.1 200 OK
HTTP/1.1 200 OK" "the connections' answers, before and after the attaches"
pass "an attach asks the kernel only about connections a new callback could be reached by"
