#!/usr/bin/env bash
# After a detach, the lockdown table must not give the sandbox a way to a host on its
# uplink. It lets the connections a guest opened before drain (packets of flows the
# capture rules marked); a peer's DNS query to the sandbox's address is such a flow,
# UDP, and outlives the responder, which closes at the detach. A process in the
# sandbox that can bind 127.0.0.53:53 (CAP_NET_BIND_SERVICE, or
# ip_unprivileged_port_start=0 as Docker sets it) then received what the peer sent
# from that port and answered it, with nothing to proxy it, for as long as either
# side kept the flow alive.
#
#   ap-lus-PID (sandbox) up0 10.199.1.1 ---- up1 10.199.1.2 ap-lup-PID (peer)
. "$(dirname "$0")/../integration/lib.sh"
. "$SRC/tests/adversarial/adv_lib.sh"

SBX=ap-lus-$$ UP=ap-lup-$$
uplink_topology "$SBX" "$UP"
ip netns exec "$SBX" sysctl -qw net.ipv4.ip_unprivileged_port_start=0
serve_start
echo '{}' > "$T/cfg.json"
ctl attach box --netns "/var/run/netns/$SBX" --config "$T/cfg.json" > /dev/null

# peer WHAT: sends a DNS query (WHAT=query) or "ping" from 10.199.1.2:40000 to the
# sandbox's port 53; prints the answer (of a DNS answer, its id in hex), or
# TimeoutError.
peer() {
  ip netns exec "$UP" "$PY" - "$1" <<'PYEOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.199.1.2", 40000))
s.settimeout(1)
q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
s.sendto(q if sys.argv[1] == "query" else b"ping", ("10.199.1.1", 53))
try:
    d = s.recv(2048)
    print(d[:2].hex() if sys.argv[1] == "query" else d.decode(errors="replace"))
except OSError as e:
    print(type(e).__name__)
PYEOF
}

assert_eq "$(peer query)" 1234 "the peer's DNS query, answered by the responder"
ctl detach box > /dev/null

# A process of the sandbox's, unprivileged, takes the responder's address.
cat > "$T/sbx.py" <<'PYEOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.53", 53))
s.settimeout(2)
open(sys.argv[1], "w").close()
try:
    d, a = s.recvfrom(2048)
    s.sendto(b"from the sandbox: " + d, a)
    print("received", d)
except OSError as e:
    print(type(e).__name__)
PYEOF
mkdir -m 1777 "$T/w"
ip netns exec "$SBX" setpriv --reuid=65534 --regid=65534 --clear-groups \
  "$PY" "$T/sbx.py" "$T/w/bound" > "$T/sbx.out" 2> "$T/sbx.log" &
sbx=$!
PIDS+=($sbx)
wait_for "[ -e '$T/w/bound' ] || ! kill -0 $sbx"
assert_eq "$(peer ping)" TimeoutError "the peer, to the sandbox's port 53 after the detach"
wait "$sbx" || fail "the sandbox's process failed: $(cat "$T/sbx.log")"
assert_eq "$(cat "$T/sbx.out")" TimeoutError "what the sandbox's process received"
pass "after a detach, a DNS flow from before is no way between the sandbox and its uplink"
