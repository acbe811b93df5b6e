#!/usr/bin/env bash
# No sandbox reaches another sandbox's credential callback through the proxy. The
# callback answers whoever reaches it with the credentials of the sandbox its request
# names; each sandbox was kept from its own callback only, so sandbox B, whose config
# has no callback but may reach the host sandbox A's callback is on (here a dns.remap
# to loopback; on a fleet, default-allow egress to the callback's internal address),
# asked A's callback for A's credentials and got them.
#
#   b: curl cb.example:CB --> authproxy serve --> 127.0.0.1:CB fake_callback (A's)
#   B's relay opened before A attached is closed when A attaches; after A and A2
#   (the same callback) detach, B reaches the service again (no sandbox's callback).
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

start_callback

cat > "$T/a.json" <<EOF2
{ "callback": { "url": "http://127.0.0.1:$CB/creds", "match_hosts": ["*.corp.example"] } }
EOF2
echo '{ "dns": { "remap": { "cb.example": "127.0.0.1" } } }' > "$T/b.json"

# post: B asks the callback for A's credentials; prints the status line and any
# credential, or "closed".
cat > "$T/client.py" <<'PYEOF'
import os, socket, sys, time
mode, t, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
body = b'{"sandbox":"a","host":"api.corp.example","port":443}'
req = (b"POST /creds HTTP/1.1\r\nHost: cb.example\r\nContent-Type: application/json\r\n"
       b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
s = socket.create_connection(("cb.example", port), timeout=5)
if mode == "relay":
    time.sleep(0.8)  # silent past the 500 ms a server-first protocol gets: an opaque relay
    open(os.path.join(t, "opened"), "w").close()
    for _ in range(200):
        if os.path.exists(os.path.join(t, "attached")):
            break
        time.sleep(0.05)
got = b""
try:
    s.sendall(req)
    while True:
        d = s.recv(4096)
        if not d:
            break
        got += d
except OSError:
    pass
lines = got.split(b"\r\n")
cred = [l for l in lines if b"Bearer" in l or b"X-Authproxy-Error" in l]
print((lines[0] + b" " + b" ".join(cred)).decode() if got else "closed")
PYEOF
calls() { grep -c '"event": "call"' "$T/cb.jsonl" || true; }

serve_start
NSA=$(make_netns cba)
NSB=$(make_netns cbb)
NSA2=$(make_netns cba2)
ctl attach b --netns "/var/run/netns/$NSB" --config "$T/b.json" > /dev/null

# Control: before A exists the service is no sandbox's callback, and B reaches it.
out=$(ip netns exec "$NSB" "$PY" "$T/client.py" post "$T" "$CB")
assert_contains "$out" "200 OK" "B reaching the service before A attached"
assert_eq "$(calls)" "1" "calls after the control"

# A relay B opens now is closed when the service becomes A's callback.
conns() { grep -c '"event": "conn"' "$T/cb.jsonl" || true; }
before=$(conns)
ip netns exec "$NSB" "$PY" "$T/client.py" relay "$T" "$CB" > "$T/relay.out" &
RELAY=$!
PIDS+=($RELAY)
wait_for "[ -e '$T/opened' ]" 20
# The relay is dialed: the service has accepted its connection. (Until the daemon's
# 500 ms have run out, B's request would be read as a request: on a loaded machine
# they may outlast the client's 0.8 s.)
wait_for "[ \$(conns) -gt $before ]" 10
ctl attach a --netns "/var/run/netns/$NSA" --config "$T/a.json" > /dev/null
: > "$T/attached"
wait "$RELAY" || fail "the relay client failed"
assert_eq "$(cat "$T/relay.out")" "closed" "B's relay to the service once it is A's callback"

# New connections: refused.
out=$(ip netns exec "$NSB" "$PY" "$T/client.py" post "$T" "$CB")
assert_not_contains "$out" "Bearer" "B got A's callback credential"
assert_contains "$out" "403" "B asking A's callback"
assert_contains "$out" "callback_endpoint" "the refusal's reason"
assert_eq "$(calls)" "1" "calls reaching the callback from B"
pass "a sandbox cannot reach another sandbox's credential callback"

# While another sandbox (A2) has the same callback, A's leaving changes nothing.
ctl attach a2 --netns "/var/run/netns/$NSA2" --config "$T/a.json" > /dev/null
ctl detach a > /dev/null
out=$(ip netns exec "$NSB" "$PY" "$T/client.py" post "$T" "$CB")
assert_contains "$out" "callback_endpoint" "B asking the callback A2 still has"
# Once A2 is gone too the service is no sandbox's callback: B reaches it again.
ctl detach a2 > /dev/null
out=$(ip netns exec "$NSB" "$PY" "$T/client.py" post "$T" "$CB")
assert_contains "$out" "200 OK" "B reaching the service after A detached"
pass "the refusal follows the attached sandboxes' callbacks"
