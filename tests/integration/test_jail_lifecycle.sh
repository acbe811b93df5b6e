#!/usr/bin/env bash
# `authproxy jail` leaves nothing behind: after 100 runs no namespace, nft table,
# process, mount or temporary file remains; signals reach CMD and its status is the
# jail's; CMD dies with the jail (it must not outlive its only way out).
. "$(dirname "$0")/lib.sh"

snapshot() {
  {
    echo "netns: $(ip netns list | sort | tr '\n' ' ')"
    echo "procs: $(pgrep -x authproxy | sort | tr '\n' ' ')"
    echo "nsfs mounts: $(grep -c nsfs /proc/self/mountinfo || true)"
    echo "jail dirs: $(ls -d /tmp/authproxy-jail.* 2>/dev/null | tr '\n' ' ')"
    echo "host tables: $(nft list tables 2>/dev/null | tr '\n' ' ')"
  }
}

before=$(snapshot)
for i in $(seq 100); do
  out=$(jail --user nobody -- sh -c 'echo run')
  [ "$out" = run ] || fail "run $i printed '$out'"
done
after=$(snapshot)
assert_eq "$after" "$before" "state after 100 runs"
pass "100 runs leave no namespace, table, process, mount or file"

# Exit statuses: CMD's own, and 128+N when a signal ended it.
set +e
jail --user nobody -- sh -c 'exit 3'; rc=$?
set -e
assert_eq "$rc" 3 "exit status"
"$AUTHPROXY" jail --user nobody -- sleep 30 &
jpid=$!
PIDS+=($jpid)
wait_for "pgrep -P $jpid -x sleep >/dev/null"
kill -TERM "$jpid"
set +e
wait "$jpid"; rc=$?
set -e
assert_eq "$rc" 143 "SIGTERM passed to CMD, status 128+15"
pass "statuses and SIGTERM propagated"

# CMD dies with the jail.
"$AUTHPROXY" jail --user nobody -- sleep 30 &
jpid=$!
PIDS+=($jpid)
wait_for "pgrep -P $jpid -x sleep >/dev/null"
child=$(pgrep -P "$jpid" -x sleep)
kill -KILL "$jpid"
wait "$jpid" 2>/dev/null || true
wait_for "! kill -0 $child 2>/dev/null" 5
assert_eq "$(snapshot | grep -v '^jail dirs')" "$(echo "$before" | grep -v '^jail dirs')" "state after kill -9"
pass "CMD killed with the jail; nothing left but its temporary directory"
# A jail killed with -9 cannot remove its directory; it holds only a resolver file and
# public certificates. Remove it for the next run.
rm -rf /tmp/authproxy-jail.*

# Misuse: clear errors, non-zero status.
set +e
msg=$("$AUTHPROXY" jail 2>&1); rc=$?
set -e
[ $rc -ne 0 ] || fail "jail without a command succeeded"
assert_contains "$msg" "no command given" "missing command message"
set +e
msg=$("$AUTHPROXY" jail --config /nonexistent.json -- true 2>&1); rc=$?
set -e
[ $rc -ne 0 ] || fail "jail with a missing config succeeded"
assert_contains "$msg" "/nonexistent.json" "missing config message"
pass "misuse reported"
