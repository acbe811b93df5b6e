#!/usr/bin/env bash
# An upstream name with several addresses, over both families: a name whose IPv6
# addresses never answer (packets dropped, as behind a broken IPv6 path) and whose
# IPv4 one works must be reached on the IPv4 one within the connect timeout. The
# proxy used to spend the whole --connect-timeout on the first address and answer 504
# without trying the next; and it tried only the first four addresses in
# getaddrinfo's order, which puts every AAAA record first, so a name with four AAAA
# records never had its IPv4 address tried. Also a name with only an AAAA record,
# and dns.remap to an IPv6 literal.
#
#   jail: client --nft--> authproxy (in $HNS) --getaddrinfo--> fake resolver
#     dual.test  AAAA 2001:db8:dead::1 --> bh0 (dropped in output, counted)
#                A    127.0.0.1        --> fake upstream on [::]:$up_PORT in $HNS
#     quad.test  AAAA 2001:db8:dead::1 to ::4, A 127.0.0.1
#     v6.test    AAAA ::1              --> the same upstream
. "$(dirname "$0")/lib.sh"
. "$SRC/tests/adversarial/adv_lib.sh"

host_ns_start --answer dual.test=2001:db8:dead::1 --answer dual.test=127.0.0.1 \
  --answer quad.test=2001:db8:dead::1 --answer quad.test=2001:db8:dead::2 \
  --answer quad.test=2001:db8:dead::3 --answer quad.test=2001:db8:dead::4 \
  --answer quad.test=127.0.0.1 --answer v6.test=::1
# Non-loopback addresses of both families, so that getaddrinfo's AI_ADDRCONFIG (the
# proxy's) asks for A and AAAA records at all; TEST-NET and documentation prefixes.
ip -n "$HNS" addr add 192.0.2.10/32 dev lo
ip -n "$HNS" addr add 2001:db8::10/128 dev lo nodad
# A route for 2001:db8:dead::/48 (an IPv6 route via lo would be a reject route and
# fail at once), and its packets dropped before they leave: a black hole.
ip -n "$HNS" link add bh0 type veth peer name bh1
ip -n "$HNS" link set bh0 up
ip -n "$HNS" link set bh1 up
ip -n "$HNS" -6 route add 2001:db8:dead::/48 dev bh0 src 2001:db8::10
ip netns exec "$HNS" nft -f - <<'NFT'
table inet blackhole {
  counter dropped { }
  chain out {
    type filter hook output priority 0; policy accept;
    ip6 daddr 2001:db8:dead::/48 counter name "dropped" drop
  }
}
NFT
HUP_BIND=:: hupstream up
cat > "$T/config.json" <<EOF2
{ "dns": { "remap": { "dual.example.com": "dual.test:$up_PORT",
                      "quad.example.com": "quad.test:$up_PORT",
                      "v6.example.com": "v6.test:$up_PORT",
                      "lit6.example.com": "[::1]:$up_PORT" } } }
EOF2

out=$(hjail --config "$T/config.json" --connect-timeout 4 -- "$PY" -c '
import socket
for name in ("dual.example.com", "quad.example.com", "v6.example.com", "lit6.example.com"):
    s = socket.create_connection((name, 80), timeout=20)
    s.sendall(b"GET /%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (name.encode(), name.encode()))
    print(name, s.recv(4096).split(b"\r\n")[0].decode())
' 2> "$T/jail.log")
dropped=$(ip netns exec "$HNS" nft list counter inet blackhole dropped |
  awk '/packets/ { for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }')
[ "${dropped:-0}" -gt 0 ] || fail "the unreachable IPv6 address of dual.test was never tried"
assert_contains "$out" "dual.example.com HTTP/1.1 200 OK" \
  "a name whose first address never answers, reached on its next one"
assert_contains "$out" "quad.example.com HTTP/1.1 200 OK" \
  "a name with four AAAA records that never answer, reached on its A record"
pass "names whose IPv6 addresses never answer are reached on their IPv4 address"
assert_contains "$out" "v6.example.com HTTP/1.1 200 OK" "a name with only an AAAA record"
assert_contains "$out" "lit6.example.com HTTP/1.1 200 OK" "dns.remap to [::1]:port"
assert_eq "$(upq up 'sorted(r["path"] for r in reqs)')" \
  "$(jlist /dual.example.com /lit6.example.com /quad.example.com /v6.example.com)" \
  "requests at the upstream"
pass "an AAAA-only name and a remap to an IPv6 literal are dialed over IPv6"
