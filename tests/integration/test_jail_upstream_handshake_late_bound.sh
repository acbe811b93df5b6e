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
#                                                    piece K when go.K exists
. "$(dirname "$0")/lib.sh"

make_ca "$T/ca" api.example.com

# proxy_read_all PORT: whether the proxy's socket to PORT holds no unread byte (or is
# gone).
proxy_read_all() {
  ss -Htn state established "( dport = :$1 )" | awk '$1 != 0 { x = 1 } END { exit x }'
}

# try N: the scenario, in $T/N; 1 if a stop came too late (stop_in_time).
try() {
  local d=$T/$1 k
  held_jail "$d" 4 -vv
  # The proxy sent its ClientHello and armed what is left of the 2 s dial. Each round
  # stops it before its timer runs out, sends a piece, and resumes it past the
  # timeout.
  wait_for "[ -e '$d/hello' ]" 20
  for k in 1 2 3 4; do
    if ! stop_in_time "$jail_pid" "$port"; then
      wait "$jail_pid" || true
      return 1
    fi
    : > "$d/go.$k"
    wait_for "[ -e '$d/sent.$k' ]"
    sleep 2.3
    kill -CONT "$jail_pid"
    wait_for "proxy_read_all $port"
    dialing "$port" || break # the proxy ended the dial when it ran again
  done
  wait "$jail_pid" || true
  out=$(cat "$d/out")
  log=$d/jail.log
  ended=$k
}
late_tries try
assert_eq "$ended" 4 "the round whose late piece ended the dial"
grants=$(grep -c "its bytes waited unread past the connect timeout" "$log" || true)
assert_eq "$grants" 3 "connect timeouts started anew for a late loop (jail.log)"
assert_contains "$(grep -m1 'anew (3 of 3)' "$log")" "127.0.0.1:$port" \
  "the log names the upstream"
assert_contains "$out" "upstream_timeout" "the fourth late piece ends the dial (got: $out)"
assert_contains "$out" "code=504" "the answer (got: $out)"
pass "a late loop's grace for an upstream handshake is bounded: three times a dial"
