#!/usr/bin/env bash
# A config swap that denies the address an opaque tunnel is still connecting to: the
# swap found nothing to check yet (no upstream connected), and the connect, once it
# succeeded, was relayed as the old config allowed, to an address the new one denies
# (egress IP/CIDR entries are checked before an address is dialed, and at the swap
# for a connected upstream, but not for an attempt in flight across the swap). The
# SYNs toward the upstream are held (dropped, counted) until the swap is made, so the
# attempt is in flight at the swap; then the kernel's retransmission connects it.
# Then the same for a plain HTTP request in flight, whose upstream was dialed for it:
# it was forwarded to the address the new config denies; it is answered 403
# config_changed now, and the upstream never sees it.
#
#   ap-sw-PID: client --nft--> authproxy serve (in $HNS) --SYN held--> echo 127.0.0.1:E
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start
start_tcp_server e --in "$HNS"
E=$e_PORT
# hold PORT: drops (and counts) SYNs to 127.0.0.1:PORT in $HNS until the table goes.
hold() {
  ip netns exec "$HNS" nft -f - <<NFT
table inet hold {
  counter held { }
  chain out {
    type filter hook output priority 0; policy accept;
    ip daddr 127.0.0.1 tcp dport $1 tcp flags & (syn | ack) == syn counter name "held" drop
  }
}
NFT
}
hold "$E"
held() {
  ip netns exec "$HNS" nft list counter inet hold held |
    awk '/packets/ { for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }'
}
echo "{ \"dns\": { \"remap\": { \"tun.example\": \"127.0.0.1:$E\" } } }" > "$T/before.json"
echo "{ \"dns\": { \"remap\": { \"tun.example\": \"127.0.0.1:$E\" } },
  \"egress\": { \"deny\": [\"127.0.0.1/32\"] } }" > "$T/after.json"

ns=$(make_netns sw)  # before the daemon's mount namespace copies /var/run/netns
hserve_start --connect-timeout 20
ctl attach sw --netns "/var/run/netns/$ns" --config "$T/before.json" > /dev/null
# swap_under_held NAME CONFIG: with a client just started in the background ($!),
# writing $T/NAME.out and $T/NAME.log and held at its connect, swaps the config to
# CONFIG, lifts the hold and tells the client ($T/swapped). Sets out to its output.
swap_under_held() {
  CLIENT=$!
  PIDS+=($CLIENT)
  wait_for "[ \"\$(held)\" -gt 0 ]" 20
  ctl update sw --config "$2" > /dev/null
  ip netns exec "$HNS" nft delete table inet hold
  : > "$T/swapped"
  wait "$CLIENT" || fail "the $1 client failed: $(cat "$T/$1.log")"
  out=$(cat "$T/$1.out")
}

# tunnel_across_swap NAME CONFIG: a client in the sandbox opens a tunnel to NAME:7000,
# silent past the 500 ms a server-first protocol gets (an opaque tunnel, dialed then),
# while SYNs are held; the config swaps to CONFIG, the hold is lifted, and the client
# sends "hello". Sets out: "echo" if it came back through the tunnel, else "closed ...".
tunnel_across_swap() {
  rm -f "$T/swapped"
  ip netns exec "$ns" "$PY" - "$T" "$1" > "$T/$1.out" 2> "$T/$1.log" <<'PYEOF' &
import os, socket, sys, time
t = sys.argv[1]
s = socket.create_connection((sys.argv[2], 7000), timeout=20)
for _ in range(400):
    if os.path.exists(os.path.join(t, "swapped")):
        break
    time.sleep(0.05)
s.settimeout(20)
try:
    s.sendall(b"hello")
    d = s.recv(5)
    print("echo" if d == b"hello" else "closed" if not d else "other", flush=True)
except OSError as e:
    print("closed", type(e).__name__, flush=True)
PYEOF
  swap_under_held "$1" "$2"
  echo "$1 client: $out"
}
tunnel_across_swap tun.example "$T/after.json"
assert_contains "$out" "closed" "a tunnel whose address the swap denied while it connected"
ctl health > /dev/null || fail "the daemon does not answer after the swap"
pass "an upstream connect in flight across a swap that denies its address is not relayed"

# The same for a request in flight (plain HTTP, read and decided): its upstream is
# dialed for it, under the config it was decided by. The swap cuts a request in
# flight that the new config refuses, by the address its upstream is at once
# connected; one still connecting went on to the address the new config denies.
hupstream web
W=$web_PORT
echo "{ \"dns\": { \"remap\": { \"web.example\": \"127.0.0.1:$W\" } } }" > "$T/before-web.json"
echo "{ \"dns\": { \"remap\": { \"web.example\": \"127.0.0.1:$W\" } },
  \"egress\": { \"deny\": [\"127.0.0.1/32\"] } }" > "$T/after-web.json"
ctl update sw --config "$T/before-web.json" > /dev/null
hold "$W"
rm -f "$T/swapped"
ip netns exec "$ns" "$PY" - "$T" > "$T/web.out" 2> "$T/web.log" <<'PYEOF' &
import os, socket, sys, time
t = sys.argv[1]
s = socket.create_connection(("web.example", 80), timeout=20)
s.sendall(b"GET /held HTTP/1.1\r\nHost: web.example\r\n\r\n")
for _ in range(400):
    if os.path.exists(os.path.join(t, "swapped")):
        break
    time.sleep(0.05)
try:
    d = s.recv(4096)
    print(d.split(b"\r\n")[0].decode() if d else "closed", flush=True)
except OSError as e:
    print("closed", type(e).__name__, flush=True)
PYEOF
swap_under_held web "$T/after-web.json"
echo "web client: $out"
assert_eq "$(upq web 'len([r for r in reqs if r["path"].startswith("/held")])')" 0 \
  "requests the upstream got at the address the swap denied while it was dialed"
assert_not_contains "$out" "200" "a request whose upstream the swap denied while it connected"
ctl health > /dev/null || fail "the daemon does not answer after the swap"
pass "a request in flight whose upstream connect the swap denied is not forwarded"

# A swap that denies the name of a tunnel still connecting closes it at the swap: its
# address stays allowed, so the check at the connect could not stop it.
echo "{ \"dns\": { \"remap\": { \"named.example\": \"127.0.0.1:$E\" } } }" > "$T/before-name.json"
echo "{ \"dns\": { \"remap\": { \"named.example\": \"127.0.0.1:$E\" } },
  \"egress\": { \"deny\": [\"named.example\"] } }" > "$T/after-name.json"
ctl update sw --config "$T/before-name.json" > /dev/null
hold "$E"
tunnel_across_swap named.example "$T/after-name.json"
assert_contains "$out" "closed" "a tunnel whose name the swap denied while it connected"
ctl health > /dev/null || fail "the daemon does not answer after the swap"
pass "an upstream connect in flight across a swap that denies its name is not relayed"
kill -TERM "$serve_pid"
rc=0
wait "$serve_pid" || rc=$?
assert_eq "$rc" "0" "the daemon's exit status (see serve.log)"
