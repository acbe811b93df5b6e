#!/usr/bin/env bash
# netns/: the `inet authproxy` table, routes and sockets, in namespaces of our own.
#
#  Part 1: a sandbox with `lo` only.
#
#     ap-pln-PID: lo  (netns_tool attach: proxy listener, DNS responder, peer :7000 on lo)
#
#  Part 2: a sandbox with an uplink (default routes via a veth) and a guest behind it.
#
#     ap-up-PID                  ap-sbx-PID                        ap-gst-PID
#     peer :7000  up1 ---------- up0  netns_tool attach  gw0 ------ g0   default via gw0
#     10.199.1.2                 10.199.1.1   (default   10.199.2.1      10.199.2.2
#     fd00:199:1::2              fd00:199:1::1 via up1)  fd00:199:2::1   fd00:199:2::2
#
# Addresses such as 198.18.0.9, 8.8.8.8 and 2001:db8::1 are only ever dialled from
# inside a sandbox or its guest, where the rules capture or drop them.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

require_root
require_cmd ip nft
require_netns_tool
lib_init

PLN=ap-pln-$$
SBX=ap-sbx-$$
UP=ap-up-$$
GST=ap-gst-$$
QUICK=250 # ms to wait where silence is expected (the positive controls answer in <1 ms)

# last_counter NS CHAIN: packets of the chain's final `counter drop`.
last_counter() {
  in_ns "$1" nft list chain inet authproxy "$2" |
    awk '/counter packets/ { n = $3 } END { print n + 0 }'
}

# ruleset NS: the table without counter values, for comparisons.
ruleset() {
  in_ns "$1" nft list table inet authproxy | sed -E 's/packets [0-9]+ bytes [0-9]+//'
}

# start_attach NS LOG ARGS...: netns_tool attach, waiting until it is serving.
start_attach() {
  local ns=$1 log=$2
  shift 2
  bg_start "$log" "$TOOL" attach "/var/run/netns/$ns" --lifetime 60 "$@"
  ATTACH_PID=$BG_PID
  wait_until 10 "netns_tool attach in $ns" file_has "$log" '^ready '
  PROXY_PORT=$(sed -nE 's/^ready proxy_port=([0-9]+).*/\1/p' "$log")
}

# netns_open / netns_create / netns_run on their own.
out=$("$TOOL" selftest) || fail "netns_tool selftest: $out"
check "netns_open, netns_create and netns_run behave ($(grep -c '^ok' <<<"$out") checks)" true

# ---------------------------------------------------------------- part 1: lo only
netns_new "$PLN"
host_localnet=$(cat /proc/sys/net/ipv4/conf/all/route_localnet)
start_attach "$PLN" "$LIB_TMP/pln.log"
check "the caller's namespace is untouched (route_localnet still $host_localnet)" \
  test "$(cat /proc/sys/net/ipv4/conf/all/route_localnet)" = "$host_localnet"
check "links: lo is up" file_has <(in_ns "$PLN" ip -o link show lo) '<([^>]*,)?UP[,>]'
check "links: IPv4 default route via lo src 127.0.0.1" \
  file_has <(in_ns "$PLN" ip -4 route show default) '^default dev lo .*src 127\.0\.0\.1'
check "links: IPv6 default route via lo src ::1" \
  file_has <(in_ns "$PLN" ip -6 route show default) '^default dev lo .*src ::1'
check "links: route_localnet left alone in a namespace with lo only (no traffic enters)" \
  test "$(in_ns "$PLN" cat /proc/sys/net/ipv4/conf/all/route_localnet)" = 0

# A listener of the sandbox's own on lo: loopback traffic must reach it untouched.
bg_start "$LIB_TMP/pln-peer.log" in_ns "$PLN" "$TOOL" peer 7000 --lifetime 60
wait_until 5 "peer in $PLN" file_has "$LIB_TMP/pln-peer.log" '^ready'

