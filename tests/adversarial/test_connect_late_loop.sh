#!/usr/bin/env bash
# An upstream connect that succeeded within --connect-timeout, but whose completion
# waits behind a late event loop, is not a 504 upstream_timeout. libuv runs expired
# timers before it polls, so the dial's timer took the connected socket for an
# upstream that never answered. Made deterministic here: the upstream's first SYN is
# dropped (nft, in a namespace of the test's own), the proxy is stopped (SIGSTOP), the
# drop is lifted, and the kernel's SYN retransmit (1 s) connects while the proxy is
# stopped; it is resumed past the 2 s connect timeout. Then the same with nothing
# listening, for the dial and for a credential callback's connect: a connect refused
# in time is reported as the failure it is, not as a timeout.
#
#   jail: curl http://api.example.com/ --nft--> authproxy jail (in $HNS, stopped)
#                                                 --SYN dropped, then retransmitted-->
#                                                 fake upstream (127.0.0.1 of $HNS)
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start
hupstream up
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Team", "type": "plaintext", "value": "agents" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
syns() {
  ip netns exec "$HNS" nft -j list counter inet late syn |
    "$PY" -c 'import json, sys
print([o["counter"]["packets"] for o in json.load(sys.stdin)["nftables"] if "counter" in o][0])'
}

# drop_syns PORT: $HNS drops (and counts) the SYNs it sends to PORT, until the test
# deletes the table.
drop_syns() {
  ip netns exec "$HNS" nft -f - <<EOF
table inet late {
  counter syn { }
  chain out {
    type filter hook output priority -10; policy accept;
    tcp dport $1 tcp flags & (syn | ack) == syn counter name "syn" drop
  }
}
EOF
}

# try N: the scenario, in $T/N; 1 if the stop came too late (stop_in_time).
try() {
  local d=$T/$1
  mkdir "$d"
  drop_syns "$up_PORT"
  # hjail, written out: $! is then the jail's pid (each command execs the next).
  ip netns exec "$HNS" unshare -m --propagation private \
    sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$T/host-resolv.conf" \
    "$AUTHPROXY" jail --config "$T/config.json" --connect-timeout 2 -vv -- \
    curl -sS -m 30 -w " code=%{http_code}" http://api.example.com/ > "$d/out" \
    2> "$d/jail.log" &
  jail_pid=$!
  PIDS+=("$jail_pid")
  # The proxy dialed and its SYN was dropped: stop it before its 2 s run out, let the
  # retransmitted SYN through, and resume it once connected, past the timeout.
  wait_for '[ "$(syns)" -ge 1 ]' 20
  if ! stop_in_time "$jail_pid" "$up_PORT" "$HNS"; then
    ip netns exec "$HNS" nft delete table inet late
    wait "$jail_pid" || true
    return 1
  fi
  ip netns exec "$HNS" nft delete table inet late
  wait_for "ip netns exec '$HNS' ss -Htn state established '( dport = :$up_PORT )' |
    grep -q ."
  sleep 2.5
  kill -CONT "$jail_pid"
  wait "$jail_pid" || true
  out=$(cat "$d/out")
  log=$d/jail.log
}
late_tries try
assert_not_contains "$out" "upstream_timeout" "the answer blames the upstream (got: $out)"
assert_contains "$out" "code=200" "the answer (got: $out)"
assert_contains "$(grep "connected in time, but waited past the connect timeout" "$log")" \
  "connect to 127.0.0.1:$up_PORT" "the deferral is logged"
assert_eq "$(upq up '[v for r in reqs for v in hdr(r, "X-Team")]')" "$(jlist agents)" \
  "the upstream got the request, its header injected"
pass "a connect that succeeded in time is not timed out behind a late loop"

# A connect that failed in time behind a late loop is reported as the failure it is,
# not as a timeout: the same, but the upstream's port has no listener (7 in $HNS),
# so the retransmitted SYN is refused while the proxy is stopped.
# try_refused N: as try; 1 if the stop came too late.
try_refused() {
  local d=$T/refused-$1
  mkdir "$d"
  cat > "$d/config.json" <<EOF
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Team", "type": "plaintext", "value": "agents" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:7" } } }
EOF
  drop_syns 7
  ip netns exec "$HNS" unshare -m --propagation private \
    sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$T/host-resolv.conf" \
    "$AUTHPROXY" jail --config "$d/config.json" --connect-timeout 2 -- \
    curl -sS -m 30 -w " code=%{http_code}" http://api.example.com/ > "$d/out" \
    2> "$d/jail.log" &
  jail_pid=$!
  PIDS+=("$jail_pid")
  wait_for '[ "$(syns)" -ge 1 ]' 20
  if ! stop_in_time "$jail_pid" 7 "$HNS"; then
    ip netns exec "$HNS" nft delete table inet late
    wait "$jail_pid" || true
    return 1
  fi
  ip netns exec "$HNS" nft delete table inet late
  # The retransmitted SYN is answered with a reset: the proxy's socket is gone.
  wait_for "! dialing 7 '$HNS'" 10
  sleep 2.5
  kill -CONT "$jail_pid"
  wait "$jail_pid" || true
  out=$(cat "$d/out")
}
late_tries try_refused
assert_contains "$out" "upstream_unreachable" "a connect refused in time (got: $out)"
assert_not_contains "$out" "upstream_timeout" "a connect refused in time (got: $out)"
pass "a connect that failed in time is reported as a failure behind a late loop"

# The same for a credential callback's connect: refused in time while the proxy is
# stopped, the request fails as a callback that failed, not one that timed out.
# try_callback_refused N: as try_refused, the callback at 127.0.0.1:7.
try_callback_refused() {
  local d=$T/callback-$1
  mkdir "$d"
  cat > "$d/config.json" <<EOF
{ "callback": { "url": "http://127.0.0.1:7/creds", "match_hosts": ["api.example.com"],
                "allow_plain_http": true, "timeout_ms": 2000 },
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
  drop_syns 7
  ip netns exec "$HNS" unshare -m --propagation private \
    sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$T/host-resolv.conf" \
    "$AUTHPROXY" jail --config "$d/config.json" -- \
    curl -sS -m 30 -w " code=%{http_code}" http://api.example.com/ > "$d/out" \
    2> "$d/jail.log" &
  jail_pid=$!
  PIDS+=("$jail_pid")
  wait_for '[ "$(syns)" -ge 1 ]' 20
  if ! stop_in_time "$jail_pid" 7 "$HNS"; then
    ip netns exec "$HNS" nft delete table inet late
    wait "$jail_pid" || true
    return 1
  fi
  ip netns exec "$HNS" nft delete table inet late
  wait_for "! dialing 7 '$HNS'" 10
  sleep 2.5
  kill -CONT "$jail_pid"
  wait "$jail_pid" || true
  out=$(cat "$d/out")
  log=$d/jail.log
}
late_tries try_callback_refused
assert_contains "$out" "callback_failed" "a callback connect refused in time (got: $out)"
assert_not_contains "$out" "callback_timeout" "a callback connect refused in time (got: $out)"
assert_contains "$(cat "$log")" "refused" "the jail's log names the refusal"
assert_eq "$(upq up 'len(reqs)')" "1" "requests that reached the upstream (the first scenario's)"
pass "a callback's connect that failed in time is reported as a failure behind a late loop"
