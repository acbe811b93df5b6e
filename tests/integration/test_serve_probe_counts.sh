#!/usr/bin/env bash
# authproxy_connections_total never goes down for a probe. A connection silent for
# 500 ms at a host whose rule injects headers, on a port but 80 and 443, is relayed as
# a probe until one side speaks; if the client speaks first its bytes are judged after
# all (intercepted here). The probe was counted as a tunnel when it started and taken
# out again when the client spoke: a scrape in between saw the tunnel counter one
# higher than the next scrape, which Prometheus reads as a counter reset (a rate()
# spike of the counter's whole value). A probe is now counted once it is settled: as
# what its bytes decide, or as a tunnel when the server speaks first or the
# connection ends first. Until then, the records of open connections give it no action.
#
#   ap-pc-PID (named namespace)           host
#   client (connect, silence, request) --nft--> authproxy serve --> fake upstream (plain)
. "$(dirname "$0")/lib.sh"

start_upstream plain
cat > "$T/cfg.json" <<EOF2
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["plain.example.com"],
    "headers": [ { "name": "Authorization", "type": "plaintext", "value": "Bearer probe" } ] } ],
  "dns": { "remap": { "plain.example.com": "127.0.0.1:$plain_PORT" } } }
EOF2
"$AUTHPROXY" serve --state-dir "$T/state" --control "$T/c.sock" --drain-timeout 1 \
  --log "$T/audit.jsonl" --log-interval 1 >> "$T/serve.log" 2>&1 &
PIDS+=($!)
ctl() { "$AUTHPROXY" ctl --control "$T/c.sock" "$@"; }
wait_for "[ -S '$T/c.sock' ] && ctl health >/dev/null 2>&1"
ns=$(make_netns pc)
ctl attach box --netns "/var/run/netns/$ns" --config "$T/cfg.json" > /dev/null
count() { ctl metrics | awk -v k="authproxy_connections_total{action=\"$1\"}" '$1 == k { print $2 }'; }
upstream_conns() { upq plain 'len([e for e in events if e.get("event") == "conn"])'; }

# A client that connects, waits (past the 500 ms) until $T/go exists, then sends a
# request; and one that connects, waits for $T/go too, and closes without a byte.
ip netns exec "$ns" "$PY" - "$T/go" > "$T/client.out" 2> "$T/client.log" <<'PYEOF' &
import os, socket, sys, time
s = socket.create_connection(("plain.example.com", 8080), timeout=10)
quiet = socket.create_connection(("plain.example.com", 8080), timeout=10)
for _ in range(200):
    if os.path.exists(sys.argv[1]):
        break
    time.sleep(0.05)
quiet.close()
s.sendall(b"GET /probe HTTP/1.1\r\nHost: plain.example.com:8080\r\nConnection: close\r\n\r\n")
print(s.recv(4096).split(b"\r\n")[0].decode())
PYEOF
PIDS+=($!)
client=$!
# Both probes have dialed the upstream: each is decided, and silent still.
wait_for "[ \"\$(upstream_conns)\" = 2 ]"
during_tunnel=$(count tunnel)
during_intercept=$(count intercept)
# An open connection's record (each --log-interval) during a probe has no action yet:
# it used to say tunnel, which a probe that ends intercepted or denied never was.
wait_for "[ \"\$(grep -c '\"event\":\"conn_open\"' '$T/audit.jsonl')\" -ge 2 ]"
assert_eq "$(grep '"event":"conn_open"' "$T/audit.jsonl" | grep -c '"action"')" 0 \
  "conn_open records of the probes with an action: $(grep conn_open "$T/audit.jsonl")"
: > "$T/go"
wait "$client" || fail "client: $(cat "$T/client.log")"
assert_eq "$(cat "$T/client.out")" "HTTP/1.1 200 OK" "the slow client's answer"
assert_eq "$(upq plain 'hdr(reqs[-1], "Authorization")')" "$(jlist "Bearer probe")" \
  "injected for the slow client"
closed_all() {
  ctl metrics | awk '$1 == "authproxy_connections_accepted_total" { a = $2 }
    $1 ~ /^authproxy_connections_closed_total[{]/ { c += $2 } END { exit !(a == c) }'
}
wait_for closed_all
after_tunnel=$(count tunnel)
after_intercept=$(count intercept)
[ "$after_tunnel" -ge "$during_tunnel" ] && [ "$after_intercept" -ge "$during_intercept" ] ||
  fail "a counter went down: tunnel $during_tunnel -> $after_tunnel, intercept $during_intercept -> $after_intercept"
assert_eq "tunnel $after_tunnel intercept $after_intercept" "tunnel 1 intercept 1" \
  "the probe whose client spoke, and the one closed silent"
pass "probes counted once each, as settled; no counter went down"