check "TCP to 198.18.0.9:443 reaches the proxy listener with its original destination" \
  answers "$PLN" 'orig 198\.18\.0\.9:443' tcp 198.18.0.9 443
check "TCP to [2001:db8::1]:80 reaches the proxy listener" \
  answers "$PLN" 'orig \[2001:db8::1\]:80' tcp 2001:db8::1 80
check "UDP DNS to 8.8.8.8:53 reaches the responder on 127.0.0.53" \
  answers "$PLN" 'dns q1' udp 8.8.8.8 53 q1
check "UDP DNS to [2001:db8::53]:53 reaches the responder on [::1]" \
  answers "$PLN" 'dns q2' udp 2001:db8::53 53 q2
check "TCP DNS to 8.8.8.8:53 reaches the responder" \
  answers "$PLN" 'dns-tcp' tcp 8.8.8.8 53
check "loopback TCP 127.0.0.1:7000 is untouched" answers "$PLN" 'peer' tcp 127.0.0.1 7000
check "loopback TCP [::1]:7000 is untouched" answers "$PLN" 'peer' tcp ::1 7000
check "loopback UDP 127.0.0.1:7000 is untouched" answers "$PLN" 'peer' udp 127.0.0.1 7000 x

before=$(last_counter "$PLN" filter_output)
check "UDP to 8.8.8.8:443 (QUIC) gets no answer" silent "$PLN" udp 8.8.8.8 443 quic
check "UDP to [2001:db8::1]:443 gets no answer" silent "$PLN" udp 2001:db8::1 443 quic
check "ICMP echo to 8.8.8.8 is dropped" silent "$PLN" ping 8.8.8.8
check "ICMPv6 echo to 2001:db8::1 is dropped" silent "$PLN" ping 2001:db8::1
after=$(last_counter "$PLN" filter_output)
check "filter_output drop counter grew by the 4 dropped packets ($before -> $after)" \
  test "$after" -ge $((before + 4))

# Re-install with the same ports: replaced atomically, still one table, rules once.
check "re-install succeeds" "$TOOL" install "/var/run/netns/$PLN" --proxy-port "$PROXY_PORT"
check "still exactly one authproxy table" \
  test "$(in_ns "$PLN" nft list tables | grep -c 'inet authproxy')" = 1
check "the redirect rule exists once per chain" \
  test "$(ruleset "$PLN" | grep -c "redirect to :$PROXY_PORT")" = 2
check "capture still works after the re-install" \
  answers "$PLN" 'orig 198\.18\.0\.9:443' tcp 198.18.0.9 443

# A batch the kernel refuses names the rule and leaves the installed table as it was.
good=$(ruleset "$PLN")
out=$("$TOOL" reject "/var/run/netns/$PLN") || fail "the kernel accepted an invalid rule"
check "the error names the refused rule: $out" \
  grep -q 'nf_tables rejected rule 99 of chain filter_output (test: redirect in a filter chain): ' <<<"$out"
check "a refused batch leaves the table unchanged" test "$(ruleset "$PLN")" = "$good"
out=$("$TOOL" noperm "/var/run/netns/$PLN" --proxy-port 1) ||
  fail "the kernel accepted a batch without CAP_NET_ADMIN"
check "without CAP_NET_ADMIN the whole batch is refused: $out" \
  grep -q 'nf_tables rejected the batch: Operation not permitted (needs CAP_NET_ADMIN.*) \[proxy_port 1, tproxy_port 0, dns_port 53\]$' <<<"$out"
check "... and the table is unchanged" test "$(ruleset "$PLN")" = "$good"

# Detach: a closed table, not none.
check "detach succeeds" "$TOOL" detach "/var/run/netns/$PLN"
check "after detach the table is the lockdown table" \
  file_has <(ruleset "$PLN") 'fib daddr type local accept'
