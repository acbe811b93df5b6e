#!/usr/bin/env bash
# Capture end to end with the real proxy: a sandbox whose runtime gave it an uplink,
# IPv6 flows, a guest behind the sandbox (REDIRECT and TPROXY), and fail-closed
# behaviour when the proxy dies (invariants I1, I7).
#
#   ap-upl-PID                ap-sbx-PID (the sandbox)                 ap-gst-PID
#   peer.py :7000             authproxy jail --netns                   guest: curl
#   10.199.1.2  up1 -------- up0 10.199.1.1   gw0 10.199.2.1 -------- g0 10.199.2.2
#   fd00:199:1::2            fd00:199:1::1     default via up1          default via gw0
#                            (the proxy dials from the host namespace: the uplink's
#                             peer is reachable only by leaking past the proxy)
. "$(dirname "$0")/lib.sh"

start_upstream up
SBX=$(make_netns sbx)
UPL=$(make_netns upl)
GST=$(make_netns gst)
ip link add up0 netns "$SBX" type veth peer name up1 netns "$UPL"
ip link add gw0 netns "$SBX" type veth peer name g0 netns "$GST"
ip -n "$SBX" addr add 10.199.1.1/24 dev up0
ip -n "$SBX" addr add fd00:199:1::1/64 dev up0 nodad
ip -n "$UPL" addr add 10.199.1.2/24 dev up1
ip -n "$UPL" addr add fd00:199:1::2/64 dev up1 nodad
ip -n "$SBX" addr add 10.199.2.1/24 dev gw0
ip -n "$GST" addr add 10.199.2.2/24 dev g0
for l in "$SBX up0" "$SBX gw0" "$UPL up1" "$GST g0"; do set -- $l; ip -n "$1" link set "$2" up; done
ip -n "$SBX" route add default via 10.199.1.2
ip -n "$SBX" -6 route add default via fd00:199:1::2
ip -n "$GST" route add default via 10.199.2.1
ip netns exec "$SBX" sysctl -qw net.ipv4.ip_forward=1

ip netns exec "$UPL" "$PY" "$TOOLS/peer.py" 10.199.1.2 7000 "$T/peer4.log" &
PIDS+=($!)
ip netns exec "$UPL" "$PY" "$TOOLS/peer.py" fd00:199:1::2 7000 "$T/peer6.log" &
PIDS+=($!)
wait_for "grep -q ready '$T/peer4.log' 2>/dev/null && grep -q ready '$T/peer6.log' 2>/dev/null"


api_config "sk-capture-$$"

# Everything the sandbox tries at once: TCP, UDP (incl. QUIC), ICMP, v4 and v6.
cat > "$T/probe.py" <<'PYEOF'
import socket, struct
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
def ping(a):
    try:
        if ":" in a:
            r = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            r.sendto(struct.pack("!BBHHH", 128, 0, 0, 1, 1) + b"leak", (a, 0))
        else:
            r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            m = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"leak"
            r.sendto(m[:2] + struct.pack("!H", csum(m)) + m[4:], (a, 0))
    except OSError:
        pass
def tcp(a):
    try:
        s = socket.create_connection((a, 7000), timeout=2); s.sendall(b"x"); s.recv(10); s.close()
    except OSError:
        pass
for a in ("10.199.1.2", "fd00:199:1::2"):
    tcp(a)
    fam = socket.AF_INET6 if ":" in a else socket.AF_INET
    u = socket.socket(fam, socket.SOCK_DGRAM)
    for port in (7000, 443):
        try:
            u.sendto(b"leak", (a, port))
        except OSError:
            pass
    ping(a)
PYEOF
# The control: before authproxy, the uplink carries TCP, UDP and ICMP, so the checks
# below that nothing arrives can fail.
ip netns exec "$SBX" "$PY" "$T/probe.py"
for kind in tcp udp icmp-echo; do
  wait_for "grep -q '^$kind' '$T/peer4.log' && grep -q '^$kind' '$T/peer6.log'" 5
done
: > "$T/peer4.log"; : > "$T/peer6.log"
pass "control: the uplink is open before authproxy attaches"

JAIL_ARGS=(--netns "/var/run/netns/$SBX" --config "$T/config.json" --secrets-dir "$T/secrets"
  --connect-timeout 2)
run() { "$AUTHPROXY" jail "${JAIL_ARGS[@]}" "$@"; }

