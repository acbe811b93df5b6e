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
    "$$" "$CPID" "$ann" | "$AUTHPROXY" oci-hook "$@" createRuntime 2> "$T/hook.err"
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