check_not "after detach nothing redirects" file_has <(ruleset "$PLN") 'redirect|dnat'
check "after detach TCP to 198.18.0.9:443 fails" silent "$PLN" tcp 198.18.0.9 443
check "after detach DNS to 8.8.8.8 fails" silent "$PLN" udp 8.8.8.8 53 q
check "after detach loopback still works" answers "$PLN" 'peer' tcp 127.0.0.1 7000
check "remove deletes the table" "$TOOL" remove "/var/run/netns/$PLN"
check_not "no authproxy table is left" file_has <(in_ns "$PLN" nft list tables) authproxy
out=$("$TOOL" remove "/var/run/netns/$PLN" 2>&1) && fail "removing an absent table succeeded"
check "removing an absent table says so: $out" grep -q 'does not exist' <<<"$out"
bg_stop "$ATTACH_PID"

# ------------------------------------------------------- part 2: uplink and a guest
uplink_topology "$SBX" "$UP" "$GST"

PEER_LOG=$LIB_TMP/up-peer.log
bg_start "$PEER_LOG" in_ns "$UP" "$TOOL" peer 7000 --lifetime 60
wait_until 5 "peer in $UP" file_has "$PEER_LOG" '^ready'

# Positive controls: without the rules the uplink is reachable, so the checks below
# that expect silence can fail.
check "control: sandbox reaches the uplink peer over TCP" \
  answers "$SBX" 'peer' tcp 10.199.1.2 7000
check "control: sandbox reaches the uplink peer over UDP" \
  answers "$SBX" 'peer' udp 10.199.1.2 7000 x
check "control: sandbox pings the uplink peer" answers "$SBX" 'echo reply' ping 10.199.1.2
check "control: sandbox pings the uplink peer over IPv6" \
  answers "$SBX" 'echo reply' ping fd00:199:1::2
check "control: the guest pings the sandbox" answers "$GST" 'echo reply' ping 10.199.2.1
contacts=$(grep -c '^contact' "$PEER_LOG")

start_attach "$SBX" "$LIB_TMP/sbx.log"
check "the runtime's default route is kept" \
  file_has <(in_ns "$SBX" ip -4 route show default) 'via 10\.199\.1\.2'
check "sandbox TCP to the uplink peer is captured by the proxy" \
  answers "$SBX" 'orig 10\.199\.1\.2:7000' tcp 10.199.1.2 7000
check "sandbox TCP to [fd00:199:1::2]:7000 is captured by the proxy" \
  answers "$SBX" 'orig \[fd00:199:1::2\]:7000' tcp fd00:199:1::2 7000
check "sandbox TCP to 198.18.0.9:443 is captured" \
  answers "$SBX" 'orig 198\.18\.0\.9:443' tcp 198.18.0.9 443
check "sandbox UDP to the uplink peer is dropped" silent "$SBX" udp 10.199.1.2 7000 x
check "sandbox UDP to the uplink peer over IPv6 is dropped" \
  silent "$SBX" udp fd00:199:1::2 7000 x
check "sandbox ping to the uplink peer is dropped" silent "$SBX" ping 10.199.1.2
check "sandbox ping6 to the uplink peer is dropped" silent "$SBX" ping fd00:199:1::2
check "sandbox DNS to 8.8.8.8 is answered by the responder" \
  answers "$SBX" 'dns q3' udp 8.8.8.8 53 q3

# The guest: forwarded into the sandbox, captured in prerouting.
check "guest TCP to 198.18.0.9:443 is captured by REDIRECT" \
  answers "$GST" 'orig 198\.18\.0\.9:443' tcp 198.18.0.9 443
check "guest TCP to [2001:db8::1]:80 is captured by REDIRECT" \
  answers "$GST" 'orig \[2001:db8::1\]:80' tcp 2001:db8::1 80
check "guest DNS to 8.8.8.8:53 is answered by 127.0.0.53" \
  answers "$GST" 'dns q4' udp 8.8.8.8 53 q4
