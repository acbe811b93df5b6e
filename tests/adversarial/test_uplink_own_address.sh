#!/usr/bin/env bash
# Sandboxes with an uplink, as a CNI bridge gives them: a connection that enters a
# sandbox's namespace through the uplink, to the sandbox's own address, is not a
# guest's traffic and must not be proxied. Prerouting capture used to take it: a peer
# on the bridge had its requests sent with the sandbox's credentials; another sandbox
# reached them too, since the daemon dials the address it names from the node, into
# the first sandbox's capture; and the proxy, dialing the sandbox's own address again
# from the node, looped into its own listener until --max-conns (one connection
# became one per allowed connection).
#
#   ap-upn-PID (node): authproxy serve, upstream on 127.0.0.1, br0 10.77.0.1/24
#      |  fd77::1/64
#      +-- ap-up1-PID (sandbox s1) eth0 10.77.0.11, fd77::11, default via br0
#      +-- ap-up2-PID (sandbox s2) eth0 10.77.0.12, fd77::12, default via br0
#      +-- ap-up3-PID (a peer, not attached) eth0 10.77.0.13, default via br0
. "$(dirname "$0")/../integration/lib.sh"
. "$SRC/tests/adversarial/adv_lib.sh"

N=$(make_netns upn)
ip -n "$N" link add br0 type bridge
ip -n "$N" addr add 10.77.0.1/24 dev br0
ip -n "$N" addr add fd77::1/64 dev br0 nodad
ip -n "$N" link set br0 up
for i in 1 2 3; do
  s=$(make_netns up$i)
  ip link add eth0 netns "$s" type veth peer name vs$i netns "$N"
  ip -n "$N" link set vs$i master br0 up
  ip -n "$s" link set eth0 up
  ip -n "$s" addr add 10.77.0.1$i/24 dev eth0
  ip -n "$s" addr add fd77::1$i/64 dev eth0 nodad
  ip -n "$s" route add default via 10.77.0.1
  ip -n "$s" -6 route add default via fd77::1
done
S1=ap-up1-$$ S2=ap-up2-$$ S3=ap-up3-$$

: > "$T/up.jsonl"
ip netns exec "$N" "$PY" "$TOOLS/fake_upstream.py" --port-file "$T/up.port" \
  --log "$T/up.jsonl" 2> "$T/up.log" &
PIDS+=($!)
wait_for "[ -s '$T/up.port' ]" 10
up_PORT=$(cat "$T/up.port")
serve_start --wrap ip netns exec "$N" -- --max-conns 64 --log "$T/audit.jsonl" \
  --log-interval 0
for i in 1 2; do
  cat > "$T/cfg$i.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "plaintext", "value": "Bearer SECRET$i" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
  ctl attach s$i --netns "/var/run/netns/ap-up$i-$$" --config "$T/cfg$i.json" > /dev/null
done

# get NS ADDR PORT HOST [DELAY]: a GET for HOST to ADDR:PORT, sent DELAY seconds after
# connecting; prints the status line, or what went wrong.
get() {
  ip netns exec "$1" "$PY" - "$2" "$3" "$4" "${5:-0}" <<'PYEOF'
import socket, sys, time
addr, port, host, delay = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
try:
    s = socket.create_connection((addr, port), timeout=1)
    time.sleep(delay)
    s.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host.encode())
    print(s.recv(65536).split(b"\r\n")[0].decode() or "eof")
except OSError as e:
    print(type(e).__name__)
PYEOF
}

# The sandbox itself still gets its credential injected.
assert_eq "$(get "$S1" api.example.com 80 api.example.com)" "HTTP/1.1 200 OK" "s1's own request"

# A peer on the bridge, to s1's address: dropped, never proxied with s1's credential.
assert_eq "$(get "$S3" 10.77.0.11 80 api.example.com)" TimeoutError "a peer to s1's address"
assert_eq "$(get "$S3" fd77::11 80 api.example.com)" TimeoutError "a peer to s1's IPv6 address"
# With IPv6 forwarding on (a runtime that routes for a guest, say) the namespace also
# has each prefix's subnet-router anycast address, which a peer reaches as plainly.
ip netns exec "$S1" sysctl -qw net.ipv6.conf.all.forwarding=1
assert_eq "$(get "$S3" fd77:: 80 api.example.com)" TimeoutError \
  "a peer to s1's subnet-router anycast address"
ip netns exec "$S1" sysctl -qw net.ipv6.conf.all.forwarding=0

# s1 to s2's address on a port where the server may speak first: s1's proxy relays
# the connection (no name), the daemon dials 10.77.0.12:8080 from the node, and s2's
# capture must not take it; a request sent after s1's proxy decided reached s2's
# proxy, which sent it with s2's credential.
out=$(get "$S1" 10.77.0.12 8080 api.example.com 0.7)
assert_not_contains "$out" "200" "s1 to s2's address"

# s1 to s2's address by address (the daemon dials it): no loop through s2's listener.
get "$S1" 10.77.0.12 80 10.77.0.12 > /dev/null

assert_eq "$(upq up '[h for r in reqs for h in hdr(r, "Authorization")]')" \
  '["Bearer SECRET1"]' "credentials the upstream saw"
assert_eq "$(grep -c '"sandbox":"s2"' "$T/audit.jsonl" || true)" 0 "connections s2's proxy took"
for ns in "$S1" "$S2"; do
  chain=$(ip netns exec "$ns" nft list chain inet authproxy nat_prerouting)
  grep -q 'fib daddr type local counter packets [1-9]' <<<"$chain" ||
    fail "no drop counted in $ns's nat_prerouting: $chain"
done
pass "a connection to a sandbox's own address through its uplink is dropped"

# A peer that routes through s1 is a guest to it: proxied, with s1's credential. The
# README's table for a namespace nothing may enter stops it, before capture.
ip -n "$S3" route add 198.51.100.0/24 via 10.77.0.11
assert_eq "$(get "$S3" 198.51.100.7 80 api.example.com)" "HTTP/1.1 200 OK" \
  "a peer routing through s1"
ip netns exec "$S1" nft -f - <<'EOF'
table inet inbound {
  chain prerouting {
    type filter hook prerouting priority -160; policy accept;
    iifname != "lo" ct state new drop
  }
}
EOF
assert_eq "$(get "$S3" 198.51.100.7 80 api.example.com)" TimeoutError \
  "a peer routing through s1, with the README's inbound drop"
assert_eq "$(get "$S1" api.example.com 80 api.example.com)" "HTTP/1.1 200 OK" \
  "s1's own request, with the README's inbound drop"
pass "the README's inbound drop keeps peers out"
