#!/usr/bin/env bash
# A late loop's grace for an upstream TLS handshake is bounded. When the connect
# timeout falls due with the upstream's handshake bytes waiting unread, the handshake
# gets a whole connect timeout anew (test_jail_upstream_handshake_late_loop), but at
# most three times a dial: an upstream that trickles its handshake, its bytes found
# waiting each time the loop happens to be late, cannot stretch it without end.
# Here the upstream's first flight (ServerHello .. ServerHelloDone) goes out in four
# pieces, each while the proxy is stopped (SIGSTOP) past the 2 s connect timeout:
# the first three are granted, each logged, and the fourth is a 504 upstream_timeout.
#
#   jail netns                                  host netns
#   curl https://api.example.com/  -nft->       authproxy jail (intercepts: a rule)
#                                                 -> tls_held.py: the flight in 4 pieces,
#                                                    piece K when $T/go.K exists
. "$(dirname "$0")/lib.sh"

make_ca "$T/ca" api.example.com
"$PY" "$SRC/tests/tools/tls_held.py" "$T" "$T/ca/server.pem" "$T/ca/server.key" 4 \
  2> "$T/held.log" &
PIDS+=($!)
wait_for "[ -s '$T/up.port' ]"
port=$(cat "$T/up.port")
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Team", "type": "plaintext", "value": "agents" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$port" } } }
EOF
"$AUTHPROXY" jail -vv --config "$T/config.json" --upstream-ca "$T/ca/ca.pem" \
  --connect-timeout 2 --user nobody -- \
  curl -sS -m 60 -w " code=%{http_code}" https://api.example.com/ > "$T/out" 2> "$T/jail.log" &
jail_pid=$!
PIDS+=("$jail_pid")
CLEANUP_HOOKS+=("kill -CONT $jail_pid 2>/dev/null")

# Whether the proxy's socket to the upstream holds no unread byte (or is gone).
proxy_read_all() {
  ss -Htn state established "( dport = :$port )" | awk '$1 != 0 { x = 1 } END { exit x }'
}

# The proxy sent its ClientHello and armed what is left of the 2 s dial. Each round
# stops it before its timer runs out, sends a piece, and resumes it past the timeout.
wait_for "[ -e '$T/hello' ]" 20
for k in 1 2 3 4; do
  kill -STOP "$jail_pid"
  : > "$T/go.$k"
  wait_for "[ -e '$T/sent.$k' ]"
  sleep 2.3
  kill -CONT "$jail_pid"
  wait_for proxy_read_all
done
wait "$jail_pid" || true
out=$(cat "$T/out")
grants=$(grep -c "its bytes waited unread past the connect timeout" "$T/jail.log" || true)
assert_eq "$grants" 3 "connect timeouts started anew for a late loop (jail.log)"
assert_contains "$(grep -m1 'anew (3 of 3)' "$T/jail.log")" "127.0.0.1:$port" \
  "the log names the upstream"
assert_contains "$out" "upstream_timeout" "the fourth late piece ends the dial (got: $out)"
assert_contains "$out" "code=504" "the answer (got: $out)"
pass "a late loop's grace for an upstream handshake is bounded: three times a dial"
