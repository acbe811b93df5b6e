#!/usr/bin/env bash
# One state directory, one daemon. A second `authproxy serve` given the state
# directory of a running one (a second unit instance, an operator's manual start, a
# restart that does not wait for the old process) must refuse to start before it reads
# any state. It used to start: it tried to re-attach every sandbox found there (failing
# only because the running daemon holds the namespace's DNS port), served with its own
# control socket, listed the running daemon's live sandboxes as not_attached (where a
# runtime's DELETE, as CNI DEL sends, removes their state files), and both daemons
# rewrote the same secrets and config files from their own copies in memory.
#
#   ap-lk-PID      host
#   curl --nft-->  authproxy serve A (--state-dir $T/state, --control $T/control.sock)
#                  authproxy serve B, same state dir: must exit at once, A unaffected
. "$(dirname "$0")/lib.sh"

start_upstream up
STATE=$T/state
SOCK=$T/control.sock
api_config "sk-lock-$$"

"$AUTHPROXY" serve --state-dir "$STATE" --control "$SOCK" --secrets-dir "$T/secrets" -v \
  >> "$T/serve-a.log" 2>&1 &
A_PID=$!
PIDS+=($A_PID)
wait_for "[ -S '$SOCK' ] && '$AUTHPROXY' ctl --control '$SOCK' health >/dev/null 2>&1"
ctl() { "$AUTHPROXY" ctl --control "$SOCK" "$@"; }

ns=$(make_netns lk)
ctl attach box --netns "/var/run/netns/$ns" --config "$T/config.json" > /dev/null

# request N: one request from the sandbox; prints the Authorization the upstream saw.
request() {
  ip netns exec "$ns" curl -sS -m 5 -o /dev/null "http://api.example.com/req/$1" \
    2>> "$T/curl.log" || true
  upq up "[hdr(r, 'Authorization') for r in reqs if r['path'] == '/req/$1']"
}
assert_eq "$(request 1)" "[[\"Bearer sk-lock-$$\"]]" "request through daemon A"
port=$(ctl get box | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["listener_port"])')

# second DAEMON_ARGS...: starts a second daemon on the same state directory, bounded in
# time; prints its exit status (124: still running after 10 s).
second() {
  local rc=0
  timeout 10 "$AUTHPROXY" serve --state-dir "$STATE" --secrets-dir "$T/secrets" "$@" -v > "$T/serve-b.log" 2>&1 || rc=$?
  echo "$rc"
}

# The same control socket: the daemon used to try to re-attach every sandbox before it
# found the socket taken.
rc=$(second --control "$SOCK")
[ "$rc" != 0 ] && [ "$rc" != 124 ] || fail "a second daemon on the same state dir: exit $rc"
assert_contains "$(cat "$T/serve-b.log")" "$STATE is in use by another authproxy serve" \
  "the refusal names the state directory"
assert_not_contains "$(cat "$T/serve-b.log")" "re-attached" "the second daemon re-attached"
assert_eq "$(request 2)" "[[\"Bearer sk-lock-$$\"]]" "request through daemon A after B"
got=$(ctl get box | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["listener_port"])')
assert_eq "$got" "$port" "daemon A's listener port"
ip netns exec "$ns" nft list table inet authproxy > "$T/nft.txt"
assert_contains "$(cat "$T/nft.txt")" "redirect to :$port" "the sandbox's redirect is A's"
pass "a second daemon on the same state dir and socket is refused; the sandbox keeps A"

# Another control socket: the daemon used to start and serve beside A.
rc=$(second --control "$T/other.sock")
[ "$rc" != 0 ] && [ "$rc" != 124 ] || fail "a second daemon with its own socket: exit $rc"
assert_contains "$(cat "$T/serve-b.log")" "is in use by another authproxy serve" \
  "the refusal says why"
[ ! -e "$T/other.sock" ] || fail "the refused daemon made a control socket"
assert_eq "$(request 3)" "[[\"Bearer sk-lock-$$\"]]" "request through daemon A after B"
pass "a second daemon on the same state dir with its own socket is refused"

# The lock goes with the process: after kill -9, a new daemon starts and re-attaches.
# A daemon killed in the middle of a write leaves its temporary file: the next one
# removes it (it is sealed, but could outlive a secret deleted later).
kill -9 "$A_PID"
wait "$A_PID" 2>/dev/null || true
cp "$STATE/sandboxes/box.sealed" "$STATE/sandboxes/box.sealed.tmp.$A_PID"
cp "$STATE/secrets.sealed" "$STATE/secrets.sealed.tmp.$A_PID" 2>/dev/null ||
  cp "$STATE/sandboxes/box.sealed" "$STATE/secrets.sealed.tmp.$A_PID"
"$AUTHPROXY" serve --state-dir "$STATE" --control "$SOCK" --secrets-dir "$T/secrets" -v \
  >> "$T/serve-c.log" 2>&1 &
PIDS+=($!)
wait_for "[ -S '$SOCK' ] && '$AUTHPROXY' ctl --control '$SOCK' health >/dev/null 2>&1"
assert_eq "$(request 4)" "[[\"Bearer sk-lock-$$\"]]" "request after a restart"
left=$(find "$STATE" -name '*.tmp.*')
assert_eq "$left" "" "temporary files left by the killed daemon"
pass "after kill -9 the state directory is free: the next daemon re-attaches"
