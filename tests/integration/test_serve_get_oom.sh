#!/usr/bin/env bash
# GET /v1/sandboxes/NAME when the daemon cannot write the sandbox's config out for want
# of memory: a 500 out_of_memory, not a 200 without "proxy_config" (`ctl get` showed
# the sandbox as having no rules, and exited 0). tests/tools/failmalloc.c (LD_PRELOAD,
# plain build only), armed by a file created right before the GET, fails its first
# allocation of 512 bytes: the buffer rules_config_to_json starts with.
#
#   ap-go-PID: attached          host: authproxy serve; ctl get box
. "$(dirname "$0")/lib.sh"

SHIM=${AUTHPROXY_BUILD:-$SRC/build}/tests/libfailmalloc.so
if [ ! -f "$SHIM" ]; then
  echo "SKIP: $SHIM not built (the sanitizer build has no allocation shim)"
  exit 77
fi
SOCK=$T/c.sock
mkdir -m 700 "$T/state"
FAILMALLOC_EXE=authproxy FAILMALLOC_ARM="file:$T/arm" FAILMALLOC_SIZE=512 FAILMALLOC_NTH=1 \
  FAILMALLOC_LOG="$T/fm.log" LD_PRELOAD="$SHIM" \
  "$AUTHPROXY" serve --state-dir "$T/state" --control "$SOCK" --drain-timeout 1 \
  >> "$T/serve.log" 2>&1 &
PIDS+=($!)
ctl() { timeout 10 "$AUTHPROXY" ctl --control "$SOCK" "$@"; }
wait_for "[ -S '$SOCK' ] && '$AUTHPROXY' ctl --control '$SOCK' health >/dev/null 2>&1"
cat > "$T/config.json" <<EOF2
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Team", "type": "plaintext", "value": "agents" } ] } ] }
EOF2
ns=$(make_netns go)
ctl attach box --netns "/var/run/netns/$ns" --config "$T/config.json" > /dev/null

: > "$T/arm"
rc=0
ctl get box > "$T/get.out" 2>&1 || rc=$?
rm -f "$T/arm"
grep -q "allocation #1 of 512 bytes fails" "$T/fm.log" ||
  fail "the shim failed no allocation: $(cat "$T/fm.log")"
[ "$rc" -ne 0 ] || fail "ctl get exited 0 with the config unwritten: $(cat "$T/get.out")"
assert_contains "$(cat "$T/get.out")" "out_of_memory" "ctl get's error"
# The next GET has its memory: the whole sandbox.
assert_contains "$(ctl get box)" '"X-Team"' "the GET after"
ctl detach box > /dev/null
pass "GET of a sandbox whose config cannot be written out is a 500 out_of_memory"
