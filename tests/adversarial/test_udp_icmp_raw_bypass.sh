#!/usr/bin/env bash
# Getting data out of a sandbox that has an uplink (a runtime's veth) without a TCP
# connection through the proxy (invariant I7): UDP (plain, QUIC-shaped Initial to
# 443, broadcast, multicast), DNS to an outside resolver address over UDP and TCP,
# ICMP and ICMPv6 echo, IPv6 link-local, raw IPv4 with a hand-built header, raw
# sockets of an unassigned protocol, raw IPv6 UDP, UDP to loopback addresses from a
# socket bound to the uplink (SO_BINDTODEVICE needs no privilege: routed out of the
# uplink, not to lo); each probe carries a marker, and a
# witness on the peer's side of the link sniffs every frame for it.
#
# Root in the sandbox also tries an ICMPv6 neighbor solicitation carrying the marker
# in an option and a bare Ethernet frame (AF_PACKET). Neither passes through the IP
# rules that capture everything else: neighbor discovery must pass for the link to
# work, and packet sockets sit below netfilter's IP hooks. With CAP_NET_RAW and an
# uplink they reach the peer (printed as a note); the test asserts that without
# CAP_NET_RAW (root with it dropped, or an ordinary user) they cannot be sent at all:
# a runtime that gives its sandbox an uplink must not grant CAP_NET_RAW (nor
# CAP_NET_ADMIN, see test_nft_flush.sh).
#
#   $HNS (host stand-in)      $SBX (the sandbox)                     $UPL (uplink peer)
#   authproxy jail --netns    up0 10.199.1.1, fd00:199:1::1 ------- up1 10.199.1.2,
#   fake resolver (watched)   default via up1 (v4 and v6)             fd00:199:1::2, fe80::..
#                                                                     witness.py sniffs up1
#                                                                     peer.py on :7000, :53
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start
SBX=$(make_netns sbx)
UPL=$(make_netns upl)
ip link add up0 netns "$SBX" type veth peer name up1 netns "$UPL"
ip -n "$SBX" addr add 10.199.1.1/24 dev up0
ip -n "$SBX" addr add fd00:199:1::1/64 dev up0 nodad
ip -n "$UPL" addr add 10.199.1.2/24 dev up1
ip -n "$UPL" addr add fd00:199:1::2/64 dev up1 nodad
ip -n "$SBX" link set up0 up
ip -n "$UPL" link set up1 up
ip -n "$SBX" route add default via 10.199.1.2
ip -n "$SBX" -6 route add default via fd00:199:1::2
# Link-local addresses come up after duplicate address detection.
wait_for "ip -n $UPL -6 addr show dev up1 scope link | grep -q 'inet6 fe80' &&
  ! ip -n $UPL -6 addr show | grep -q tentative && ! ip -n $SBX -6 addr show | grep -q tentative"
PEER_LL=$(ip -n "$UPL" -6 addr show dev up1 scope link | awk '/inet6/ { sub("/.*", "", $2); print $2 }')

M="LEAK$$"
ip netns exec "$UPL" "$PY" "$TOOLS/witness.py" up1 "$M" "$T/witness.log" &
PIDS+=($!)
for port in 7000 53; do
  ip netns exec "$UPL" "$PY" "$TOOLS/peer.py" :: "$port" "$T/peer$port.log" &
  PIDS+=($!)
done
wait_for "grep -q ready '$T/witness.log' 2>/dev/null && grep -q ready '$T/peer7000.log' 2>/dev/null &&
  grep -q ready '$T/peer53.log' 2>/dev/null"

echo '{ "egress": { "default": "deny" } }' > "$T/config.json"
# probes.sh RUN: every probe, tagged with the run's name.
printf '#!/bin/sh\nexec "%s" "%s/leak_probes.py" "%s" "%s-$1" 10.199.1.2 fd00:199:1::2 "%s" up0\n' \
  "$PY" "$TOOLS" "$TOOLS" "$M" "$PEER_LL" > "$T/probes.sh"
chmod 755 "$T/probes.sh"
ALL=(tcp4 tcp6 tcp6_ll udp4 udp6 udp6_ll quic4 quic6 udp4_53_dns udp6_53_dns udp6_ll_53_dns
  udp4_53_junk tcp4_53_dns tcp6_53_dns icmp4 icmp6 icmp6_ll raw4_hdrincl raw4_proto253 raw6_udp
  raw6_proto253 bcast4 mcast4 mcast6 udp4_lo_bound udp4_lo2_bound udp6_lo_bound nd_ns af_packet)
