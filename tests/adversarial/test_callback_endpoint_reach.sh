#!/usr/bin/env bash
# The credential callback is the proxy's, never the sandbox's: it answers whoever
# reaches it with the credentials of any sandbox the request body names. A dns.remap
# entry without a port ("mirror.example.com": "127.0.0.1", a local mirror) opens its
# address on every port the sandbox picks, loopback included, and so opened the
# callback on 127.0.0.1 too: `curl -X POST http://mirror.example.com:CBPORT/creds -d
# '{"sandbox":"victim",...}'` got the victim's credential back (invariant I3). The
# proxy now never dials the callback's address and port for sandbox traffic (for a
# loopback callback, any loopback address at its port), whatever opens the address;
# the mirror's other ports stay reachable.
#
#   jail: curl --nft--> authproxy --remap 127.0.0.1:PORT--> fake_callback (refused)
#                                                       \--> fake upstream (allowed)
. "$(dirname "$0")/../integration/lib.sh"

start_upstream mirror
"$PY" "$TOOLS/fake_callback.py" --log "$T/cb.jsonl" --port-file "$T/cb.port" \
  2> "$T/cb.log" &
PIDS+=($!)
wait_for "[ -s '$T/cb.port' ]" 10
CB=$(cat "$T/cb.port")

for cb_host in 127.0.0.1 localhost; do
  cat > "$T/config.json" <<EOF2
{ "callback": { "url": "http://$cb_host:$CB/creds", "match_hosts": ["*.corp.example"] },
  "dns": { "remap": { "mirror.example.com": "127.0.0.1", "m6.example.com": "[::1]",
                      "other.example.com": "127.0.0.2" } } }
EOF2
  : > "$T/cb.jsonl"
  out=$(jail --config "$T/config.json" --user nobody -- sh -c "
    for h in mirror.example.com m6.example.com other.example.com; do
      curl -sS -m 5 -i -X POST http://\$h:$CB/creds -H 'Content-Type: application/json' \
        -d '{\"sandbox\":\"victim\",\"host\":\"api.corp.example\",\"port\":443}'; echo
    done
    curl -sS -m 5 http://mirror.example.com:$mirror_PORT/ok" 2>&1)
  assert_not_contains "$out" "Bearer cb-" "callback $cb_host: the sandbox got a callback credential"
  assert_eq "$(grep -c '"event": "call"' "$T/cb.jsonl")" "0" "callback $cb_host: calls reaching the callback"
  assert_eq "$(printf '%s\n' "$out" | grep -c 'X-Authproxy-Error: callback_endpoint')" "3" \
    "callback $cb_host: refusals naming the callback ($out)"
  assert_contains "$out" '"ok": true' "callback $cb_host: the mirror's other port"
done
pass "the callback is never reached through a dns.remap target's address"
