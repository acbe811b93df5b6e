#!/usr/bin/env bash
# `authproxy jail --log FIFO` with no reader on the FIFO waits for one, and says so. A
# developer who sees it wait presses Ctrl-C (or a supervisor kills it): the jail used
# to wait after writing its directory in TMPDIR (CMD's resolv.conf and a 220 KB CA
# bundle), so every such stop left one behind. It now waits before it makes anything,
# and once a reader comes it goes on: CMD runs and its records reach the reader.
. "$(dirname "$0")/lib.sh"

start_upstream up
cat > "$T/config.json" <<EOF
{ "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF

export TMPDIR=$T/jailtmp
mkdir -p "$TMPDIR"
FIFO=$T/audit.fifo
mkfifo "$FIFO"
# If a jail is stuck opening the FIFO, a reader lets it go so that cleanup ends.
CLEANUP_HOOKS+=("exec 9<>'$FIFO'")

# jail N: a jail logging to the FIFO, its stderr in $T/jailN.err; CMD makes a request.
jail() {
  "$AUTHPROXY" jail --config "$T/config.json" --log "$FIFO" -- \
    curl -sS -m 10 -o /dev/null -w '%{http_code}' http://api.example.com/fifo \
    > "$T/jail$1.out" 2> "$T/jail$1.err" &
  JAIL_PID=$!
  PIDS+=($JAIL_PID)
  wait_for "grep -q 'a FIFO that no reader has open' '$T/jail$1.err'"
}

# Stopped while it waits: nothing is left in TMPDIR. (A Ctrl-C is a SIGINT, which
# ends the jail the same way, by its default action; bash takes a child's death by
# SIGINT for its own Ctrl-C, so the test sends the other two.)
for sig in TERM HUP; do
  jail "$sig"
  kill -"$sig" "$JAIL_PID"
  rc=0
  wait "$JAIL_PID" || rc=$?
  [ "$rc" -ne 0 ] || fail "SIG$sig: the jail that waited for a reader exited 0"
  assert_eq "$(ls -A "$TMPDIR")" "" "TMPDIR after SIG$sig to a jail waiting for its reader"
  pass "SIG$sig while the jail waits for its log's reader: exit $rc, nothing left"
done

# A reader comes: the jail goes on, CMD runs, and the reader gets the jail's records.
jail go
cat "$FIFO" > "$T/records.jsonl" &
READER=$!
PIDS+=($READER)
rc=0
wait "$JAIL_PID" || rc=$?
assert_eq "$rc/$(cat "$T/jailgo.out")" "0/200" "the jail once its reader came"
wait "$READER" || true
grep -q '"path": *"/fifo"' "$T/records.jsonl" ||
  fail "the reader got no record of the request: $(head -c 300 "$T/records.jsonl")"
assert_eq "$(ls -A "$TMPDIR")" "" "TMPDIR after the jail ended"
pass "a reader comes: the jail goes on, its records reach the reader"

# A --log the proxy cannot use is named as what it is, by the jail and the daemon
# alike: a symbolic link (not followed) was "Too many levels of symbolic links", and a
# socket "No such device or address", after the line that said why.
ln -s "$FIFO" "$T/link"
"$PY" -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])' "$T/sock"
for what in link sock; do
  out=$("$AUTHPROXY" jail --log "$T/$what" -- true 2>&1) && fail "jail --log $what ran"
  assert_not_contains "$out" "Too many levels" "jail --log $what"
  assert_not_contains "$out" "No such device" "jail --log $what"
  out=$(timeout 10 "$AUTHPROXY" serve --state-dir "$T/state-$what" --control "$T/c-$what.sock" \
    --log "$T/$what" 2>&1) && fail "serve --log $what ran"
  assert_not_contains "$out" "Too many levels" "serve --log $what"
  assert_not_contains "$out" "No such device" "serve --log $what"
  case $what in
    link) assert_contains "$out" "--log $T/link: a symbolic link, which is not followed" "serve" ;;
    sock) assert_contains "$out" "--log $T/sock: neither a file nor a FIFO" "serve" ;;
  esac
done
pass "a --log that is a symbolic link or a socket is named as such"
