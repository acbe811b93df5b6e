#!/usr/bin/env bash
# A PATCH that moves the credential callback to where a sandbox's open relay already
# goes closes that relay. The callback answers whoever reaches it with any sandbox's
# credentials, so the proxy never dials it for a sandbox (test_callback_endpoint_reach);
# a relay opened before the callback was there used to stay open after the PATCH, and
# a request the sandbox sent down it then got the victim's credential.
#
#   ap-cbpatch-PID: client.py (silent: an opaque relay) --> authproxy serve (in $HNS)
#                   --> cb.watch.test = fake_callback on 127.0.0.1 in $HNS
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start --answer cb.watch.test=127.0.0.1
start_callback --in "$HNS"

# The sandbox may reach the callback's host before the PATCH (an allow entry covers
# its address); the PATCH keeps that entry and adds the callback there, by name.
echo '{ "egress": { "allow": ["127.0.0.1/32"] } }' > "$T/before.json"
cat > "$T/after.json" <<EOF2
{ "egress": { "allow": ["127.0.0.1/32"] },
  "callback": { "url": "http://cb.watch.test:$CB/creds", "match_hosts": ["*.corp.example"] } }
EOF2

cat > "$T/client.py" <<'PYEOF'
import os, socket, sys, time
t, port = sys.argv[1], int(sys.argv[2])
s = socket.create_connection(("cb.watch.test", port), timeout=5)
time.sleep(0.8)  # silent past the 500 ms a server-first protocol gets: an opaque relay
open(os.path.join(t, "opened"), "w").close()
for _ in range(200):
    if os.path.exists(os.path.join(t, "patched")):
        break
    time.sleep(0.05)
body = b'{"sandbox":"victim","host":"api.corp.example","port":443}'
got = b""
try:
    s.sendall(b"POST /creds HTTP/1.1\r\nHost: cb.watch.test\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    while True:
        d = s.recv(4096)
        if not d:
            break
        got += d
except OSError:
    pass  # reset: closed as well
print("answer:", got.decode(errors="replace") or "closed")
PYEOF

ns=$(make_netns cbpatch) # before the daemon's private mount namespace copies /var/run/netns
hserve_start
ctl attach cbpatch --netns "/var/run/netns/$ns" --config "$T/before.json" > /dev/null
ip netns exec "$ns" "$PY" "$T/client.py" "$T" "$CB" > "$T/client.out" 2> "$T/client.log" &
CLIENT=$!
PIDS+=($CLIENT)
wait_for "[ -e '$T/opened' ]" 20
# The relay is dialed: the callback has accepted its connection.
wait_for "grep -q '\"event\": \"conn\"' '$T/cb.jsonl'" 10
ctl update cbpatch --config "$T/after.json" > /dev/null
: > "$T/patched"
wait "$CLIENT" || fail "the client failed: $(cat "$T/client.log")"
out=$(cat "$T/client.out")
assert_not_contains "$out" "Bearer cb-" "the sandbox got a callback credential down its open relay"
assert_eq "$(grep -c '"event": "call"' "$T/cb.jsonl")" "0" "calls reaching the callback"
assert_eq "$out" "answer: closed" "what the sandbox got down the relay after the PATCH"
pass "a PATCH putting the callback where an open relay goes closes the relay"
