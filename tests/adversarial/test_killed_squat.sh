#!/usr/bin/env bash
# A daemon killed outright (SIGKILL: no detach, no lockdown) leaves its rules in the
# sandbox's namespace, which fail closed only while nothing else listens where they
# send traffic. The responder's 127.0.0.53:53 and the proxy's port are free then, and
# an unprivileged process of the sandbox's may bind them (port 53 with
# CAP_NET_BIND_SERVICE, or ip_unprivileged_port_start=0 as Docker sets it; the
# proxy's port needs nothing). A peer on the uplink whose DNS the rules DNAT to the
# responder, or whose TCP through the sandbox they redirect to the proxy, must not
# reach it, nor get its answers. Both capture modes (under TPROXY only the DNS is
# sent to a port such a process may take); then a new daemon restores the sandbox
# and the peer's DNS is answered again.
#
#   ap-ksqMODE-PID (sandbox) up0 10.199.1.1 ---- up1 10.199.1.2 ap-kupMODE-PID (peer)
. "$(dirname "$0")/../integration/lib.sh"
. "$SRC/tests/adversarial/adv_lib.sh"

# peer udp|query|tcp|tcp6: a "ping" (or a DNS query, whose answer's id it prints in
# hex) to 10.199.1.1:53 over UDP, or a TCP connection to 10.199.9.9:80 or
# [fd00:199:9::9]:80 (routed through the sandbox) that sends "ping"; prints the
# answer, or the error's name.
peer() {
  ip netns exec "$UP" "$PY" - "$1" <<'PYEOF'
import socket, sys
q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
try:
    if sys.argv[1] in ("udp", "query"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1)
        s.sendto(b"ping" if sys.argv[1] == "udp" else q, ("10.199.1.1", 53))
        if sys.argv[1] == "query":
            print(s.recv(2048)[:2].hex())
            sys.exit(0)
    else:
        a = "10.199.9.9" if sys.argv[1] == "tcp" else "fd00:199:9::9"
        s = socket.create_connection((a, 80), timeout=1)
        s.sendall(b"ping")
    d = s.recv(2048)
    print(d.decode(errors="replace") if d else "EOF")
except OSError as e:
    print(type(e).__name__)
PYEOF
}

# A process of the sandbox's: binds the responder's address and the proxy's port
# (IPv4 and IPv6), answers what it gets.
cat > "$T/sbx.py" <<'PYEOF'
import select, socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.53", 53))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.bind(("0.0.0.0", int(sys.argv[2])))
t6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
t6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
t6.bind(("::", int(sys.argv[2])))
for l in (t, t6):
    l.listen(8)
open(sys.argv[1], "w").close()
for _ in range(6):
    r, _, _ = select.select([u, t, t6], [], [], 4)
    if not r:
        break
    if u in r:
        d, a = u.recvfrom(2048)
        u.sendto(b"from the sandbox: " + d, a)
    for l in (t, t6):
        if l in r:
            c, _ = l.accept()
            c.settimeout(1)
            try:
                c.sendall(b"from the sandbox: " + c.recv(2048))
            except OSError:
                pass
            c.close()
PYEOF

for mode in redirect tproxy; do
  SBX=ap-ksq$mode-$$ UP=ap-kup$mode-$$
  uplink_topology "$SBX" "$UP"
  ip netns exec "$SBX" sysctl -qw net.ipv4.ip_unprivileged_port_start=0
  # TCP the peer sends through the sandbox, to addresses beyond it.
  ip -n "$UP" route add 10.199.9.0/24 via 10.199.1.1
  ip -n "$UP" -6 route add fd00:199:9::/64 via fd00:199:1::1
  rm -rf "$T/c.sock" "$T/state" # a new daemon, with nothing to restore
  serve_start --capture "$mode"
  echo '{}' > "$T/cfg.json"
  ctl attach box --netns "/var/run/netns/$SBX" --config "$T/cfg.json" > /dev/null
  # The proxy's port, which anyone in the sandbox can read (/proc/net/tcp).
  port=$(ip netns exec "$SBX" ss -ltnH 'sport != :53' | awk '$4 ~ /^0\.0\.0\.0:/ {
    sub(/.*:/, "", $4); print $4; exit }')
  [ -n "$port" ] || fail "$mode: no proxy listener in the sandbox"
  assert_eq "$(peer query)" 1234 "$mode: the peer's DNS query, answered by the responder"

  kill -KILL "$serve_pid"
  wait "$serve_pid" 2>/dev/null || true
  mkdir -p -m 1777 "$T/w"
  rm -f "$T/w/bound"
  ip netns exec "$SBX" setpriv --reuid=65534 --regid=65534 --clear-groups \
    "$PY" "$T/sbx.py" "$T/w/bound" "$port" > "$T/sbx.out" 2> "$T/sbx.log" &
  sbx=$!
  PIDS+=($sbx)
  wait_for "[ -e '$T/w/bound' ] || ! kill -0 $sbx"
  [ -e "$T/w/bound" ] || fail "$mode: the sandbox's process could not bind: $(cat "$T/sbx.log")"
  assert_eq "$(peer udp)" TimeoutError \
    "$mode: the peer, to the sandbox's port 53, the daemon killed"
  assert_eq "$(peer tcp)" TimeoutError "$mode: the peer, TCP through the sandbox, the daemon killed"
  assert_eq "$(peer tcp6)" TimeoutError \
    "$mode: the peer, TCP over IPv6 through the sandbox, the daemon killed"
  kill "$sbx" 2>/dev/null || true
  wait "$sbx" 2>/dev/null || true
  # A new daemon restores the sandbox: its rules and sockets agree again.
  serve_start --capture "$mode"
  assert_eq "$(peer query)" 1234 "$mode: the peer's DNS query, after a restart"
  kill "$serve_pid"
  wait "$serve_pid" 2>/dev/null || true
done
pass "a killed daemon's rules lead a peer to no process of the sandbox's"
