#!/usr/bin/env bash
# Out of memory at start: the jail and the daemon refuse to start and say why.
# tests/tools/failmalloc.c (LD_PRELOAD, plain build only) fails the first allocation of
# 256 KiB: in the jail, the buffer that reads the system CA bundle (grown by doubling,
# it takes that size on the way to any bundle over 128 KiB); in the daemon, started on
# an empty state directory, the loop's read buffer.
#
#   host netns only: authproxy jail -- touch FILE; authproxy serve
. "$(dirname "$0")/lib.sh"

SHIM=${AUTHPROXY_BUILD:-$SRC/build}/tests/libfailmalloc.so
if [ ! -f "$SHIM" ]; then
  echo "SKIP: $SHIM not built (the sanitizer build has no allocation shim)"
  exit 77
fi
fail256k() {  # CMD...: runs CMD with the first 256 KiB allocation of authproxy failing
  FAILMALLOC_EXE=authproxy FAILMALLOC_SIZE=262144 FAILMALLOC_NTH=1 \
    FAILMALLOC_LOG="$T/fm.log" LD_PRELOAD="$SHIM" "$@"
}

# 1. The jail: the system bundle could not be read. It used to go on with a bundle
#    holding the sandbox CA alone, so that every host the proxy only tunnels failed
#    to verify in CMD, with no word why.
bundle=/etc/ssl/certs/ca-certificates.crt
if [ -f "$bundle" ] && [ "$(stat -c %s "$bundle")" -gt $((128 << 10)) ]; then
  : > "$T/fm.log"
  rc=0
  fail256k "$AUTHPROXY" jail -- touch "$T/ran" > "$T/jail.out" 2>&1 || rc=$?
  grep -q "allocation #1 of 262144 bytes fails" "$T/fm.log" ||
    fail "the shim failed no allocation: $(cat "$T/fm.log")"
  [ ! -e "$T/ran" ] || fail "CMD ran with the system CA bundle unread: $(cat "$T/jail.out")"
  assert_eq "$rc" "125" "the jail's status"
  assert_contains "$(cat "$T/jail.out")" "cannot read $bundle: Cannot allocate memory" \
    "the jail's error"
  pass "jail: the system CA bundle unread for want of memory stops the jail"
else
  echo "skipped: $bundle is missing or under 128 KiB here"
fi

# 2. The daemon: its loop's read buffer. It used to exit 1 without a word.
mkdir -m 700 "$T/state"
: > "$T/fm.log"
rc=0
fail256k timeout 20 "$AUTHPROXY" serve --state-dir "$T/state" --control "$T/c.sock" \
  > "$T/serve.out" 2>&1 || rc=$?
grep -q "allocation #1 of 262144 bytes fails" "$T/fm.log" ||
  fail "the shim failed no allocation: $(cat "$T/fm.log")"
assert_eq "$rc" "1" "the daemon's status"
assert_contains "$(cat "$T/serve.out")" "authproxy serve: cannot start the proxy: Cannot allocate memory" \
  "the daemon's error"
pass "serve: out of memory at start is said"
