#!/usr/bin/env bash
# A sandbox namespace with IPv6 disabled (net.ipv6.conf.*.disable_ipv6=1, as
# `docker run --sysctl net.ipv6.conf.all.disable_ipv6=1` or a Docker network without
# IPv6 leaves it): there is no ::1 and no IPv6 route via lo can be added, so the attach
# sets up and captures IPv4 only, through `jail --netns` and through `serve`, across a
# daemon restart (in TPROXY mode). Enabling IPv6 later (and giving it an uplink route)
# must not open a way out: the sandbox's IPv6 TCP is refused (redirected to an IPv6
# port nothing listens on), its UDP, DNS and ICMPv6 go nowhere, and a guest's IPv6 is
# not forwarded (no transparent IPv6 listener, so TPROXY leaves it to filter_forward).
#
#   ap-6up-PID                     ap-6sb-PID (IPv6 off, later on)       ap-6gs-PID
#   peer :7000, :53   up1 --- up0  jail --netns / serve's listeners  gw0 --- g0 guest
#   10.199.1.2                     10.199.1.1      default via up1       10.199.2.2
#   fd00:199:1::2                  fd00:199:1::1   (re-added once on)    fd00:199:2::2
#   route to 10.199.2.0/24 and fd00:199:2::/64 via the sandbox; forwarding on in it
#
#   host: authproxy serve, fake upstream 127.0.0.1:$up_PORT (api.example.com remapped)
set -euo pipefail
. "$(dirname "$0")/lib.sh"

require_cmd ip nft curl ss
require_netns_tool

SBX=ap-6sb-$$
UP=ap-6up-$$
GST=ap-6gs-$$
QUICK=250
STATE=$T/state
SOCK=$T/control.sock

