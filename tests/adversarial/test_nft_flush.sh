#!/usr/bin/env bash
# A sandbox with CAP_NET_ADMIN removes the capture rules (`nft flush ruleset`, `nft
# delete table inet authproxy`) and tries to get out (invariant I1: flushed rules
# mean no network, never an open one). The sandbox's namespace has only lo, whose
# default routes lead back into lo: with the rules gone, connections to names and
# addresses go nowhere, a direct connection to the listener is still refused as a
# loop, added routes change nothing, and the upstream hears nothing after the flush.
# The attacker runs as root holding only CAP_NET_ADMIN and CAP_NET_RAW (full root in
# the jail could simply setns(2) to the host, which no rule can stop: a runtime must
# not grant it). Without CAP_NET_ADMIN the table cannot be touched at all.
#
# With an uplink (a runtime's veth, `--netns`), flushing does open the sandbox: the
# uplink's routes are then unfiltered. That is why a runtime must never grant
# CAP_NET_ADMIN to a sandbox with an uplink; it is not tested here as a property.
#
#   jail (lo only, attacker: root with CAP_NET_ADMIN + CAP_NET_RAW)
#   authproxy (in $HNS) --remap--> fake upstream
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"
require_cmd setpriv nft

host_ns_start
hupstream up
cat > "$T/config.json" <<EOF
{ "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF

cat > "$T/attack.sh" <<'EOF'
#!/bin/sh
# $1: how to remove the rules ("flush" or "delete"); $2: a scratch directory.
# Prints key=value lines.
lport=$(ss -Hltn | awk '$4 ~ /^0\.0\.0\.0:/ { split($4, a, ":"); if (a[2] != "53") print a[2] }')
before=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 http://api.example.com/before)
echo "before=$before"
if [ "$1" = flush ]; then nft flush ruleset; else nft delete table inet authproxy; fi
echo "removed=$?"
echo "rules=$(nft list ruleset | wc -l)"
ip route add 10.0.0.0/8 dev lo 2>/dev/null
ip -6 route add 2000::/3 dev lo 2>/dev/null
# Each attempt in parallel (the unreachable ones wait out --max-time).
try() {
  code=$(curl -sS -o /dev/null -w "%{http_code}" --max-time 2 -g -H "Host: api.example.com" "$3" 2>/dev/null)
  echo "$1=${code:-none}" > "$2/try.$1"
}
try after_name "$2" http://api.example.com/after &
try after_addr "$2" http://10.1.2.3/after-addr &
try after_v6 "$2" 'http://[2001:db8::1]/after-v6' &
try after_listener "$2" "http://127.0.0.1:$lport/after-listener" &
wait
cat "$2"/try.after_*
rm -f "$2"/try.after_*
# DNS still reaches the responder (its socket is in the namespace) and is still
# answered locally: nothing is forwarded.
echo "dns=$(getent hosts exfil-after-flush.example.com | awk '{ print $1 }')"
EOF
chmod 755 "$T/attack.sh"

for how in flush delete; do
  : > "$T/up.jsonl"
  hjail --config "$T/config.json" -- setpriv --bounding-set -all,+net_admin,+net_raw -- \
    "$T/attack.sh" "$how" "$T" > "$T/$how.out" 2> "$T/$how.log"
  v() { sed -n "s/^$1=//p" "$T/$how.out"; }
  assert_eq "$(v before)" "200" "$how: request before removing the rules"
  assert_eq "$(v removed)" "0" "$how: the attacker removed the rules"
  assert_eq "$(v rules)" "0" "$how: rules left"
  for k in after_name after_addr after_v6 after_listener; do
    case "$(v $k)" in
      none|000) ;;
      *) fail "$how: $k: the sandbox got HTTP $(v $k) with the rules removed" ;;
    esac
  done
  case "$(v dns)" in
    198.1[89].*) ;;
    *) fail "$how: DNS after the flush: '$(v dns)'" ;;
  esac
  assert_eq "$(upq up 'sorted(r["path"] for r in reqs)')" "$(jlist /before)" "$how: upstream requests"
  pass "$how: rules removed with CAP_NET_ADMIN: names, addresses, IPv6 and the listener all unreachable"
done
assert_eq "$(resolved 'len(qs)')" "0" "names the proxy resolved"
assert_eq "$(host_counter offhost)" "0" "packets that left the host"

# Without CAP_NET_ADMIN (an ordinary user, or root with it dropped) the rules stay.
for who in nobody noadmin; do
  if [ $who = nobody ]; then
    hjail --config "$T/config.json" --user nobody -- sh -c \
      'nft flush ruleset; echo "rc=$?"; nft delete table inet authproxy; echo "rc=$?"' \
      > "$T/$who.out" 2>&1 || true
  else
    hjail --config "$T/config.json" -- setpriv --bounding-set -net_admin -- sh -c \
      'nft flush ruleset; echo "rc=$?"; nft delete table inet authproxy; echo "rc=$?"' \
      > "$T/$who.out" 2>&1 || true
  fi
  assert_not_contains "$(grep '^rc=' "$T/$who.out")" "rc=0" "$who removed the rules"
  assert_contains "$(cat "$T/$who.out")" "Operation not permitted" "$who: nft error"
done
pass "without CAP_NET_ADMIN the rules cannot be removed"
