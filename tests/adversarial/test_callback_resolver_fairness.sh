#!/usr/bin/env bash
# A sandbox's callback calls resolve the callback's host name on libuv's pool, like
# its upstream names. When that name's server does not answer, each call's lookup
# holds a pool thread for the resolver's whole timeout, and a sandbox that asks for
# many hosts its callback covers starts a call (and a lookup) for each. Another
# sandbox of the same daemon must still have its own names resolved (invariant I8).
#
#   ap-a-PID (20 requests to h0..h19.corp.example: a callback call each, whose
#            \ host, cb.slow.test, is never answered)
#             > authproxy serve (in $HNS) --getaddrinfo--> fake resolver
#            /                              --> fake upstream (fast.test)
#   ap-b-PID (curl api.example.com, remapped to fast.test)
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start --answer fast.test=127.0.0.1 --silent slow.test
host_ns_ipv4
# A silent lookup holds its thread 5 s, longer than box-b's connect timeout.
printf 'nameserver 127.0.0.1\noptions attempts:1 timeout:5\n' > "$T/host-resolv.conf"
hupstream up
NSA=$(make_netns a)
NSB=$(make_netns b)

hserve_start --connect-timeout 3

cat > "$T/a.json" <<EOF
{ "callback": { "url": "http://cb.slow.test:9/creds", "match_hosts": ["*.corp.example"],
                "allow_plain_http": true, "timeout_ms": 25000 } }
EOF
cat > "$T/b.json" <<EOF
{ "dns": { "remap": { "api.example.com": "fast.test:$up_PORT" } } }
EOF
ctl attach box-a --netns "/var/run/netns/$NSA" --config "$T/a.json" >/dev/null
ctl attach box-b --netns "/var/run/netns/$NSB" --config "$T/b.json" >/dev/null

# box-a: twenty requests to hosts of the callback, each waiting for its call; kept open.
cat > "$T/hang.py" <<'PYEOF'
import socket, sys, time
socks = []
for i in range(20):
    h = "h%d.corp.example" % i
    s = socket.create_connection((h, 80), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % h.encode())
    socks.append(s)
open(sys.argv[1], "w").close()
time.sleep(60)
PYEOF
ip netns exec "$NSA" "$PY" "$T/hang.py" "$T/a-sent" > "$T/hang.log" 2>&1 &
PIDS+=($!)
wait_for "[ -e '$T/a-sent' ]"
# Every one of them has its call, which resolves the callback's host.
wait_for "[ \"\$(ctl metrics | awk '\$1 == \"authproxy_callback_calls_total\" { print \$2 }')\" = 20 ]"
wait_for "[ \"\$(resolved 'len([q for q in qs if q.get(\"name\") == \"cb.slow.test\"])')\" -ge 1 ]"

out=$(ip netns exec "$NSB" curl -sS --max-time 10 -o /dev/null -w '%{http_code}' \
  http://api.example.com/from-b 2>&1) || true
assert_eq "$out" "200" "box-b's request while box-a's callback host hangs"
assert_eq "$(upq up '[r["path"] for r in reqs]')" "$(jlist /from-b)" "upstream requests"
pass "a sandbox's callback calls whose host never resolves do not hold up another sandbox's names"
