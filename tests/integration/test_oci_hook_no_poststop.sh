#!/usr/bin/env bash
# The OCI hook as podman runs it from hooks.d (examples/oci-hooks.d): the OCI runtime
# runs the createRuntime hook, but podman runs the poststop hooks itself, after it
# deleted a container it had created. A container whose creation failed after the
# hook attached it (its command is not in its root filesystem: `podman run IMAGE
# typo`; a later hook failed) never gets its poststop. The daemon used to keep such a
# sandbox attached, its namespace alive (the listeners hold it) and its state file,
# one more with every failure until it restarted, and a `podman start` of the same
# container then failed with sandbox_exists. A sandbox attached by /proc/PID/ns/net
# now goes when process PID exits.
#
# Driven as the runtime drives the hook (the container state on standard input), with
# a process in a network namespace of its own standing in for the container:
#
#   unshare -n sleep (the "container", pid P)         host
#   oci-hook createRuntime {"id", "pid": P} --------> authproxy serve --control $T/c.sock
#   P killed, no poststop                             sandbox oci-ID detached, state gone
. "$(dirname "$0")/lib.sh"
. "$SRC/tests/adversarial/adv_lib.sh"

start_upstream up
serve_start
cat > "$T/cfg.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Agent", "type": "plaintext", "value": "hooked" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
ctl config-set agents --config "$T/cfg.json" > /dev/null

# container: a process in a network namespace of its own (lo up), as the runtime
# holds one while it creates the container; sets CPID.
container() {
  unshare -n sh -c 'ip link set lo up && exec sleep 300' &
  CPID=$!
  PIDS+=($CPID)
  wait_for "[ \"\$(readlink /proc/$CPID/ns/net)\" != \"\$(readlink /proc/self/ns/net)\" ] && [ \"\$(readlink /proc/$CPID/exe)\" != \"\$(readlink -f /bin/sh)\" ]" 10
}
# hook STAGE ID PID: the hook with the state the runtime writes; output in $T/hook.err.
hook() {
  printf '{"ociVersion": "1.0.2", "id": "%s", "status": "creating", "pid": %s, "bundle": "/b", "annotations": {"io.authproxy.config": "agents"}}' "$2" "$3" |
    "$AUTHPROXY" oci-hook --control "$T/c.sock" "$1" 2> "$T/hook.err"
}
attached() { ctl list | "$PY" -c 'import json, sys; print(" ".join(sorted(s["name"] for s in json.load(sys.stdin)["sandboxes"])))'; }
# gone NAME: waits (bounded) until the daemon no longer lists NAME; the process's end
# reaches its loop as an event, not with the kill.
gone() {
  local i
  for ((i = 0; i < 100; i++)); do
    [[ " $(attached) " == *" $1 "* ]] || return 0
    sleep 0.05
  done
  fail "$1 is still attached after its process exited: $(attached)"
}
end_container() { kill "$CPID"; wait "$CPID" 2>/dev/null || true; }

# ---- attached by the hook; the process ends without a poststop ----------------------
container
hook createRuntime ctr-a-$$ "$CPID" || fail "createRuntime: $(cat "$T/hook.err")"
assert_eq "$(attached)" "oci-ctr-a-$$" "attached by the hook"
nsenter --net="/proc/$CPID/ns/net" curl -sS -o /dev/null http://api.example.com/hooked
assert_eq "$(upq up "[hdr(r, 'X-Agent') for r in reqs if r['path'] == '/hooked']")" '[["hooked"]]' \
  "the container's traffic goes through the proxy"
end_container
gone "oci-ctr-a-$$"
[ ! -e "$T/state/sandboxes/oci-ctr-a-$$.sealed" ] || fail "the state of the ended container is kept"
grep -q "oci-ctr-a-$$.*exited" "$T/serve.log" || fail "the log does not say why it was detached"
pass "a container that ends without its poststop hook is detached and forgotten"

# ---- the same container started again (podman start after the failure) --------------
container
hook createRuntime ctr-a-$$ "$CPID" || fail "createRuntime of the same container again: $(cat "$T/hook.err")"
nsenter --net="/proc/$CPID/ns/net" curl -sS -o /dev/null http://api.example.com/again
assert_eq "$(upq up "[hdr(r, 'X-Agent') for r in reqs if r['path'] == '/again']")" '[["hooked"]]' \
  "the container started again is served"
end_container
gone "oci-ctr-a-$$"
hook poststop ctr-a-$$ 0 || fail "poststop after the process ended: $(cat "$T/hook.err")"
pass "the same container starts again; a poststop after its process ended succeeds"

# ---- re-attached by a restarted daemon: still goes with its process -----------------
container
hook createRuntime ctr-r-$$ "$CPID" || fail "createRuntime: $(cat "$T/hook.err")"
kill -TERM "$serve_pid"
wait "$serve_pid" 2>/dev/null || true
serve_start
assert_eq "$(attached)" "oci-ctr-r-$$" "re-attached after the restart"
end_container
gone "oci-ctr-r-$$"
pass "a sandbox re-attached after a restart goes with its process too"

# ---- many failed creations leave nothing behind ----------------------------------
fds_before=$(ls "/proc/$serve_pid/fd" | wc -l)
for i in $(seq 1 20); do
  container
  hook createRuntime "ctr-loop$i-$$" "$CPID" || fail "createRuntime $i: $(cat "$T/hook.err")"
  end_container
done
for i in $(seq 1 20); do gone "oci-ctr-loop$i-$$"; done
assert_eq "$(attached)" "" "sandboxes left after 20 failed creations"
assert_eq "$(ls "$T/state/sandboxes" | wc -l)" "0" "state files left after 20 failed creations"
assert_eq "$(ls "/proc/$serve_pid/fd" | wc -l)" "$fds_before" "daemon descriptors after 20 failed creations"
pass "20 containers ended without a poststop: no sandbox, state file or descriptor left"
