#!/usr/bin/env bash
# An upstream's addresses are raced (RFC 8305 section 5): while the first is still
# connecting, the next starts a short delay later, the first to connect wins and
# the others are closed. race.test has two AAAA records whose packets are dropped (a
# black-holed IPv6 path, sorted first by getaddrinfo), one AAAA record before them
# that the egress policy denies, and a working A record; with --connect-timeout 2
# the dial has two seconds for all of them. The proxy used to give each address an
# equal share of the timeout but at least 2 s, so the first black hole took the
# whole dial: a request got 504 and a tunnelled TLS connection was reset. Now both
# reach the A record, the black-holed attempts are closed once it answers (no socket
# of the proxy's left toward them), and the denied address is never dialed.
#
#   jail: client --nft--> authproxy (in $HNS) --getaddrinfo--> fake resolver
#     race.test  AAAA 2001:db8:beef::1      --> bh0 (egress.deny; counted, never sent)
#                AAAA 2001:db8:dead::1, ::2 --> bh0 (dropped in output, counted)
#                A    127.0.0.1             --> fake upstreams (HTTP, HTTPS) in $HNS
#     gone.test  AAAA 2001:db8:dead::3, ::4 --> bh0 (dropped)
#     cbhost.test AAAA 2001:db8:dead::5   --> bh0 (dropped)
#                 A    127.0.0.1           --> fake credential callback in $HNS
. "$(dirname "$0")/lib.sh"
. "$SRC/tests/adversarial/adv_lib.sh"

host_ns_start --answer race.test=2001:db8:beef::1 --answer race.test=2001:db8:dead::1 \
  --answer race.test=2001:db8:dead::2 --answer race.test=127.0.0.1 \
  --answer gone.test=2001:db8:dead::3 --answer gone.test=2001:db8:dead::4 \
  --answer cbhost.test=2001:db8:dead::5 --answer cbhost.test=127.0.0.1
# Non-loopback addresses of both families, so that getaddrinfo's AI_ADDRCONFIG asks
# for A and AAAA records; a routed black hole for the IPv6 ones (as in
# test_upstream_addresses.sh).
ip -n "$HNS" addr add 192.0.2.10/32 dev lo
ip -n "$HNS" addr add 2001:db8::10/128 dev lo nodad
ip -n "$HNS" link add bh0 type veth peer name bh1
ip -n "$HNS" link set bh0 up
ip -n "$HNS" link set bh1 up
ip -n "$HNS" -6 route add 2001:db8::/32 dev bh0 src 2001:db8::10
ip netns exec "$HNS" nft -f - <<'NFT'
table inet blackhole {
  counter dropped { }
  counter denied { }
  chain out {
    type filter hook output priority 0; policy accept;
    ip6 daddr 2001:db8:dead::/48 counter name "dropped" drop
    ip6 daddr 2001:db8:beef::/48 counter name "denied" drop
  }
}
NFT
host_counter_bh() {
  ip netns exec "$HNS" nft list counter inet blackhole "$1" |
    awk '/packets/ { for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }'
}
# hjail_bg OUT ERR ARGS... -- CMD: hjail in the background as the jail's own pid
# (jail_pid), which the cleanup can end.
hjail_bg() {
  local out=$1 err=$2
  shift 2
  ip netns exec "$HNS" unshare -m --propagation private \
    sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$T/host-resolv.conf" \
    "$AUTHPROXY" jail "$@" > "$out" 2> "$err" &
  jail_pid=$!
  PIDS+=($jail_pid)
}
make_ca "$T/ca" tls.example.com
hupstream up
hupstream tup "$T/ca/server.pem" "$T/ca/server.key"
cat > "$T/config.json" <<EOF2
{ "dns": { "remap": { "plain.example.com": "race.test:$up_PORT",
                      "tls.example.com": "race.test:$tup_PORT",
                      "gone.example.com": "gone.test:$up_PORT" } },
  "egress": { "deny": ["2001:db8:beef::/48"] } }
EOF2

# The clients below end with answered_then_wait(t), which CLIENT_END, put before
# their Python, defines: the file answered, then up to 10 s for the file looked. look_while_open
# LOG waits for answered, records the proxy's sockets toward the black holes in any
# state while the client's connections are still open (lingering), lets the client
# end, and waits for the jail (whose log is $T/LOG).
CLIENT_END='
def answered_then_wait(t):
    open(t + "/answered", "w").close()
    for _ in range(200):
        if os.path.exists(t + "/looked"):
            break
        time.sleep(0.05)
'
look_while_open() {
  wait_for "[ -e '$T/answered' ] || ! kill -0 $jail_pid 2>/dev/null" 30
  [ -e "$T/answered" ] || fail "the client did not finish: $(cat "$T/out" "$T/$1")"
  lingering=$(ip netns exec "$HNS" ss -Htan dst 2001:db8::/32)
  touch "$T/looked"
  wait "$jail_pid" || fail "jail exited $?: $(cat "$T/$1")"
}

