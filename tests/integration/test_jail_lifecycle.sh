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

# Net namespaces still referenced by a process or a mount (sockets are owned by
# processes, so a namespace nobody holds this way is gone), as lines
# "net:[INODE] HOLDER": HOLDER is /proc/PID/ns/net or an nsfs mount point (in
# mountinfo the root, field 4, names the namespace; the filesystem type follows the
# "-" that ends the optional fields).
ns_holders() {
  for p in /proc/[0-9]*/ns/net; do echo "$(readlink "$p" 2>/dev/null) $p"; done
  awk '{ for (i = 7; i < NF; i++) if ($i == "-") break
         if ($(i + 1) == "nsfs" && $4 ~ /^net:/) print $4, $5 }' /proc/self/mountinfo
}
live_namespaces() {
  ns_holders | awk '{ print $1 }' | sort -u
}

# What a jail could wrongly leave in the host itself (it never touches the host's own
# rules or creates named namespaces; a bug in namespace switching would).
machine() {
  echo "host nft tables: $(nft list tables 2>/dev/null | tr '\n' ' ')"
  echo "jail processes: $(pgrep -P $$ -x authproxy | tr '\n' ' ')"
}
# The network namespace's cookie (SO_NETNS_COOKIE): unlike its inode number, which
# the kernel gives to the next namespace of any process once this one is freed, it
# is never reused while the machine runs.
COOKIE_PY='import socket; s = socket.socket(); print(int.from_bytes(s.getsockopt(socket.SOL_SOCKET, 71, 8), "little"))'
host_cookie=$(nsenter --net=/proc/self/ns/net "$PY" -c "$COOKIE_PY")
case "$host_cookie" in
  [1-9]*) ;;
  *) fail "cannot read a namespace's cookie through nsenter: '$host_cookie'" ;;
esac
# One holder of each live namespace named in the file given.
holders() {
  ns_holders | awk 'NR == FNR { want[$0] = 1; next } ($1 in want) && !seen[$1]++' "$1" -
}

before=$(machine)
: > "$T/ns.txt"
: > "$T/cookies.txt"
for i in $(seq 100); do
  jail --user nobody -- sh -c "readlink /proc/self/ns/net; $PY -c '$COOKIE_PY'" > "$T/one.txt"
  sed -n 1p "$T/one.txt" >> "$T/ns.txt"
  sed -n 2p "$T/one.txt" >> "$T/cookies.txt"
done
assert_eq "$(grep -c . "$T/cookies.txt")" "100" "namespace cookies printed by the jailed command"
assert_eq "$(machine)" "$before" "machine state after 100 runs"
# A live namespace with a finished jail's inode number is that jail's only if its
# cookie is the same: anything on the machine may have been given the number since.
holders "$T/ns.txt" > "$T/held.txt"
while read -r ns holder; do
  cookie=$(nsenter --net="$holder" "$PY" -c "$COOKIE_PY" 2>/dev/null) || continue
  if grep -qxF "$cookie" "$T/cookies.txt"; then
    fail "a finished jail's namespace ($ns, cookie $cookie) is still alive, held by $holder"
  fi
done < "$T/held.txt"
assert_eq "$(ls -A "$TMPDIR")" "" "temporary files left"
assert_eq "$(pgrep -P $$ -x authproxy || true)" "" "jail processes left"
pass "100 runs leave no namespace, process or file behind"

# What CMD leaves running ends with it: a background process, one detached with
# setsid, and an orphan whose parent exited first (it comes to the jail, CMD's
# subreaper).
rc=0
jail --user nobody -- sh -c '
  sleep 41 & echo $!
  setsid sleep 42 > /dev/null 2>&1 < /dev/null & echo $!
  sh -c "sleep 43 > /dev/null 2>&1 < /dev/null & echo \$!"
  exit 5' > "$T/left.txt" || rc=$?
assert_eq "$rc" 5 "the jail's status with processes left behind"
assert_eq "$(grep -c . "$T/left.txt")" 3 "process ids printed"
survivors=
for pid in $(cat "$T/left.txt"); do
  if grep -qs '^sleep$' "/proc/$pid/comm"; then
    kill -KILL "$pid"
    survivors="$survivors $pid"
  fi
done
assert_eq "$survivors" "" "CMD's sleeps that outlived the jail (now killed)"
pass "processes CMD left running end with the jail"

# Open files: the jail raises its own soft limit to the hard one (two descriptors per
# connection), and CMD runs with the caller's.
prlimit --nofile=512:4096 "$AUTHPROXY" jail --user nobody -- sleep 30 &
jpid=$!
PIDS+=($jpid)
wait_for "pgrep -P $jpid -x sleep >/dev/null"
child=$(pgrep -P "$jpid" -x sleep)
assert_eq "$(awk '/^Max open files/ { print $4, $5 }' /proc/$jpid/limits)" "4096 4096" \
  "the jail's open-file limits"
assert_eq "$(awk '/^Max open files/ { print $4, $5 }' /proc/$child/limits)" "512 4096" \
  "CMD's open-file limits"
kill -TERM "$jpid"
wait "$jpid" 2>/dev/null || true
pass "the jail raises its open-file limit; CMD keeps the caller's"

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
# Its directory (a resolver file and public certificates) was removed once CMD had
# started: CMD's mount namespace holds its own binds of them.
assert_eq "$(ls -A "$TMPDIR")" "" "the directory of a jail killed with -9"
pass "a jail killed with -9 leaves no directory behind"

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
# A temporary directory others may write without the sticky bit: another user could
# swap the jail's directory for a symlink, and root would remove files elsewhere.
mkdir -p "$T/opentmp" "$T/stickytmp"
chmod 0777 "$T/opentmp"
chmod 1777 "$T/stickytmp"
set +e
msg=$(TMPDIR=$T/opentmp "$AUTHPROXY" jail --user nobody -- true 2>&1); rc=$?
set -e
[ $rc -ne 0 ] || fail "jail with a shared, non-sticky TMPDIR succeeded"
assert_contains "$msg" "is writable by others and not sticky" "unsafe TMPDIR message"
assert_eq "$(ls -A "$T/opentmp")" "" "files made in the unsafe TMPDIR"
TMPDIR=$T/stickytmp "$AUTHPROXY" jail --user nobody -- true ||
  fail "jail with a sticky shared TMPDIR (as /tmp) failed"
pass "misuse reported"
