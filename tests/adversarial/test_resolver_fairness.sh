#!/usr/bin/env bash
# Sandboxes make the daemon resolve names whose servers never answer: each
# getaddrinfo holds a slot of libuv's pool (half of its threads, shared by every
# sandbox of the daemon) for the whole resolv.conf timeout (30 s here). Another
# sandbox of the same daemon must still have its own names resolved (invariant I8:
# one sandbox cannot starve another). The proxy used to hand every resolution to the
# pool at once, so six such requests from box-a left box-b's lookup queued behind
# them until box-b's connect timeout (10 s) answered it 504. With one lookup per
# sandbox, two such sandboxes still took both slots of libuv's default pool (4
# threads); `serve` now sizes it at 32, 16 lookups.
#
#   ap-a-PID, ap-c-PID (6 requests each to api.example.com, remapped to
#                  \        hang.slow.test: never answered)
#                   > authproxy serve (in $HNS) --getaddrinfo--> fake resolver
#                  /                               --> fake upstream (fast.test)
#   ap-b-PID (curl api.example.com, remapped to fast.test)
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start --answer fast.test=127.0.0.1 --silent slow.test
host_ns_ipv4
# The longest timeout glibc allows: a silent lookup holds its thread this long.
printf 'nameserver 127.0.0.1\noptions attempts:1 timeout:30\n' > "$T/host-resolv.conf"
hupstream up
NSA=$(make_netns a)
NSB=$(make_netns b)
NSC=$(make_netns c)

hserve_start --connect-timeout 10

cat > "$T/a.json" <<EOF
{ "dns": { "remap": { "api.example.com": "hang.slow.test:80" } } }
EOF
cat > "$T/b.json" <<EOF
{ "dns": { "remap": { "api.example.com": "fast.test:$up_PORT" } } }
EOF
ctl attach box-a --netns "/var/run/netns/$NSA" --config "$T/a.json" >/dev/null
ctl attach box-b --netns "/var/run/netns/$NSB" --config "$T/b.json" >/dev/null
ctl attach box-c --netns "/var/run/netns/$NSC" --config "$T/a.json" >/dev/null

# box-a: six requests whose upstream name is never answered, kept open.
cat > "$T/hang.py" <<'PYEOF'
import socket, sys, time
socks = []
for i in range(6):
    s = socket.create_connection(("api.example.com", 80), timeout=10)
    s.sendall(b"GET /hang%d HTTP/1.1\r\nHost: api.example.com\r\n\r\n" % i)
    socks.append(s)
open(sys.argv[1], "w").close()
time.sleep(60)
PYEOF
ip netns exec "$NSA" "$PY" "$T/hang.py" "$T/a-sent" > "$T/hang.log" 2>&1 &
PIDS+=($!)
ip netns exec "$NSC" "$PY" "$T/hang.py" "$T/c-sent" > "$T/hang-c.log" 2>&1 &
PIDS+=($!)
wait_for "[ -e '$T/a-sent' ] && [ -e '$T/c-sent' ]"
# The proxy is resolving box-a's and box-c's names (a lookup each, at once).
wait_for "[ \"\$(resolved 'len([q for q in qs if q.get(\"name\") == \"hang.slow.test\"])')\" -ge 2 ]"

out=$(ip netns exec "$NSB" curl -sS --max-time 25 -o /dev/null -w '%{http_code}' \
  http://api.example.com/from-b 2>&1) || true
assert_eq "$out" "200" "box-b's request while box-a's and box-c's names hang"
assert_eq "$(upq up '[r["path"] for r in reqs]')" "$(jlist /from-b)" "upstream requests"
pass "sandboxes whose names never resolve do not hold up another sandbox's"
