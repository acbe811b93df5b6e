#!/usr/bin/env bash
# A PATCH that takes egress away must take it away from connections already open, not
# only from new ones. Requests the HTTP engine reads are decided one by one under the
# config current when each arrives (test_serve.sh); this test holds open what is relayed
# as opaque bytes, decided once, and connections accepted but not decided yet, then
# swaps the config:
#
#   deny.example    opaque tunnel; the new config denies the name     -> closed
#   moved.example   opaque tunnel; the new config remaps the name     -> closed
#   tls.example     TLS tunnel; the new config injects a header there -> closed
#   keep.example    opaque tunnel; the new config changes nothing     -> still relayed
#   late.example    half a ClientHello sent before the swap, the rest after; the new
#                   config denies the name                            -> not relayed
#   addr.example    opaque tunnel to 127.0.0.2; the new config denies that address
#                                                                     -> closed
#   cb.example      opaque tunnel to localhost:E4; the new config's credential
#                   callback is there, which no sandbox may reach      -> closed
#
#   ap-swap-PID (lo only)                         host
#   client.py --redirect--> listener ==== authproxy serve ===> tcp_server.py (echo) 127.0.0.1:E1, E2,
#                                                              E4, 127.0.0.2:E3
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

start_tcp_server e1
start_tcp_server e2
start_tcp_server e3 --bind 127.0.0.2
start_tcp_server e4
E1=$e1_PORT
E2=$e2_PORT
E3=$e3_PORT
E4=$e4_PORT

remap() {
  local moved=$1
  echo "\"remap\": { \"deny.example\": \"127.0.0.1:$E1\", \"moved.example\": \"127.0.0.1:$moved\",
    \"keep.example\": \"127.0.0.1:$E1\", \"tls.example\": \"127.0.0.1:$E1\",
    \"late.example\": \"127.0.0.1:$E1\", \"addr.example\": \"127.0.0.2:$E3\",
    \"cb.example\": \"localhost:$E4\" }"
}
echo "{ \"dns\": { $(remap "$E1") } }" > "$T/before.json"
cat > "$T/after.json" <<EOF
{ "rules": [ { "name": "tls", "match_hosts": ["tls.example"],
    "headers": [ { "name": "X-Added", "type": "plaintext", "value": "1" } ] } ],
  "egress": { "deny": ["deny.example", "late.example", "127.0.0.2/32"] },
  "callback": { "url": "http://localhost:$E4/creds", "match_hosts": ["api.example"] },
  "dns": { $(remap "$E2") } }
EOF

cat > "$T/client.py" <<'PYEOF'
import os, socket, ssl, sys, time
t = sys.argv[1]

def client_hello(name):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()

def exchange(s, msg, expect=None):
    """Sends msg; 'echo' if expect (msg) comes back whole, else 'closed', 'timeout' or
    'other'."""
    expect = expect or msg
    got = b""
    s.settimeout(5)
    try:
        s.sendall(msg)
        while len(got) < len(expect):
            d = s.recv(len(expect) - len(got))
            if not d:
                return "closed"
            got += d
    except socket.timeout:
        return "timeout"
    except (ConnectionResetError, BrokenPipeError):
        return "closed"
    return "echo" if got == expect else "other"

def wait_file(name):
    for _ in range(200):
        if os.path.exists(os.path.join(t, name)):
            return
        time.sleep(0.05)
    raise SystemExit("no " + name)

conns = {n: socket.create_connection((n + ".example", 7000), timeout=5)
         for n in ("deny", "moved", "keep", "addr", "cb")}
time.sleep(0.8)  # silent past the 500 ms a server-first protocol gets: opaque tunnels
res = {}
for n, s in conns.items():
    res[n] = exchange(s, ("hello " + n).encode())
hello = client_hello("tls.example")
conns["tls"] = socket.create_connection(("tls.example", 443), timeout=5)
res["tls"] = exchange(conns["tls"], hello)
late_hello = client_hello("late.example")
late = socket.create_connection(("late.example", 443), timeout=5)
late.sendall(late_hello[:3])  # a record header: the sniffer waits for the rest
print("before", " ".join("%s=%s" % kv for kv in sorted(res.items())), flush=True)
open(os.path.join(t, "opened"), "w").close()
wait_file("swapped")
res = {n: exchange(s, ("again " + n).encode()) for n, s in conns.items()}
# late sends the rest of its hello: relayed, the whole hello comes back.
res["late"] = exchange(late, late_hello[3:], late_hello)
print("after", " ".join("%s=%s" % kv for kv in sorted(res.items())), flush=True)
PYEOF

serve_start
ns=$(make_netns swap)
ctl attach swap --netns "/var/run/netns/$ns" --config "$T/before.json" > /dev/null
ip netns exec "$ns" "$PY" "$T/client.py" "$T" > "$T/client.out" 2> "$T/client.log" &
CLIENT=$!
PIDS+=($CLIENT)
wait_for "[ -e '$T/opened' ]" 20
assert_eq "$(grep '^before' "$T/client.out")" "before addr=echo cb=echo deny=echo keep=echo moved=echo tls=echo" \
  "every flow relayed before the swap"
ctl update swap --config "$T/after.json" > /dev/null
: > "$T/swapped"
wait "$CLIENT" || fail "the client failed: $(cat "$T/client.log")"
after=$(grep '^after' "$T/client.out")
echo "$after"
for want in deny=closed moved=closed tls=closed keep=echo addr=closed cb=closed; do
  assert_contains "$after" "$want" "after the swap"
done
assert_not_contains "$after" "late=echo" "a connection decided after the swap was relayed under the old config"

# New connections take the new config too (the control for the above).
out=$(ip netns exec "$ns" "$PY" - <<'PYEOF'
import socket, time
s = socket.create_connection(("deny.example", 7000), timeout=5)
time.sleep(0.8)
s.settimeout(5)
try:
    s.sendall(b"x")
    print("relayed" if s.recv(1) == b"x" else "closed")
except OSError:
    print("closed")
PYEOF
)
assert_eq "$out" "closed" "a new connection to the denied name"
# The daemon lived through it, and (under the sanitizers) exits clean.
ctl health > /dev/null || fail "the daemon does not answer after the swap"
kill -TERM "$serve_pid"
rc=0
wait "$serve_pid" || rc=$?
assert_eq "$rc" "0" "the daemon's exit status (see serve.log)"
pass "a config swap closes the open relays it no longer allows as they are, and decides pending connections"
