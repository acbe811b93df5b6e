#!/usr/bin/env bash
# What a runtime makes of the OCI hook's failures. podman classifies an OCI runtime's
# error by its text (libpod's getOCIRuntimeError): one that matches "no such file or
# directory" (any case) is taken for a container command that does not exist, shown
# as "OCI runtime attempted to invoke a command that was not found", and `podman run`
# exits 127, as for a typo in the command. The hook's commonest failure, the daemon
# not running (its control socket absent), said "No such file or directory", and so
# did a config file missing from --config-dir: the container's command was blamed
# (seen with podman 4.3 and runc 1.1.5 on Debian bookworm). Driven as the runtime
# drives the hook: the container state on standard input, its stderr as the runtime
# passes it on.
#
#   process in its own netns (the "container")        host
#   oci-hook createRuntime {"id", "pid"} ----X        no daemon at $T/none.sock
#   oci-hook poststop {"id"} ---------------------->  authproxy serve --control $T/c.sock
. "$(dirname "$0")/lib.sh"

unshare -n sleep 300 &
CPID=$!
PIDS+=($CPID)
wait_for "[ \"\$(readlink /proc/$CPID/ns/net)\" != \"\$(readlink /proc/self/ns/net)\" ]" 10
mkdir -p "$T/configs"

# hook ANNOTATIONS-JSON ARGS...: runs the createRuntime hook; stderr in ERR, status RC.
hook() {
  local ann=$1
  shift
  set +e
  printf '{"ociVersion": "1.0.2", "id": "ctr-%s", "status": "creating", "pid": %s, "bundle": "/b", "annotations": %s}' \
    "$$" "$CPID" "$ann" | timeout 20 "$AUTHPROXY" oci-hook "$@" createRuntime 2> "$T/hook.err"
  RC=$?
  set -e
  ERR=$(cat "$T/hook.err")
}
# podman_reads TEXT: what podman takes the runtime error for (its patterns, in order).
podman_reads() {
  "$PY" - "$1" <<'PYEOF'
import re, sys
m = sys.argv[1]
if re.search(r"(?i).*permission denied.*|.*operation not permitted.*", m):
    print("permission denied (126)")
elif re.search(r"(?i).*executable file not found in.*|.*no such file or directory.*|.*open executable.*", m):
    print("command not found (127)")
else:
    print("OCI runtime error (126)")
PYEOF
}

hook '{"io.authproxy.config": "agents"}' --control "$T/none.sock"
assert_eq "$RC" "1" "hook status with no daemon"
assert_contains "$ERR" "$T/none.sock" "the socket is named"
assert_contains "$ERR" "is \`authproxy serve\` running?" "the cause is named"
assert_eq "$(podman_reads "$ERR")" "OCI runtime error (126)" "podman's reading of: $ERR"
pass "no daemon: the hook fails naming the socket, not read as a missing command"

hook '{"io.authproxy.config-file": "missing.json"}' --control "$T/none.sock" --config-dir "$T/configs"
assert_eq "$RC" "1" "hook status with a missing config file"
assert_contains "$ERR" "$T/configs/missing.json" "the file is named"
assert_eq "$(podman_reads "$ERR")" "OCI runtime error (126)" "podman's reading of: $ERR"
hook '{"io.authproxy.config-file": "missing.json"}' --control "$T/none.sock" --config-dir "$T/no-dir"
assert_eq "$RC" "1" "hook status with a missing config directory"
assert_contains "$ERR" "$T/no-dir" "the directory is named"
assert_eq "$(podman_reads "$ERR")" "OCI runtime error (126)" "podman's reading of: $ERR"
pass "a config file or directory missing: named, not read as a missing command"

# ---- a config file that cannot be one: each refusal says what is wrong with it -------
# Read before the daemon is asked, so none is needed. A FIFO is not opened for a
# blocking read (the runtime would wait on the hook for ever); a large regular file
# used to be refused as "not a regular file of at most 1 MiB", which sent its owner
# looking for what was irregular about it.
echo '{"rules": [' > "$T/configs/broken.json"
echo '["not", "an", "object"]' > "$T/configs/array.json"
mkfifo "$T/configs/fifo.json"
mkdir "$T/configs/dir.json"
head -c $((1100 * 1024)) /dev/zero | tr '\0' ' ' > "$T/configs/big.json"
# config_file_refused FILE TEXT: the hook fails for FILE, naming it and saying TEXT.
config_file_refused() {
  hook "{\"io.authproxy.config-file\": \"$1\"}" --control "$T/none.sock" --config-dir "$T/configs"
  assert_eq "$RC" "1" "hook status with config file $1"
  assert_contains "$ERR" "config file $T/configs/$1: $2" "config file $1"
  assert_eq "$(podman_reads "$ERR")" "OCI runtime error (126)" "podman's reading of: $ERR"
}
config_file_refused broken.json "invalid JSON at line 2, column 1"
config_file_refused array.json "must hold a JSON object (a proxy_config)"
config_file_refused fifo.json "is a FIFO, not a regular file"
config_file_refused dir.json "is a directory, not a regular file"
config_file_refused big.json "is $((1100 * 1024)) bytes, more than the 1 MiB the daemon takes"
pass "config files that are not JSON, not an object, a FIFO, a directory, too large: each named with why"

