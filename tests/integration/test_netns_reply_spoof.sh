#!/usr/bin/env bash
# The proxy's own answers as a way out. A captured connection is answered by the
# listener inside the sandbox, and the answer goes to the connection's source
# address. A source that is not the sandbox's, or not its guest's, turns the answers
# into packets the sandbox addresses to anyone through its uplink: the SYN-ACK of
# every connect() carries the original destination the sandbox chose (128 bits with
# IPv6) and both ports to the source it chose.
#
#  - a process of the sandbox, unprivileged, binds a foreign IPv6 source with
#    IPV6_FREEBIND (no capability needed) and connects anywhere: redirected to the
#    listener, whose SYN-ACK is routed out of the uplink to that source;
#  - a guest sends from a source that is not routed back through its own interface
#    (a VM's root can put anything there).
# Neither may leave the sandbox: filter_output passes answers to a non-local address
# only for flows that came in from a guest, and those must come from a source the
# guest's interface routes back to (reverse path), both for REDIRECT and TPROXY.
#
#     ap-rup-PID (uplink peer)      ap-rsb-PID (sandbox)              ap-rgs-PID (guest)
#     sniffer on up1  up1 --------- up0  netns_tool attach  gw0 ----- g0   default via gw0
#     10.199.1.2                    10.199.1.1  default     10.199.2.1     10.199.2.2
#     fd00:199:1::2                 fd00:199:1::1  via up1  fd00:199:2::1  fd00:199:2::2
#
# Addresses such as 198.18.0.9, 192.0.2.77 and 2001:db8::/32 are only used inside the
# sandbox and its guest, or as sources the peer's sniffer watches for.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

require_root
require_cmd ip nft setpriv
require_netns_tool
lib_init

SBX=ap-rsb-$$
UP=ap-rup-$$
GST=ap-rgs-$$
PY=/usr/bin/python3

uplink_topology "$SBX" "$UP" "$GST"

# IPv6 neighbour discovery needs the link-local addresses, which come up after
# duplicate address detection.
no_tentative() {
  local ns
  for ns in "$SBX" "$UP" "$GST"; do
    ip -n "$ns" -6 addr show | grep -q 'inet6 fe80' || return 1
    ! ip -n "$ns" -6 addr show | grep -q tentative || return 1
  done
}
wait_until 10 "IPv6 addresses" no_tentative

# The sniffer: every TCP segment with SYN and ACK that arrives on up1, as
# "synack SRC SPORT DST DPORT" lines, and every UDP datagram from port 53, as
# "dns SRC DST PAYLOAD-HEX".
cat > "$LIB_TMP/sniff.py" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
log = open(sys.argv[2], "a", buffering=1)
log.write("ready\n")
while True:
    f, addr = s.recvfrom(65535)
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    et = int.from_bytes(f[12:14], "big")
    if et == 0x0800 and f[23] in (6, 17):
        ihl = (f[14] & 15) * 4
        src, dst, t = socket.inet_ntop(socket.AF_INET, f[26:30]), \
            socket.inet_ntop(socket.AF_INET, f[30:34]), f[14 + ihl:]
    elif et == 0x86DD and f[20] in (6, 17):
        src, dst, t = socket.inet_ntop(socket.AF_INET6, f[22:38]), \
            socket.inet_ntop(socket.AF_INET6, f[38:54]), f[54:]
    else:
        continue
    if f[23 if et == 0x0800 else 20] == 17 and int.from_bytes(t[0:2], "big") == 53:
        log.write("dns %s %s %s\n" % (src, dst, t[8:].hex()))
        continue
    if len(t) >= 14 and t[13] & 0x12 == 0x12:
        log.write("synack %s %d %s %d\n" % (src, int.from_bytes(t[0:2], "big"), dst,
                                           int.from_bytes(t[2:4], "big")))
EOF
# query.py SRC DST NAME: a DNS query for NAME from SRC (IPV6_FREEBIND) to DST port 53.
cat > "$LIB_TMP/query.py" <<'EOF'
import socket, struct, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IPV6, 78, 1)
s.bind((sys.argv[1], 40405))
q = struct.pack("!6H", 0x4150, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in sys.argv[3].split(".")) + b"\0"
s.sendto(q + struct.pack("!HH", 28, 1), (sys.argv[2], 53))
EOF
# connect.py FAMILY SRC DST: a connection from SRC (bound with FREEBIND, or with
# TRANSPARENT when the caller may) to DST port 443; it cannot complete, only its
# SYN-ACK matters.
cat > "$LIB_TMP/connect.py" <<'EOF'
import socket, sys
fam = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
level = socket.IPPROTO_IPV6 if fam == socket.AF_INET6 else socket.IPPROTO_IP
opt = {("free", 6): 78, ("free", 4): 15, ("transparent", 6): 75, ("transparent", 4): 19}
s.setsockopt(level, opt[(sys.argv[4], 6 if fam == socket.AF_INET6 else 4)], 1)
s.bind((sys.argv[2], 40404))
s.settimeout(0.3)
try:
    s.connect((sys.argv[3], 443))
    print("connected")