# Prints the probes whose marker the witness saw for a run, sorted.
leaked() {
  sleep 0.3  # frames in flight on the veth arrive now; the witness logs on arrival
  "$PY" - "$T/witness.log" "$M-$1-" <<'PYEOF'
import json, sys
seen = set()
for l in open(sys.argv[1]):
    tag = json.loads(l).get("tag", "")
    if tag.startswith(sys.argv[2]):
        seen.add(tag[len(sys.argv[2]):].split("-", 1)[0])
print(" ".join(sorted(seen)))
PYEOF
}
sorted() { printf '%s\n' "$@" | sort | tr '\n' ' ' | sed 's/ $//'; }

# The control: without authproxy, every probe reaches the peer, so each check below
# can fail.
ip netns exec "$SBX" "$T/probes.sh" control > "$T/control.out"
wait_for "[ \"\$(leaked control)\" = \"$(sorted "${ALL[@]}")\" ]" 5
pass "control: all ${#ALL[@]} probes reach the uplink peer without authproxy"

# Root inside the jail: nothing but the two link-level shapes gets out; DNS to any
# outside address is answered by the sandbox's responder.
hjail --netns "/var/run/netns/$SBX" --config "$T/config.json" -- "$T/probes.sh" root > "$T/root.out"
load_results "$T/root.out"
got=$(leaked root)
assert_eq "$(sorted $(printf '%s\n' $got | grep -vx 'nd_ns\|af_packet'))" "" "probes that left the sandbox as root"
# (A query to a link-local address is redirected too, but cannot be answered from
# ::1 across scopes: it is dropped, as the leak check above shows.)
for c in udp4_53_dns udp6_53_dns tcp4_53_dns tcp6_53_dns; do
  case "$(result "$T/root.out" $c addrs)" in
    '["198.1'[89]*) ;;
    *) fail "$c: not answered by the sandbox's responder: $(grep "\"$c\"" "$T/root.out")" ;;
  esac
done
for c in tcp4 tcp6 tcp6_ll; do
  assert_not_contains "$(result "$T/root.out" $c sent)" "ok" "$c: under default deny"
done
pass "root: TCP denied, UDP/QUIC/ICMP/raw/broadcast/multicast dropped (v4, v6, link-local), DNS answered locally"
echo "note: with CAP_NET_RAW and an uplink, these reached the peer: ${got:-none}"

# Without CAP_NET_RAW neither link-level shape can even be sent.
hjail --netns "/var/run/netns/$SBX" --config "$T/config.json" -- \
  setpriv --bounding-set -net_raw -- "$T/probes.sh" noraw > "$T/noraw.out"
hjail --netns "/var/run/netns/$SBX" --config "$T/config.json" --user nobody -- \
  "$T/probes.sh" nobody > "$T/nobody.out"
for run in noraw nobody; do
  load_results "$T/$run.out"
  assert_eq "$(leaked $run)" "" "probes that left the sandbox ($run)"
  for c in nd_ns af_packet raw4_hdrincl icmp4; do
    assert_contains "$(result "$T/$run.out" $c sent)" "PermissionError" "$run: $c"
  done
done
pass "without CAP_NET_RAW (root with it dropped, or nobody): nothing leaves, raw sockets refused"

# The jail has exited and left the namespace locked down: nobody's probes (but TCP,
# which would wait out its timeout) still get nothing out.
ip netns exec "$SBX" nft list table inet authproxy > /dev/null ||
  fail "no lockdown table after the jail exited"
ip netns exec "$SBX" setpriv --reuid nobody --regid nogroup --clear-groups -- \
  "$PY" "$TOOLS/leak_probes.py" "$TOOLS" "$M-lockdown" 10.199.1.2 fd00:199:1::2 "$PEER_LL" up0 \
  "$(printf '%s\n' "${ALL[@]}" | grep -v '^tcp' | paste -sd,)" > "$T/lockdown.out"
assert_eq "$(leaked lockdown)" "" "probes that left the locked-down sandbox"
pass "locked down after the jail: nothing leaves (bound-to-uplink loopback UDP included)"

# No DNS query or connection left the host stand-in.
assert_eq "$(resolved 'len(qs)')" "0" "names the proxy resolved"
assert_eq "$(host_counter offhost)" "0" "packets the proxy sent off the host"
pass "nothing resolved or dialed on the host side"
