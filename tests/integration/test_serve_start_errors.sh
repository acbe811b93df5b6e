#!/usr/bin/env bash
# `authproxy serve` that cannot start says why, naming the option to fix, and exits
# non-zero: a control socket in a directory that does not exist (libuv reports that
# as "permission denied"), a socket a live daemon listens on, a path that is no
# socket. A stale socket file is replaced. SIGINT, like SIGTERM, stops it with 0.
#
#   host: authproxy serve --state-dir $T/sN --control $T/...
. "$(dirname "$0")/lib.sh"

# start_fails NAME CONTROL: serve must exit 1 at once; prints its standard error.
start_fails() {
  local rc=0
  timeout 20 "$AUTHPROXY" serve --state-dir "$T/$1" --control "$2" 2> "$T/$1.log" || rc=$?
  assert_eq "$rc" 1 "exit status of serve with --control $2"
  cat "$T/$1.log"
}

out=$(start_fails s1 "$T/missing/control.sock")
assert_contains "$out" "its directory $T/missing does not exist" "missing directory named"
assert_contains "$out" "choose another --control path" "the fix"
assert_not_contains "$out" "permission denied" "misleading cause"
[ ! -e "$T/missing" ] || fail "serve created $T/missing"
pass "control socket in a missing directory: the directory named, exit 1"

: > "$T/file"
out=$(start_fails s2 "$T/file/control.sock")
assert_contains "$out" "its directory $T/file is not a directory" "file as directory"
: > "$T/plain"
out=$(start_fails s3 "$T/plain")
assert_contains "$out" "$T/plain exists and is not a socket" "a file at the socket path"
pass "control socket path under a file, or a file: named, exit 1"

# A path longer than a Unix socket address holds: the limit is given, as ctl gives it.
long=$T/$(printf 'd%.0s' $(seq 1 120)).sock
out=$(start_fails s5 "$long")
assert_contains "$out" "control socket path $long is too long (at most 107 bytes)" \
  "a path too long, with the limit"
pass "control socket path too long: the limit named, exit 1"

# A live daemon keeps its socket; a stale socket file is replaced.
"$AUTHPROXY" serve --state-dir "$T/live" --control "$T/live.sock" 2> "$T/live.log" &
LIVE=$!
PIDS+=($LIVE)
wait_for "'$AUTHPROXY' ctl --control '$T/live.sock' health > /dev/null 2>&1"
out=$(start_fails s4 "$T/live.sock")
assert_contains "$out" "another daemon is listening on $T/live.sock" "live socket"
"$AUTHPROXY" ctl --control "$T/live.sock" health > /dev/null || fail "the live daemon lost its socket"
kill -INT "$LIVE"
rc=0
wait "$LIVE" || rc=$?
assert_eq "$rc" 0 "exit status after SIGINT"
[ ! -e "$T/live.sock" ] || fail "the stopped daemon left its socket"
"$PY" -c "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])" "$T/stale.sock"
"$AUTHPROXY" serve --state-dir "$T/s5" --control "$T/stale.sock" 2> "$T/s5.log" &
PIDS+=($!)
wait_for "'$AUTHPROXY' ctl --control '$T/stale.sock' health > /dev/null 2>&1"
pass "a live daemon's socket is refused and kept; a stale one replaced; SIGINT exits 0"

# The state directory: open to others (it holds the sealing key), or not a directory.
mkdir -m 755 "$T/open"
out=$(start_fails open "$T/open.sock")
assert_contains "$out" "$T/open is accessible by group or others (mode 755): chmod 700 $T/open" \
  "a state directory others can read"
[ ! -e "$T/open/key" ] || fail "serve wrote its key into a directory others can read"
: > "$T/afile"
out=$(start_fails afile "$T/afile.sock")
assert_contains "$out" "$T/afile is not a directory" "a state directory that is a file"
rc=0
"$AUTHPROXY" serve --state-dir "$T/s7" > /dev/null 2> "$T/s7.log" || rc=$?
assert_eq "$rc" 2 "exit status of serve without --control"
assert_contains "$(cat "$T/s7.log")" "--state-dir and --control are required" "the missing option"
rc=0
"$AUTHPROXY" serve --state-dir "$T/s7" --control "$T/s7.sock" extra 2> "$T/s7.log" || rc=$?
assert_eq "$rc" 2 "exit status of serve with an extra argument"
assert_contains "$(cat "$T/s7.log")" 'unexpected argument "extra"' "the extra argument"
pass "a state directory others can read, or a file, or missing options: named, nothing made"

