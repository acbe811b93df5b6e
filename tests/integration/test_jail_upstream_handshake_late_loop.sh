#!/usr/bin/env bash
# An intercepted upstream whose TLS handshake answer arrived in time, but waits unread
# behind a late event loop, is not a 504 upstream_timeout. Under a flood of one
# sandbox's new intercepted connections (a Go program's 1,000 goroutines with its
# default transport, which closes all but 2 idle connections per host and dials
# anew), upstream handshake reads wait their turn behind the sandbox's own (2 reads
# of connections being set up per sandbox per turn): 17 of 5,000 requests got 504
# upstream_timeout ("the destination did not answer in time") after --connect-timeout,
# while nginx on 127.0.0.1 had answered each handshake at once. libuv runs expired
# timers before it polls for input, so the dial's timer took the unread ServerHello
# for silence. Made deterministic here by stopping the proxy (SIGSTOP) while the
# upstream sends its ServerHello, past twice the connect timeout: the rest of the
# handshake has a whole connect timeout from when the proxy ran again (a bound of
# twice the connect timeout from the dial, counting the loop's lateness again, left
# an ASan build too little to finish it in, under load).
#
#   jail netns                                  host netns
#   curl https://api.example.com/  -nft->       authproxy jail (intercepts: a rule)
#                                                 -> tls_held.py: TLS, its ServerHello
#                                                    held until go.1 exists, then 200
. "$(dirname "$0")/lib.sh"

make_ca "$T/ca" api.example.com
# try N: the scenario, in $T/N; 1 if the stop came too late (stop_in_time).
try() {
  local d=$T/$1
  held_jail "$d" 1
  wait_for "[ -e '$d/hello' ]" 20
  # The proxy sent its ClientHello and armed what is left of the 2 s dial: stop it
  # before that runs out, let the upstream answer, and resume it past twice that.
  if ! stop_in_time "$jail_pid" "$port"; then
    wait "$jail_pid" || true
    return 1
  fi
  : > "$d/go.1"
  wait_for "[ -e '$d/sent.1' ]"
  sleep 4.5
  kill -CONT "$jail_pid"
  wait "$jail_pid" || true
  out=$(cat "$d/out")
}
late_tries try
assert_not_contains "$out" "upstream_timeout" "the answer blames the upstream (got: $out)"
assert_contains "$out" "ok code=200" "the answer (got: $out)"
pass "an upstream handshake answered in time is read after a late loop, not timed out"