# ---- what the runtime hands the hook, misconfigured -----------------------------------
set +e
out=$(echo 'not json' | timeout 20 "$AUTHPROXY" oci-hook createRuntime 2>&1); rc=$?
set -e
assert_eq "$rc" "1" "hook status for a state that is not JSON"
assert_contains "$out" "the container state on standard input is not JSON: invalid JSON at line 1" \
  "a state that is not JSON"
set +e
out=$(echo '{}' | timeout 20 "$AUTHPROXY" oci-hook poststart 2>&1); rc=$?
set -e
assert_eq "$rc" "2" "hook status for a stage it does not run at"
assert_contains "$out" 'unknown stage "poststart" (createRuntime or poststop)' "an unknown stage"
pass "a state that is not JSON and an unknown stage are named"

# A state larger than the hook reads is said as such.
set +e
out=$(head -c $((1100 * 1024)) /dev/zero | tr '\0' ' ' |
  timeout 20 "$AUTHPROXY" oci-hook createRuntime 2>&1); rc=$?
set -e
assert_eq "$rc/$out" "1/authproxy oci-hook: cannot read the container state from standard input: larger than 1 MiB" \
  "a state over 1 MiB"
pass "a state over 1 MiB is named"

# Out of memory (tests/tools/failmalloc.c; the plain build only), each of the hook's
# allocations failing in turn before it reaches the daemon that is not there: said as
# out of memory. It was "the container state on standard input is not JSON: out of
# memory" while the state was read, and "(at most 1 MiB)" for a buffer of 4 KiB.
if [ -f "$FAILMALLOC" ]; then
  printf '{"ociVersion": "1.0.2", "id": "ctr-%s", "status": "creating", "pid": %s, "bundle": "/b", "annotations": {"io.authproxy.config": "agents"}}' \
    "$$" "$CPID" > "$T/state.json"
  said_oom() {
    assert_eq "$RC" "1" "hook status with allocation $1 failing"
    case "$ERR" in
      *"out of memory"* | *"Cannot allocate memory"* | *"cannot connect to the control socket $T/none.sock"*) ;;
      *) fail "hook with allocation $1 failing: $ERR" ;;
    esac
  }
  sweep_allocations authproxy "$T/state.json" said_oom \
    "$AUTHPROXY" oci-hook --control "$T/none.sock" createRuntime
  pass "each of the hook's $SWEPT allocations failing: said as out of memory"
fi

# poststop of a container the daemon has no sandbox for (a second poststop, one whose
# createRuntime failed), each allocation failing in turn (the plain build only):
# success, as without the failure, or status 1 said as out of memory. An answer whose
# code could not be decoded for want of memory was "cannot detach sandbox ...:
# sandbox_not_found", a failure the daemon did not have.
if [ -f "$FAILMALLOC" ]; then
  mkdir -m 700 "$T/serve-state"
  "$AUTHPROXY" serve --state-dir "$T/serve-state" --control "$T/c.sock" --drain-timeout 1 \
    >> "$T/serve.log" 2>&1 &
  PIDS+=($!)
  wait_for "[ -S '$T/c.sock' ] && '$AUTHPROXY' ctl --control '$T/c.sock' health >/dev/null 2>&1"
  printf '{"ociVersion": "1.0.2", "id": "ctr-never-%s", "status": "stopped", "bundle": "/b"}' \
    "$$" > "$T/stopped.json"
  gone_or_oom() {
    [ "$RC" = 0 ] && return
    assert_eq "$RC" "1" "poststop status with allocation $1 failing"
    case "$ERR" in
      *"out of memory"* | *"Cannot allocate memory"*) ;;
      *) fail "poststop with allocation $1 failing: $ERR" ;;
    esac
  }
  sweep_allocations authproxy "$T/stopped.json" gone_or_oom \
    "$AUTHPROXY" oci-hook --control "$T/c.sock" poststop
  pass "poststop of a container never attached, each of its $SWEPT allocations failing: success, or out of memory"
fi