except OSError as e:
    print(e)
EOF

SNIFF_LOG=$LIB_TMP/sniff.log
bg_start "$LIB_TMP/sniff.err" in_ns "$UP" "$PY" "$LIB_TMP/sniff.py" up1 "$SNIFF_LOG"
wait_until 5 "sniffer in $UP" file_has "$SNIFF_LOG" '^ready'

# answers_seen PATTERN: the sniffer logged a SYN-ACK line matching PATTERN.
answers_seen() {
  sleep 0.3 # a retransmitted SYN-ACK is not needed; the first arrives in <1 ms
  file_has "$SNIFF_LOG" "$1"
}

# answers_arrive PATTERN: as answers_seen, for an answer that must come, waiting up
# to 10 s for its line: on a loaded machine (the ASan pass beside other tests) the
# sniffer may log the first SYN-ACK later than answers_seen looks, and the
# listener retransmits it after 1 and 3 s anyway.
answers_arrive() {
  local i
  for ((i = 0; i < 100; i++)); do
    file_has "$SNIFF_LOG" "$1" && return 0
    sleep 0.1
  done
  return 1
}

# Sandbox process: nobody, IPV6_FREEBIND from 2001:db8:77::TAG.
sandbox_spoof() {
  in_ns "$SBX" setpriv --reuid nobody --regid nogroup --clear-groups -- \
    "$PY" "$LIB_TMP/connect.py" 6 "2001:db8:77::$1" "2001:db8:5::$1" free >>"$LIB_TMP/connect.log" 2>&1
}
# Guest (root in its namespace, IP_TRANSPARENT): from SRC to DST.
guest_spoof() {
  in_ns "$GST" "$PY" "$LIB_TMP/connect.py" "$1" "$2" "$3" transparent >/dev/null
}

# Control: with no rules, a sandbox listener's answer to a foreign source is routed
# out of the uplink and seen by the sniffer, so the checks below can fail.
bg_start "$LIB_TMP/ctl-listener.log" in_ns "$SBX" "$PY" -c '
import socket, time
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 443)); s.listen(8)
print("listening", flush=True); time.sleep(30)'
CTL_PID=$BG_PID
wait_until 5 "control listener" file_has "$LIB_TMP/ctl-listener.log" '^listening'
in_ns "$SBX" ip route add local 2001:db8:5::/48 dev lo
sandbox_spoof c1
check "control: a sandbox process's answer to a foreign IPv6 source reaches the uplink" \
  answers_arrive '^synack 2001:db8:5::c1 443 2001:db8:77::c1 40404$'
in_ns "$SBX" ip route del local 2001:db8:5::/48 dev lo
bg_stop "$CTL_PID"

start_attach() {
  bg_start "$LIB_TMP/attach-$1.log" "$TOOL" attach "/var/run/netns/$SBX" --lifetime 60 "${@:2}"
  ATTACH_PID=$BG_PID
  wait_until 10 "netns_tool attach" file_has "$LIB_TMP/attach-$1.log" '^ready '
}

n=0
for mode in redirect tproxy; do
  args=()
  [ "$mode" = tproxy ] && args=(--tproxy)
  start_attach "$mode" "${args[@]}"
  n=$((n + 1))
  check "$mode: the guest's own connections are still answered" \
    answers "$GST" "(orig|tproxy) 198\.18\.0\.9:443" tcp 198.18.0.9 443
  check "$mode: ... over IPv6 too" \
    answers "$GST" "(orig|tproxy) \[2001:db8::1\]:80" tcp 2001:db8::1 80
  sandbox_spoof "a$n"
  check_not "$mode: no answer to a sandbox process's foreign IPv6 source leaves" \
    answers_seen "^synack 2001:db8:5::a$n "
  # The responder's answer would carry the name the query asked for.
  in_ns "$SBX" setpriv --reuid nobody --regid nogroup --clear-groups -- \
    "$PY" "$LIB_TMP/query.py" "2001:db8:77::d$n" 2001:db8:53::1 "secret$n.example.com"
  check_not "$mode: no DNS answer to a sandbox process's foreign IPv6 source leaves" \
    answers_seen "^dns .* 2001:db8:77::d$n "
  guest_spoof 4 192.0.2.$((70 + n)) 198.18.0.$((10 + n))
  check_not "$mode: no answer to a guest's IPv4 source from elsewhere leaves" \
    answers_seen "^synack 198\.18\.0\.$((10 + n)) "
  guest_spoof 6 "2001:db8:77::b$n" "2001:db8:6::b$n"
  check_not "$mode: no answer to a guest's IPv6 source from elsewhere leaves" \
    answers_seen "^synack 2001:db8:6::b$n "
  bg_stop "$ATTACH_PID"
done

echo "all $LIB_CHECKS checks passed"
