#!/usr/bin/env bash
# The credential callback is the proxy's, never the sandbox's: it answers whoever
# reaches it with the credentials of any sandbox the request body names. A dns.remap
# entry without a port ("mirror.example.com": "127.0.0.1", a local mirror) opens its
# address on every port the sandbox picks, loopback included, and so opened the
# callback on 127.0.0.1 too: `curl -X POST http://mirror.example.com:CBPORT/creds -d
# '{"sandbox":"victim",...}'` got the victim's credential back (invariant I3). So did
# a remap naming the callback's host (cb.watch.test), and, with a callback on an
# address the sandbox may reach, its name itself. The proxy now never dials the
# callback for sandbox traffic: not its address and port (for a loopback callback,
# any loopback address at its port), not its host name and port, whatever opens
# them; the mirror's other ports stay reachable.
#
#   jail: curl --nft--> authproxy (in $HNS) --remap--> fake_callback (refused)
#                                                  \--> fake upstream (allowed)
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start --answer cb.watch.test=127.0.0.1
hupstream mirror
start_callback --in "$HNS"

# cb_host remap-targets... : the sandbox POSTs to the callback's port of each name.
check() {
  local cb_host=$1 names=$2 n
  n=$(wc -w <<< "$names")
  cat > "$T/config.json" <<EOF2
{ "callback": { "url": "http://$cb_host:$CB/creds", "match_hosts": ["*.corp.example"] },
  "egress": { "allow": ["127.0.0.1/32"] },
  "dns": { "remap": { "mirror.example.com": "127.0.0.1", "m6.example.com": "[::1]",
                      "other.example.com": "127.0.0.2", "named.example.com": "cb.watch.test",
                      "port.example.com": "cb.watch.test:$CB" } } }
EOF2
  : > "$T/cb.jsonl"
  out=$(hjail --config "$T/config.json" --user nobody -- sh -c "
    for h in $names; do
      curl -sS -m 5 -i -X POST http://\$h:$CB/creds -H 'Content-Type: application/json' \
        -d '{\"sandbox\":\"victim\",\"host\":\"api.corp.example\",\"port\":443}'; echo
    done
    curl -sS -m 5 http://mirror.example.com:$mirror_PORT/ok" 2>&1)
  assert_not_contains "$out" "Bearer cb-" "callback $cb_host: the sandbox got a callback credential"
  assert_eq "$(grep -c '"event": "call"' "$T/cb.jsonl")" "0" "callback $cb_host: calls reaching the callback"
  assert_eq "$(printf '%s\n' "$out" | grep -c 'X-Authproxy-Error: callback_endpoint')" "$n" \
    "callback $cb_host: refusals naming the callback ($out)"
  assert_contains "$out" '"ok": true' "callback $cb_host: the mirror's other port"
}
check 127.0.0.1 "mirror.example.com m6.example.com other.example.com cb.watch.test"
check localhost "mirror.example.com m6.example.com other.example.com"
check cb.watch.test "named.example.com port.example.com cb.watch.test"
pass "the callback is never reached through a dns.remap target or an allowed address"