check "guest TCP DNS to 8.8.8.8:53 is answered by the responder" \
  answers "$GST" 'dns-tcp' tcp 8.8.8.8 53
check "guest TCP to the uplink peer is captured, not forwarded" \
  answers "$GST" 'orig 10\.199\.1\.2:7000' tcp 10.199.1.2 7000
fwd_before=$(last_counter "$SBX" filter_forward)
check "guest UDP to 8.8.8.8:443 is dropped" silent "$GST" udp 8.8.8.8 443 quic
check "guest UDP to the uplink peer is dropped" silent "$GST" udp 10.199.1.2 7000 x
check "guest ping to the uplink peer is dropped" silent "$GST" ping 10.199.1.2
in_ns "$SBX" sysctl -qw net.ipv4.ip_forward=1 # even with forwarding on
check "guest UDP to the uplink peer is dropped with ip_forward=1" \
  silent "$GST" udp 10.199.1.2 7000 x
check "filter_forward counted the guest's packets" \
  test "$(last_counter "$SBX" filter_forward)" -gt "$fwd_before"
in_ns_input_before=$(last_counter "$SBX" filter_input)
check "guest UDP to a sandbox address is dropped" silent "$GST" udp 10.199.2.1 7000 x
check "filter_input counted it" \
  test "$(last_counter "$SBX" filter_input)" -gt "$in_ns_input_before"
bg_stop "$ATTACH_PID"

# TPROXY for the guest; the sandbox's own traffic still goes through nat_output.
start_attach "$SBX" "$LIB_TMP/sbx-tproxy.log" --tproxy
check "TPROXY: fwmark rule installed" \
  file_has <(in_ns "$SBX" ip rule show) 'fwmark 0x4150 lookup 16720'
check "TPROXY: IPv6 fwmark rule installed" \
  file_has <(in_ns "$SBX" ip -6 rule show) 'fwmark 0x4150 lookup 16720'
check "TPROXY: local default route in table 16720" \
  file_has <(in_ns "$SBX" ip route show table 16720) '^local default dev lo'
check "TPROXY: guest TCP to 198.18.0.9:443 reaches the transparent listener" \
  answers "$GST" 'tproxy 198\.18\.0\.9:443' tcp 198.18.0.9 443
check "TPROXY: guest TCP to [2001:db8::1]:80 reaches the transparent listener" \
  answers "$GST" 'tproxy \[2001:db8::1\]:80' tcp 2001:db8::1 80
check "TPROXY: guest DNS still answered by 127.0.0.53" \
  answers "$GST" 'dns q5' udp 8.8.8.8 53 q5
check "TPROXY: guest TCP DNS still goes to the responder" \
  answers "$GST" 'dns-tcp' tcp 8.8.8.8 53
check "TPROXY: guest UDP to the uplink peer is dropped" silent "$GST" udp 10.199.1.2 7000 x
check "TPROXY: sandbox TCP still captured by nat_output" \
  answers "$SBX" 'orig 198\.18\.0\.9:443' tcp 198.18.0.9 443

# Detach with the uplink in place: still closed.
check "detach succeeds" "$TOOL" detach "/var/run/netns/$SBX"
check_not "detach removed the TPROXY fwmark rule" \
  file_has <(in_ns "$SBX" ip rule show) 'fwmark 0x4150'
check "after detach sandbox TCP to the uplink peer fails" silent "$SBX" tcp 10.199.1.2 7000
check "after detach sandbox UDP to the uplink peer fails" silent "$SBX" udp 10.199.1.2 7000 x
check "after detach sandbox ping to the uplink peer fails" silent "$SBX" ping 10.199.1.2
check "after detach the guest reaches nothing" silent "$GST" tcp 10.199.1.2 7000
check "nothing from the sandbox or the guest reached the uplink peer after attach" \
  test "$(grep -c '^contact' "$PEER_LOG")" = "$contacts"
bg_stop "$ATTACH_PID"

echo "all $LIB_CHECKS checks passed"
