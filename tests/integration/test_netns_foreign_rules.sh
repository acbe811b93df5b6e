#!/usr/bin/env bash
# The `inet authproxy` table beside another table in the same namespace (a runtime's,
# a service mesh's, an old iptables-nft set): netfilter runs every base chain of a
# hook, and the first nat chain to bind a NAT mapping wins, so a foreign nat chain of
# lower priority can DNAT a connection before our redirect sees it. Whatever it does,
# traffic that did not go to the proxy or its responder must not leave through the
# uplink: filter_output lets out only replies of flows marked as a guest's (the
# proxy's answers to it), never what a foreign DNAT or ct mark sends outwards.
#
#     ap-fup-PID                    ap-fsb-PID
#     peer :7000 (tcp+udp) up1 --- up0   netns_tool attach (+ a foreign table)
#     10.199.1.2                    10.199.1.1      default via up1
#     fd00:199:1::2                 fd00:199:1::1
#
# Addresses such as 198.18.0.9 and 2001:db8::1 are only dialled from inside the
# sandbox, where the rules capture or drop them.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

require_root
require_cmd ip nft
require_netns_tool
lib_init

SBX=ap-fsb-$$
UP=ap-fup-$$
QUICK=250 # ms to wait where silence is expected (the controls answer in <1 ms)

contacts() { grep -c '^contact' "$PEER_LOG" || true; }

# Packets the foreign table's ct mark rule marked.
marked() {
  in_ns "$SBX" nft list chain inet "foreign-$$" mark_out |
    sed -nE 's/.*counter packets ([0-9]+).*/\1/p'
}

start_attach() {
  local ns=$1 log=$2
  shift 2
  bg_start "$log" "$TOOL" attach "/var/run/netns/$ns" --lifetime 60 "$@"
  ATTACH_PID=$BG_PID
  wait_until 10 "netns_tool attach in $ns" file_has "$log" '^ready '
}

uplink_topology "$SBX" "$UP"

PEER_LOG=$LIB_TMP/up-peer.log
bg_start "$PEER_LOG" in_ns "$UP" "$TOOL" peer 7000 --lifetime 60
wait_until 5 "peer in $UP" file_has "$PEER_LOG" '^ready'

# The foreign table: output DNAT of TCP and UDP port 7000 towards the uplink peer,
# at a priority ahead of ours (dstnat), and a ct mark equal to ours (TPROXY's) on UDP
# to the peer.
FOREIGN="table inet foreign-$$ {
  chain nat_out {
    type nat hook output priority -150;
    ip daddr 198.18.0.9 meta l4proto { tcp, udp } th dport 7000 dnat ip to 10.199.1.2:7000
    ip6 daddr 2001:db8::1 meta l4proto { tcp, udp } th dport 7000 dnat ip6 to [fd00:199:1::2]:7000
  }
  chain mark_out {
    type filter hook output priority -150; # after conntrack (-200), or it marks nothing
    ip daddr 10.199.1.2 udp dport 7000 counter ct mark set 0x4150
  }
}"

# Controls: without authproxy the foreign rules reach the peer, so the checks below
# that expect silence can fail.
in_ns "$SBX" nft -f - <<<"$FOREIGN"
check "control: foreign DNAT of TCP reaches the uplink peer" \
  answers "$SBX" 'peer' tcp 198.18.0.9 7000
check "control: foreign DNAT of UDP reaches the uplink peer" \
  answers "$SBX" 'peer' udp 198.18.0.9 7000 x
check "control: foreign DNAT of IPv6 TCP reaches the uplink peer" \
  answers "$SBX" 'peer' tcp 2001:db8::1 7000
in_ns "$SBX" nft delete table inet "foreign-$$"

for mode in redirect tproxy; do
  args=()
  [ "$mode" = tproxy ] && args=(--tproxy)
  start_attach "$SBX" "$LIB_TMP/attach-$mode.log" "${args[@]}"
  # Added after the attach, as a runtime or a mesh might; and re-added before a
  # re-attach below, as if it had been there first.
  in_ns "$SBX" nft -f - <<<"$FOREIGN"
  before=$(contacts)
  check "$mode: sandbox TCP to 198.18.0.9:443 still reaches the proxy" \
    answers "$SBX" 'orig 198\.18\.0\.9:443' tcp 198.18.0.9 443
  check "$mode: TCP that a foreign rule DNATs to the uplink peer does not leave" \
    silent "$SBX" tcp 198.18.0.9 7000
  check "$mode: ... nor over IPv6" silent "$SBX" tcp 2001:db8::1 7000
  check "$mode: UDP that a foreign rule DNATs to the uplink peer does not leave" \
    silent "$SBX" udp 198.18.0.9 7000 x
  # (The peer's answer would be dropped on input anyway: count what reached it.)
  n=$(contacts)
  NETNS_TOOL_WAIT_MS=$QUICK in_ns "$SBX" "$TOOL" udp 10.199.1.2 7000 x >/dev/null 2>&1 || true
  sleep 0.2
  check "$mode: UDP with a foreign ct mark equal to the TPROXY mark does not leave" \
    test "$(contacts)" = "$n"
  check "$mode: ... though the foreign rule marked it" test "$(marked)" -gt 0
  check "$mode: the uplink peer heard nothing ($before -> $(contacts) contacts)" \
    test "$(contacts)" = "$before"
  check "$mode: DNS is still answered by the responder" \
    answers "$SBX" 'dns q1' udp 8.8.8.8 53 q1
  in_ns "$SBX" nft delete table inet "foreign-$$"
  bg_stop "$ATTACH_PID"
done

echo "all $LIB_CHECKS checks passed"