# Packets filter_forward dropped.
forward_drops() {
  in_ns "$SBX" nft list chain inet authproxy filter_forward |
    sed -nE 's/.*counter packets ([0-9]+).*/\1/p'
}
contacts() { grep -c '^contact' "$T/peer7000.log" "$T/peer53.log" | awk -F: '{ s += $2 } END { print s }'; }
ipv6() {  # 0|1: net.ipv6.conf.{all,default,lo}.disable_ipv6 in SBX
  in_ns "$SBX" sysctl -qw "net.ipv6.conf.all.disable_ipv6=$1" \
    "net.ipv6.conf.default.disable_ipv6=$1" "net.ipv6.conf.lo.disable_ipv6=$1"
}
serve() {
  "$AUTHPROXY" serve --state-dir "$STATE" --control "$SOCK" -v "$@" >> "$T/serve.log" 2>&1 &
  SERVE_PID=$!
  PIDS+=($SERVE_PID)
  wait_for "[ -S '$SOCK' ] && '$AUTHPROXY' ctl --control '$SOCK' health >/dev/null 2>&1"
}
ctl() { "$AUTHPROXY" ctl --control "$SOCK" "$@"; }
# get PATH: a plain HTTP request from SBX to api.example.com; prints the status.
get() { in_ns "$SBX" curl -sS -m 5 -o /dev/null -w '%{http_code}' "http://api.example.com$1"; }
seen() { upq up "[hdr(r, 'X-Via') for r in reqs if r['path'] == '$1']"; }
# dnsq ADDR: an A query for pypi.org to ADDR:53 from SBX; prints the address answered.
dnsq() {
  in_ns "$SBX" "$PY" - "$1" <<'PYEOF'
import socket, struct, sys
q = struct.pack(">6H", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x04pypi\x03org\x00" + struct.pack(">2H", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(q, (sys.argv[1], 53))
a = s.recv(512)
if struct.unpack(">H", a[6:8])[0] >= 1:
    print(socket.inet_ntoa(a[-4:]))
PYEOF
}

uplink_topology "$SBX" "$UP" "$GST"
ip -n "$UP" route add 10.199.2.0/24 via 10.199.1.1
ip -n "$UP" -6 route add fd00:199:2::/64 via fd00:199:1::1
in_ns "$SBX" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
bg_start "$T/peer7000.log" in_ns "$UP" "$TOOL" peer 7000 --lifetime 60
bg_start "$T/peer53.log" in_ns "$UP" "$TOOL" peer 53 --lifetime 60
wait_until 5 "peers in $UP" file_has "$T/peer7000.log" '^ready'
wait_until 5 "peers in $UP" file_has "$T/peer53.log" '^ready'
# Controls, before any rule: the uplink peer answers over IPv6, so the silences
# checked after IPv6 is enabled again below can fail.
check "control: IPv6 TCP reaches the uplink peer" answers "$SBX" 'peer' tcp fd00:199:1::2 7000
check "control: IPv6 UDP reaches the uplink peer" answers "$SBX" 'peer' udp fd00:199:1::2 7000 x
check "control: IPv6 DNS reaches the uplink peer" answers "$SBX" 'peer' udp fd00:199:1::2 53 q
check "control: ICMPv6 reaches the uplink peer" answers "$SBX" 'echo reply' ping fd00:199:1::2
check "control: the guest's IPv6 TCP is forwarded to the uplink peer" \
  answers "$GST" 'peer' tcp fd00:199:1::2 7000
check "control: the guest's IPv6 UDP is forwarded to the uplink peer" \
  answers "$GST" 'peer' udp fd00:199:1::2 7000 x

ipv6 1
check "IPv6 is off in the sandbox: no ::1" test -z "$(ip -n "$SBX" -6 addr show dev lo)"

start_upstream up
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Via", "type": "plaintext", "value": "v4only-$$" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF

# ---- jail --netns: the jail's proxy in the IPv6-less namespace ------------------------
out=$("$AUTHPROXY" jail -v --netns "/var/run/netns/$SBX" --config "$T/config.json" -- \
  curl -sS -m 5 -o /dev/null -w '%{http_code}' http://api.example.com/jail 2> "$T/jail.log") ||
  fail "jail --netns in a namespace without IPv6: $(cat "$T/jail.log")"
check "jail: HTTP through the proxy over IPv4 (status $out)" test "$out" = 200
check "jail: the request carried the injected header" test "$(seen /jail)" = "[[\"v4only-$$\"]]"
check "jail: logs that only IPv4 is captured" \
  file_has "$T/jail.log" "has IPv6 disabled .*only IPv4 is captured"

# ---- serve: attach, HTTP, DNS, UDP and ICMP dropped -----------------------------------
mkdir -m 700 "$STATE"
serve
ctl attach box --netns "/var/run/netns/$SBX" --config "$T/config.json" > "$T/ca.pem" ||
  fail "attach to a namespace with IPv6 disabled: $(tail -n 3 "$T/serve.log")"
check "serve: the attach logs that only IPv4 is captured" \
  file_has "$T/serve.log" "sandbox box: /var/run/netns/$SBX has IPv6 disabled .*only IPv4 is captured"
check "serve: IPv4 listeners in the namespace" \
  test "$(in_ns "$SBX" ss -Hlntup -4 | grep -c authproxy)" = 3
check "serve: no IPv6 listener in the namespace" test -z "$(in_ns "$SBX" ss -Hlntu -6)"
check "serve: HTTP through the proxy over IPv4" test "$(get /serve)" = 200
check "serve: ... with the injected header" test "$(seen /serve)" = "[[\"v4only-$$\"]]"
# To the uplink peer's address: the peer listens on port 53 too, and does not speak DNS.
check "serve: a DNS query is answered with a synthetic address" \
  grep -Eq '^198\.1[89]\.' <<<"$(dnsq 10.199.1.2)"
# IPv6 on but lo without ::1: not taken for IPv6 disabled, the attach fails and says why.
BAD=$(make_netns 6bad)
ip -n "$BAD" -6 addr del ::1/128 dev lo
out=$(ctl attach bad --netns "/var/run/netns/$BAD" --config "$T/config.json" 2>&1) &&
  fail "attach to a namespace with IPv6 on and no ::1 succeeded"
check "serve: IPv6 on without ::1 fails the attach ($out)" \
  grep -q 'attach_failed: sandbox [^:]* was not attached: netns: add IPv6 default route dev lo src ::1: .*no address ::1' <<<"$out"
before=$(contacts)
check "serve: UDP to the uplink peer is dropped" silent "$SBX" udp 10.199.1.2 7000 x
check "serve: ICMP to the uplink peer is dropped" silent "$SBX" ping 10.199.1.2
check "serve: the uplink peer heard nothing" test "$(contacts)" = "$before"

# ---- restart, in TPROXY mode: re-attached, still IPv4 only ---------------------------
kill -KILL "$SERVE_PID"
wait "$SERVE_PID" 2>/dev/null || true
serve --capture tproxy
check "restart: the sandbox is re-attached" grep -q '"box"' <<<"$(ctl list)"
check "restart: logged IPv4 only again" \
  test "$(grep -c "sandbox box: .* has IPv6 disabled" "$T/serve.log")" = 2
check "restart: TPROXY routing for IPv4" grep -q 'fwmark 0x4150' <<<"$(ip -n "$SBX" rule)"
check "restart: HTTP through the proxy" test "$(get /restart)" = 200
check "restart: ... with the injected header" test "$(seen /restart)" = "[[\"v4only-$$\"]]"

# ---- IPv6 enabled after the attach, with an uplink address and route -----------------
ipv6 0
ip -n "$SBX" addr add fd00:199:1::1/64 dev up0 nodad
ip -n "$SBX" -6 route add default via fd00:199:1::2
ip -n "$SBX" addr add fd00:199:2::1/64 dev gw0 nodad
wait_until 5 "::1 on lo of $SBX" grep -q '::1' <<<"$(ip -n "$SBX" -6 addr show dev lo)"
before=$(contacts)
out=$(in_ns "$SBX" "$TOOL" tcp fd00:199:1::2 7000 2>&1 || true)
check "IPv6 on: TCP to the uplink peer is refused ($out)" test "$out" = "connect: Connection refused"
check "IPv6 on: TCP to 2001:db8::1:443 is refused too" \
  test "$(in_ns "$SBX" "$TOOL" tcp 2001:db8::1 443 2>&1 || true)" = "connect: Connection refused"
check "IPv6 on: UDP to the uplink peer gets no answer" silent "$SBX" udp fd00:199:1::2 7000 x
check "IPv6 on: DNS to the uplink peer gets no answer" silent "$SBX" udp fd00:199:1::2 53 q
check "IPv6 on: DNS over TCP to the uplink peer gets no answer" silent "$SBX" tcp fd00:199:1::2 53
check "IPv6 on: DNS to [::1] gets no answer" silent "$SBX" udp ::1 53 q
check "IPv6 on: ICMPv6 to the uplink peer is dropped" silent "$SBX" ping fd00:199:1::2
fwd=$(forward_drops)
check "IPv6 on: the guest's IPv6 TCP to the uplink peer is not forwarded" \
  silent "$GST" tcp fd00:199:1::2 7000
check "IPv6 on: ... filter_forward dropped it" test "$(forward_drops)" -gt "$fwd"
check "IPv6 on: the guest's IPv6 UDP to the uplink peer is not forwarded" \
  silent "$GST" udp fd00:199:1::2 7000 x
check "IPv6 on: the guest's IPv6 DNS gets no answer" silent "$GST" udp fd00:199:1::2 53 q
check "IPv6 on: the uplink peer heard nothing ($before -> $(contacts) contacts)" \
  test "$(contacts)" = "$before"
check "IPv6 on: IPv4 HTTP still goes through the proxy" test "$(get /v6on)" = 200

# ---- IPv6 off on lo only: the uplink keeps its IPv6 address and default route -------
in_ns "$SBX" sysctl -qw net.ipv6.conf.lo.disable_ipv6=1
check "lo off: the uplink still has its IPv6 default route" \
  grep -q 'default via fd00:199:1::2' <<<"$(ip -n "$SBX" -6 route)"
out=$(NETNS_TOOL_WAIT_MS=$QUICK in_ns "$SBX" "$TOOL" tcp fd00:199:1::2 7000 2>&1 || true)
check "lo off: TCP to the uplink peer gets nowhere ($out)" test "$out" != peer
check "lo off: UDP to the uplink peer gets no answer" silent "$SBX" udp fd00:199:1::2 7000 x
check "lo off: the uplink peer heard nothing ($before -> $(contacts) contacts)" \
  test "$(contacts)" = "$before"

# ---- IPv6 on again and a restart: attached with both ---------------------------------
in_ns "$SBX" sysctl -qw net.ipv6.conf.lo.disable_ipv6=0
kill -KILL "$SERVE_PID"
wait "$SERVE_PID" 2>/dev/null || true
serve
check "IPv6 on, restart: re-attached without the IPv4-only line" \
  test "$(grep -c "sandbox box: .* has IPv6 disabled" "$T/serve.log")" = 2
check "IPv6 on, restart: IPv6 listeners in the namespace" \
  test "$(in_ns "$SBX" ss -Hlntup -6 | grep -c authproxy)" = 3
check "IPv6 on, restart: HTTP through the proxy" test "$(get /dual)" = 200

echo "all $LIB_CHECKS checks passed"