out=$(run -- sh -c "$PY $T/probe.py; curl -sS http://api.example.com/v4; curl -sS -g -H 'Host: api.example.com' 'http://[2001:db8::7]/v6'; echo; nft list chain inet authproxy filter_output")
assert_contains "$out" '"path": "/v4"' "HTTP by name through the proxy"
assert_contains "$out" '"path": "/v6"' "HTTP over IPv6 through the proxy"
assert_eq "$(upq up 'hdr([r for r in reqs if r["path"] == "/v6"][0], "Authorization")')" \
  "$(jlist "Bearer sk-capture-$$")" "IPv6 flow injected like IPv4"
sleep 0.3  # packets in flight to the peer would land now; the peer logs on arrival
assert_eq "$(grep -cv ready "$T/peer4.log" || true)" "0" "IPv4 traffic leaked to the uplink: $(cat "$T/peer4.log")"
assert_eq "$(grep -cv ready "$T/peer6.log" || true)" "0" "IPv6 traffic leaked to the uplink: $(cat "$T/peer6.log")"
drops=$(echo "$out" | awk '/counter packets/ { n = $3 } END { print n + 0 }')
[ "$drops" -ge 6 ] || fail "the drop counter saw $drops packets (UDP and ICMP probes were sent)"
pass "TCP, UDP (incl. 443), ICMP, v4 and v6: nothing left past the proxy ($drops packets dropped)"

# After the jail, the namespace keeps a locked-down table: still nothing leaves.
ip netns exec "$SBX" "$PY" "$T/probe.py"
sleep 0.3
assert_eq "$(grep -cv ready "$T/peer4.log" "$T/peer6.log" | awk -F: '{ n += $2 } END { print n }')" "0" \
  "traffic leaked after the jail exited"
pass "after the jail exits the namespace stays closed"

# A guest behind the sandbox is captured in prerouting, by REDIRECT and by TPROXY.
for mode in redirect tproxy; do
  "$AUTHPROXY" jail "${JAIL_ARGS[@]}" --capture "$mode" -- sleep 60 > "$T/jail-$mode.log" 2>&1 &
  jpid=$!
  PIDS+=($jpid)
  wait_for "ip netns exec $SBX nft list table inet authproxy 2>/dev/null | grep 'chain nat_output' >/dev/null"
  wait_for "ip netns exec $SBX ss -Hltn | grep ':53 ' >/dev/null"
  : > "$T/up.jsonl"
  out=$(ip netns exec "$GST" curl -sS --max-time 5 -H 'Host: api.example.com' "http://198.51.100.7/guest-$mode")
  assert_contains "$out" "\"path\": \"/guest-$mode\"" "guest request via $mode"
  assert_eq "$(upq up 'hdr(reqs[-1], "Authorization")')" "$(jlist "Bearer sk-capture-$$")" "guest injected ($mode)"
  # The guest's DNS, to whatever server it asks, is answered by the sandbox's responder.
  ans=$(ip netns exec "$GST" "$PY" -c '
import socket, struct
q = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x03api\x07example\x03com\x00" + struct.pack("!HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(q, ("192.0.2.53", 53))
r = s.recv(512)
print(".".join(str(b) for b in r[-4:]))')
  case "$ans" in 198.18.*|198.19.*) ;; *) fail "guest DNS ($mode): got '$ans'" ;; esac
  kill -TERM "$jpid"
  wait "$jpid" || true
  pass "guest behind the sandbox captured by $mode (DNS answered $ans)"
done

# Fail closed: kill -9 the proxy while the sandbox is live. Connections are refused,
# and nothing reaches the uplink. (A killed jail cannot remove its temporary
# directory: it goes under $T.)
mkdir -p "$T/jailtmp"
TMPDIR=$T/jailtmp "$AUTHPROXY" jail "${JAIL_ARGS[@]}" -- sleep 60 > "$T/jail-kill.log" 2>&1 &
jpid=$!
PIDS+=($jpid)
wait_for "ip netns exec $SBX ss -Hltn | grep ':53 ' >/dev/null"
kill -KILL "$jpid"
wait "$jpid" 2>/dev/null || true
wait_for "! ip netns exec $SBX ss -Hltn | grep ':53 ' >/dev/null"
set +e
ip netns exec "$SBX" curl -sS --max-time 3 http://10.199.1.2:7000/ > "$T/curl-dead.out" 2>&1
rc=$?
set -e
[ $rc -ne 0 ] || fail "a connection succeeded with the proxy dead"
ip netns exec "$SBX" "$PY" "$T/probe.py"
sleep 0.3
assert_eq "$(grep -cv ready "$T/peer4.log" "$T/peer6.log" | awk -F: '{ n += $2 } END { print n }')" "0" \
  "traffic leaked with the proxy killed"
pass "proxy killed: connections fail, nothing leaves (curl: $(head -c 80 "$T/curl-dead.out"))"
