#!/usr/bin/env bash
# The proxy dials from the host, so a connection to one of the host's own addresses
# (an uplink's, a bridge's: often the gateway a sandbox sees in its routes) reaches
# the host's services as loopback does, past any firewall that keeps the sandboxes'
# addresses out. Loopback was refused by default; the host's other addresses were
# not. With the README's credential callback on http://127.0.0.1:PORT served on
# 0.0.0.0 and no remap or allow entry at all, a sandbox ran
#   curl -X POST http://HOST-ADDRESS:PORT/creds -d '{"sandbox":"victim",...}'
# and got the victim's credential back (found by the second-look review); any other
# service of the host's was reached the same way. An address the host's kernel routes
# as local is now refused like loopback (403 blocked_address) unless a remap names it
# or an egress.allow entry covers it, and a loopback callback's port is refused on it
# whatever opens it (callback_endpoint).
#
#   jail (in $HNS, whose lo also has 192.0.2.10) --> authproxy --> 192.0.2.10:
#     fake_callback on 0.0.0.0:CB, fake upstream on 0.0.0.0:OTHER
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start
host_ns_ipv4
HUP_BIND=0.0.0.0 hupstream other
start_callback --in "$HNS" --bind 0.0.0.0

# probe CONFIG: from a jail in $HNS, asks the callback for the victim's credential and
# the other service for /ok, both at the host's address.
probe() {
  hjail --config "$1" --user nobody -- sh -c "
    curl -sS -m 5 -i -X POST http://192.0.2.10:$CB/creds -H 'Content-Type: application/json' \
      -d '{\"sandbox\":\"victim\",\"host\":\"api.corp.example\",\"port\":443}'; echo
    curl -sS -m 5 -i http://192.0.2.10:$other_PORT/ok; echo
    curl -sS -m 5 -i -g http://[64:ff9b::c000:20a]:$CB/creds; echo
    curl -sS -m 5 -i -g http://[64:ff9b::c000:20a]:$other_PORT/ok" 2>&1
}

for cb_host in 127.0.0.1 localhost; do
  cat > "$T/config.json" <<EOF2
{ "callback": { "url": "http://$cb_host:$CB/creds", "match_hosts": ["*.corp.example"] } }
EOF2
  out=$(probe "$T/config.json")
  assert_not_contains "$out" "Bearer cb-" "callback $cb_host: the sandbox got a callback credential"
  assert_contains "$out" "X-Authproxy-Error: callback_endpoint" "callback $cb_host: the callback's refusal"
  assert_contains "$out" "X-Authproxy-Error: blocked_address" "callback $cb_host: the other service's refusal"
  assert_not_contains "$out" '"ok": true' "callback $cb_host: the host's other service was reached"
  # The host's address as NAT64 embeds it (64:ff9b::192.0.2.10), which a NAT64
  # translator on the host or its network takes to the host: refused the same.
  assert_not_contains "$out" "upstream_unreachable" "callback $cb_host: a NAT64 form of the host's address was dialed"
  assert_eq "$(grep -c 'X-Authproxy-Error: callback_endpoint' <<< "$out")" "2" \
    "callback $cb_host: the callback's refusals (the address, its NAT64 form)"
  assert_eq "$(grep -c 'X-Authproxy-Error: blocked_address' <<< "$out")" "2" \
    "callback $cb_host: the other service's refusals (the address, its NAT64 form)"

  # The operator opens the address: its other services are reached, the callback not.
  cat > "$T/config.json" <<EOF2
{ "callback": { "url": "http://$cb_host:$CB/creds", "match_hosts": ["*.corp.example"] },
  "egress": { "allow": ["192.0.2.10"] } }
EOF2
  out=$(probe "$T/config.json")
  assert_not_contains "$out" "Bearer cb-" "callback $cb_host, address allowed: the sandbox got a credential"
  assert_eq "$(grep -c 'X-Authproxy-Error: callback_endpoint' <<< "$out")" "2" \
    "callback $cb_host, address allowed: the callback's refusals (the address, its NAT64 form)"
  assert_contains "$out" '"ok": true' "callback $cb_host, address allowed: the other service"
done
assert_eq "$(grep -c '"event": "call"' "$T/cb.jsonl" || true)" "0" "calls that reached the callback"

# An address a prohibit or blackhole route of the host's refuses is not the host's
# own: the dial fails as the kernel says, not as blocked_address with a warning
# that the kernel could not be asked (as it did when its route lookup failed so).
ip -n "$HNS" route add prohibit 203.0.113.0/24
ip -n "$HNS" route add blackhole 198.51.100.0/24
echo '{}' > "$T/plain.json"
out=$(hjail --config "$T/plain.json" --user nobody -- sh -c "
  curl -sS -m 5 -i http://203.0.113.5/; echo; curl -sS -m 5 -i http://198.51.100.5/" 2>&1)
assert_not_contains "$out" "blocked_address" "an address a route refuses: blocked_address"
assert_not_contains "$out" "cannot ask the kernel" "an address a route refuses: a kernel failure"
assert_eq "$(grep -c 'X-Authproxy-Error: upstream_unreachable' <<< "$out")" "2" \
  "an address a route refuses: unreachable"
pass "the host's own address is refused like loopback, and the callback on it whatever opens it"
