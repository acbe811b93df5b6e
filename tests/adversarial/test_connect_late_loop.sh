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
# rule_config DIR PORT: DIR/config.json intercepting api.example.com (a header
# injected), sent to 127.0.0.1:PORT.
rule_config() {
  cat > "$1/config.json" <<EOF
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Team", "type": "plaintext", "value": "agents" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$2" } } }
EOF
}
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

# late_connect DIR PORT UNTIL [JAIL_ARG...]: the scenario, in DIR (its config.json
# written). The proxy's first SYN to PORT is dropped; the proxy is stopped before its
# 2 s run out and the drop lifted; once UNTIL holds (a shell condition: the kernel's
# retransmitted SYN answered while the proxy is stopped), the proxy is resumed past
# the timeout. Sets out and log; 1 if the stop came too late (stop_in_time).
late_connect() {
  local d=$1 port=$2 until=$3
  shift 3
  drop_syns "$port"
  # hjail, written out: $! is then the jail's pid (each command execs the next).
  ip netns exec "$HNS" unshare -m --propagation private \
    sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$T/host-resolv.conf" \
    "$AUTHPROXY" jail --config "$d/config.json" "$@" -- \
    curl -sS -m 30 -w " code=%{http_code}" http://api.example.com/ > "$d/out" \
    2> "$d/jail.log" &
  jail_pid=$!
  PIDS+=("$jail_pid")
  wait_for '[ "$(syns)" -ge 1 ]' 20
  if ! stop_in_time "$jail_pid" "$port" "$HNS"; then
    ip netns exec "$HNS" nft delete table inet late
    wait "$jail_pid" || true
    return 1
  fi
  ip netns exec "$HNS" nft delete table inet late
  wait_for "$until" 10
  sleep 2.5
  kill -CONT "$jail_pid"
  wait "$jail_pid" || true
  out=$(cat "$d/out")
  log=$d/jail.log
}

# try N: the retransmitted SYN connects while the proxy is stopped.
try() {
  mkdir "$T/$1"
  rule_config "$T/$1" "$up_PORT"
  late_connect "$T/$1" "$up_PORT" \
    "ip netns exec '$HNS' ss -Htn state established '( dport = :$up_PORT )' | grep -q ." \
    --connect-timeout 2 -vv
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
# not as a timeout: nothing listens on the port (7 in $HNS), so the retransmitted SYN
# is refused while the proxy is stopped (its socket is gone).
try_refused() {
  mkdir "$T/refused-$1"
  rule_config "$T/refused-$1" 7
  late_connect "$T/refused-$1" 7 "! dialing 7 '$HNS'" --connect-timeout 2
}
late_tries try_refused
assert_contains "$out" "upstream_unreachable" "a connect refused in time (got: $out)"
assert_not_contains "$out" "upstream_timeout" "a connect refused in time (got: $out)"
pass "a connect that failed in time is reported as a failure behind a late loop"

# The same for a credential callback's connect (at 127.0.0.1:7): the request fails as
# a callback that failed, not one that timed out.
try_callback_refused() {
  local d=$T/callback-$1
  mkdir "$d"
  cat > "$d/config.json" <<EOF
{ "callback": { "url": "http://127.0.0.1:7/creds", "match_hosts": ["api.example.com"],
                "allow_plain_http": true, "timeout_ms": 2000 },
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
  late_connect "$d" 7 "! dialing 7 '$HNS'"
}
late_tries try_callback_refused
assert_contains "$out" "callback_failed" "a callback connect refused in time (got: $out)"
assert_not_contains "$out" "callback_timeout" "a callback connect refused in time (got: $out)"
assert_contains "$(cat "$log")" "refused" "the jail's log names the refusal"
assert_eq "$(upq up 'len(reqs)')" "1" "requests that reached the upstream (the first scenario's)"
pass "a callback's connect that failed in time is reported as a failure behind a late loop"
