#!/usr/bin/env bash
# `authproxy jail` leaves nothing behind: after 100 runs none of their namespaces is
# still alive (no process, mount or socket holds one), no process and no temporary
# file remains; signals reach CMD and its status is the jail's; CMD dies with the jail
# (it must not outlive its only way out). It looks at the whole machine, so it runs
# alone:
# ctest: RUN_SERIAL
. "$(dirname "$0")/lib.sh"

export TMPDIR=$T/jailtmp
mkdir -p "$TMPDIR"

# Net namespaces still referenced by a process or a mount; sockets are owned by
# processes, so a namespace nobody holds this way is gone.
live_namespaces() {
  { for p in /proc/[0-9]*/ns/net; do readlink "$p" 2>/dev/null || true; done
    awk '$9 == "nsfs" { print $5 }' /proc/self/mountinfo | sed -E 's/.*(net:\[[0-9]+\]).*/\1/'
  } | sort -u
}

# What a jail could wrongly leave in the host itself (it never touches the host's own
# rules or creates named namespaces; a bug in namespace switching would).
machine() {
  echo "host nft tables: $(nft list tables 2>/dev/null | tr '\n' ' ')"
  echo "jail processes: $(pgrep -P $$ -x authproxy | tr '\n' ' ')"
}
before=$(machine)
: > "$T/ns.txt"
for i in $(seq 100); do
  jail --user nobody -- sh -c 'readlink /proc/self/ns/net' >> "$T/ns.txt"
done
# (Namespace inode numbers are reused once freed, so fewer than 100 distinct ones is
# itself a sign that they were.)
assert_eq "$(machine)" "$before" "machine state after 100 runs"
live_namespaces > "$T/live.txt"
assert_eq "$(grep -cFxf "$T/ns.txt" "$T/live.txt" || true)" "0" "namespaces of finished jails still alive"
assert_eq "$(ls -A "$TMPDIR")" "" "temporary files left"
assert_eq "$(pgrep -P $$ -x authproxy || true)" "" "jail processes left"
pass "100 runs leave no namespace, process or file behind"

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

# CMD dies with the jail, and its namespace with it.
"$AUTHPROXY" jail --user nobody -- sleep 30 &
jpid=$!
PIDS+=($jpid)
wait_for "pgrep -P $jpid -x sleep >/dev/null"
child=$(pgrep -P "$jpid" -x sleep)
ns=$(readlink "/proc/$child/ns/net")
kill -KILL "$jpid"
wait "$jpid" 2>/dev/null || true
wait_for "! kill -0 $child 2>/dev/null" 5
wait_for "! live_namespaces | grep -qxF '$ns'" 5
pass "CMD killed with the jail; its namespace is gone"
# A jail killed with -9 cannot remove its directory (a resolver file and public
# certificates, nothing secret); the test's cleanup removes it.

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