# The client reads both answers and, its connections still open (so that the proxy's
# attempts would still be open too, had they not been closed), waits (bounded) until
# the proxy's sockets were looked at.
hjail_bg "$T/out" "$T/jail.log" --config "$T/config.json" --connect-timeout 2 -- "$PY" -c "$CLIENT_END"'
import os, socket, ssl, sys, time
t = sys.argv[1]
s = socket.create_connection(("plain.example.com", 80), timeout=20)
s.sendall(b"GET /plain HTTP/1.1\r\nHost: plain.example.com\r\n\r\n")
print("plain", s.recv(4096).split(b"\r\n")[0].decode(), flush=True)
ctx = ssl.create_default_context(cafile=t + "/ca/ca.pem")
raw = socket.create_connection(("tls.example.com", 443), timeout=20)
try:
    tls = ctx.wrap_socket(raw, server_hostname="tls.example.com")
    tls.sendall(b"GET /tunnel HTTP/1.1\r\nHost: tls.example.com\r\n\r\n")
    print("tls", tls.recv(4096).split(b"\r\n")[0].decode(), flush=True)
except OSError as e:
    print("tls", type(e).__name__, e, flush=True)
answered_then_wait(t)
' "$T"
look_while_open jail.log
out=$(cat "$T/out")

assert_contains "$out" "plain HTTP/1.1 200 OK" \
  "a request to a name whose black-holed AAAA records come first, within a 2 s dial"
assert_contains "$out" "tls HTTP/1.1 200 OK" \
  "a tunnelled TLS connection to such a name, within a 2 s dial"
pass "a name's working address is raced beside its black-holed ones"
# The denied address comes first in the resolver's answer (and in getaddrinfo's
# order): allowed, it would be dialed first.
assert_eq "$(host_counter_bh denied)" "0" "packets toward the egress-denied address"
pass "an address the egress policy denies is never dialed"
[ "$(host_counter_bh dropped)" -gt 0 ] || fail "the black-holed AAAA address was never tried"
assert_eq "$lingering" "" "the proxy's sockets toward the black-holed addresses once answered"
pass "the attempts that lost the race are closed"
assert_eq "$(upq up 'sorted(r["path"] for r in reqs)')" "$(jlist /plain)" "requests at the upstream"
assert_eq "$(upq tup 'sorted(r["path"] for r in reqs)')" "$(jlist /tunnel)" \
  "requests at the TLS upstream"

# A connection closed while its attempts race (the sandbox resets it), and a dial
# whose attempts all go unanswered until the connect timeout ends them (504, the
# sandbox's connection kept): their attempts are closed with them.
rm -f "$T/answered" "$T/looked"
hjail_bg "$T/out" "$T/jail2.log" --config "$T/config.json" --connect-timeout 2 -- "$PY" -c "$CLIENT_END"'
import os, socket, struct, sys, time
t = sys.argv[1]
req = b"GET /gone HTTP/1.1\r\nHost: gone.example.com\r\n\r\n"
s = socket.create_connection(("gone.example.com", 80), timeout=20)
s.sendall(req)
time.sleep(0.5)  # both addresses dialed by now, on any but a very slow machine
s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
s.close()
s = socket.create_connection(("gone.example.com", 80), timeout=20)
s.sendall(req)
print("gone", s.recv(4096).split(b"\r\n")[0].decode(), flush=True)
answered_then_wait(t)
' "$T"
look_while_open jail2.log
assert_contains "$(cat "$T/out")" "gone HTTP/1.1 504" "a name none of whose addresses answer"
assert_eq "$lingering" "" "the proxy's sockets toward the black holes after the reset and the 504"
pass "attempts end with their connection and with the connect timeout"

# The jail's CMD ends while a connection's attempts race: the connection is closed
# with the sandbox, and its attempts with it (else they would hold the proxy until
# the kernel gave up on them, minutes later).
hjail_bg /dev/null "$T/jail3.log" --config "$T/config.json" --connect-timeout 60 -- "$PY" -c '
import socket, time
s = socket.create_connection(("gone.example.com", 80), timeout=20)
s.sendall(b"GET /gone HTTP/1.1\r\nHost: gone.example.com\r\n\r\n")
time.sleep(0.5)  # both addresses dialed by now, on any but a very slow machine
'
wait_for "! kill -0 $jail_pid 2>/dev/null" 20
wait "$jail_pid" || fail "jail exited $?: $(cat "$T/jail3.log")"
pass "attempts end with the sandbox"

# The credential callback's host, its black-holed AAAA record first: the call's
# connect attempts share its timeout (3 s by default), so the A record is reached in
# time. The callback client used to give the first address the whole timeout, and
# every call to such a host failed (502 callback_failed).
start_callback --in "$HNS"
cat > "$T/callback.json" <<EOF2
{ "callback": { "url": "http://cbhost.test:$(cat "$T/cb.port")/creds",
                "match_hosts": ["plain.example.com"], "allow_plain_http": true },
  "dns": { "remap": { "plain.example.com": "127.0.0.1:$up_PORT" } } }
EOF2
before=$(host_counter_bh dropped)
hjail_bg "$T/out" "$T/jail4.log" --config "$T/callback.json" -- curl -sS -m 20 \
  -o /dev/null -w '%{http_code}' http://plain.example.com/cb
wait_for "! kill -0 $jail_pid 2>/dev/null" 30
wait "$jail_pid" || fail "jail exited $?: $(cat "$T/jail4.log")"
assert_eq "$(cat "$T/out")" "200" "a request whose callback host has a black-holed AAAA first"
[ "$(host_counter_bh dropped)" -gt "$before" ] ||
  fail "the callback's black-holed AAAA address was never tried"
assert_eq "$(upq up 'hdr([r for r in reqs if r["path"] == "/cb"][0], "Authorization")')" \
  '["Bearer cb-1"]' "the callback's credential at the upstream"
pass "a callback host's working address is reached after a black-holed one"