# A state key gone (deleted, or left out of a backup) while state sealed under it is
# still there: serve refuses to start, naming what it holds and both ways out, and
# makes no key. It used to make a new one silently and start with every sandbox left
# without network, every stored config gone, and logs blaming "the state key"; the
# next writes sealed new state beside the old under the new key. With the key back,
# it starts and re-attaches the sandbox.
ns=$(make_netns key)
echo '{ "rules": [] }' > "$T/empty.json"
"$AUTHPROXY" serve --state-dir "$T/s6" --control "$T/s6.sock" 2> "$T/s6.log" &
S6=$!
PIDS+=($S6)
wait_for "'$AUTHPROXY' ctl --control '$T/s6.sock' health > /dev/null 2>&1"
s6() { "$AUTHPROXY" ctl --control "$T/s6.sock" "$@"; }
s6 attach box --netns "/var/run/netns/$ns" --config "$T/empty.json" > /dev/null
s6 config-set stored --config "$T/empty.json" > /dev/null
echo value | s6 secret-set KEY
kill -TERM "$S6"
wait "$S6" || fail "the first daemon's exit status: $(cat "$T/s6.log")"
mv "$T/s6/key" "$T/s6-key"
out=$(start_fails s6 "$T/s6.sock")
assert_contains "$out" "the state key $T/s6/key is missing, but $T/s6 holds state sealed under one (pushed secrets, 1 sandbox(es), 1 stored config(s))" \
  "a missing key with sealed state"
assert_contains "$out" "restore the key from a backup" "the fix"
[ ! -e "$T/s6/key" ] || fail "serve made a new key beside state sealed under the old one"
# Under another key: the pushed secrets do not decrypt; the log says how to go on.
head -c 32 /dev/urandom > "$T/s6/key"
chmod 600 "$T/s6/key"
out=$(start_fails s6 "$T/s6.sock")
assert_contains "$out" "cannot read $T/s6/secrets.sealed: it does not decrypt with the state key $T/s6/key" \
  "secrets sealed under another key"
assert_contains "$out" "restore the key it was sealed under" "the fix"
mv "$T/s6-key" "$T/s6/key"
"$AUTHPROXY" serve --state-dir "$T/s6" --control "$T/s6.sock" 2>> "$T/s6.log" &
PIDS+=($!)
wait_for "'$AUTHPROXY' ctl --control '$T/s6.sock' health > /dev/null 2>&1"
assert_contains "$(s6 list)" '"name":	"box"' "the sandbox re-attached with its key back"
assert_contains "$(s6 configs)" '"stored"' "the stored config back"
pass "a missing state key with sealed state: refused, no key made; restored, all back"

# The state key as a dangling symlink beside sealed state is no missing key: the start
# is refused for what the path is (the key is opened without following links), not
# with advice to restore a key that `cp` would then write through the link.
"$AUTHPROXY" serve --state-dir "$T/s7" --control "$T/s7.sock" 2> "$T/s7.log" &
S7=$!
PIDS+=($S7)
wait_for "'$AUTHPROXY' ctl --control '$T/s7.sock' health > /dev/null 2>&1"
echo value | "$AUTHPROXY" ctl --control "$T/s7.sock" secret-set KEY
kill -TERM "$S7"
wait "$S7" || fail "the s7 daemon's exit status: $(cat "$T/s7.log")"
mv "$T/s7/key" "$T/s7-key"
ln -s "$T/s7-elsewhere" "$T/s7/key"
out=$(start_fails s7 "$T/s7.sock")
assert_not_contains "$out" "is missing" "a dangling symlink called a missing key"
assert_contains "$out" "cannot open state key $T/s7/key: Too many levels of symbolic links" \
  "the symlink refused"
[ ! -e "$T/s7-elsewhere" ] || fail "serve wrote a key through the symlink"
pass "a state key that is a dangling symlink is refused as one, not as a missing key"

# A key cut short says how to start afresh in a way the next start takes: without the
# key and the state sealed under it (removing the key alone is refused as a missing
# key since the start checks for one).
rm "$T/s7/key"
printf 0123456789 > "$T/s7/key"
chmod 600 "$T/s7/key"
out=$(start_fails s7 "$T/s7.sock")
assert_contains "$out" "is 10 bytes; it must be exactly 32" "a short key"
assert_contains "$out" "remove it and move away the state sealed under it" "the way to start afresh"
rm "$T/s7/key"
mkdir "$T/s7-old"
mv "$T/s7/secrets.sealed" "$T/s7-old/"
"$AUTHPROXY" serve --state-dir "$T/s7" --control "$T/s7.sock" 2>> "$T/s7.log" &
PIDS+=($!)
wait_for "'$AUTHPROXY' ctl --control '$T/s7.sock' health > /dev/null 2>&1"
pass "a short key's way to start afresh is one the next start takes"
