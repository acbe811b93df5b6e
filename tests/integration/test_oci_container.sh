#!/usr/bin/env bash
# A real container through authproxy: Debian's runc (crun if runc cannot run here) runs
# a busybox-static root filesystem built below, with its own network namespace (only
# lo) and `authproxy oci-hook` as its createRuntime and poststop hooks. Inside, busybox
# wget and nc reach the fake upstream only through authproxy (the names are remapped to
# it) and the upstream sees the injected header. A container without the hook has no
# network at all; with the daemon stopped (or no usable annotation) the hook fails and
# the container never starts. The hooks come from examples/oci-config-hooks.json and
# examples/oci-hooks.d/ (paths replaced), so the examples are what is tested.
#
#   container (runc, netns: lo only)          host
#   wget/nc --nft (installed by the hook)-->  authproxy serve --control $T/control.sock
#           listener in the container netns   ====> fake upstream 127.0.0.1:$up_PORT
. "$(dirname "$0")/lib.sh"

BUSYBOX=$(command -v busybox || true)
if [ -z "$BUSYBOX" ] || [[ "$(ldd "$BUSYBOX" 2>&1 || true)" != *"not a dynamic executable"* ]]; then
  echo "SKIP: no static busybox (install busybox-static)"
  exit 77
fi
STATE=$T/state
SOCK=$T/control.sock
start_upstream up

# ---- the root filesystem and bundles ----------------------------------------------
ROOTFS=$T/rootfs
mkdir -p "$ROOTFS"/{bin,etc,proc,dev,sys,tmp}
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
for applet in sh wget nc cat echo printf sleep timeout; do
  ln -s busybox "$ROOTFS/bin/$applet"
done
printf 'root:x:0:0:root:/:/bin/sh\nagent:x:1000:1000:agent:/tmp:/bin/sh\n' > "$ROOTFS/etc/passwd"
printf 'root:x:0:\nagent:x:1000:\n' > "$ROOTFS/etc/group"
echo "nameserver 127.0.0.53" > "$ROOTFS/etc/resolv.conf"
echo "hosts: files dns" > "$ROOTFS/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n' > "$ROOTFS/etc/hosts"

# bundle NAME SCRIPT ANNOTATIONS-JSON [HOOKS]: $T/NAME with config.json; the container
# runs SCRIPT with busybox sh as uid 1000, without CAP_NET_ADMIN. HOOKS: "example" (the
# hooks and annotations of examples/oci-config-hooks.json; ANNOTATIONS added), "hooks.d"
# (the hooks of examples/oci-hooks.d/, as podman or CRI-O would add them) or "no". The
# examples' paths are replaced by this test's binary, socket and config directory.
bundle() {
  mkdir -p "$T/$1"
  "$PY" - "$T/$1/config.json" "$ROOTFS" "$2" "$3" "${4:-hooks.d}" "$AUTHPROXY" "$SOCK" \
    "$T/configs" "$SRC/examples" <<'PYEOF'
import glob, json, os, re, sys
out, rootfs, script, annotations, hooks, authproxy, sock, confdir, examples = sys.argv[1:10]
def local(h):
    h = dict(h)
    sub = {"/usr/local/bin/authproxy": authproxy, "/run/authproxy/control.sock": sock,
           "/etc/authproxy/configs": confdir}
    h["path"] = sub.get(h["path"], h["path"])
    h["args"] = [sub.get(a, a) for a in h["args"]]
    return h
caps = ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"]
c = {
  "ociVersion": "1.0.2",
  "process": {
    "terminal": False, "user": {"uid": 1000, "gid": 1000}, "cwd": "/tmp",
    "args": ["/bin/sh", "-c", script], "env": ["PATH=/bin", "HOME=/tmp"],
    "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
    "noNewPrivileges": True,
  },
  "root": {"path": rootfs, "readonly": True},
  "hostname": "agent",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
     "options": ["nosuid", "nodev", "mode=1777", "size=4m"]},
  ],
  "annotations": {},
  # Namespaces without a path: the runtime creates them; the network one has only lo.
  "linux": {"namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]},
}
if hooks == "example":
    ex = json.load(open(os.path.join(examples, "oci-config-hooks.json")))
    c["hooks"] = {stage: [local(h) for h in hs] for stage, hs in ex["hooks"].items()}
    c["annotations"].update(ex["annotations"])
    assert ex["linux"]["namespaces"] == c["linux"]["namespaces"]
elif hooks == "hooks.d":
    c["hooks"] = {}
    for f in sorted(glob.glob(os.path.join(examples, "oci-hooks.d", "*.json"))):
        h = json.load(open(f))
        # The hooks.d condition must select containers with either annotation.
        for k in ("io.authproxy.config", "io.authproxy.config-file"):
            assert any(re.search(r, k) for r in h["when"]["annotations"]), (f, k)
        for stage in h["stages"]:
            c["hooks"].setdefault(stage, []).append(local(h["hook"]))
c["annotations"].update(json.loads(annotations))
json.dump(c, open(out, "w"), indent=1)
PYEOF
}

# ---- which runtime works here ----------------------------------------------------
rt() { "$RUNTIME" --root "$T/rt-state" "$@"; }
CONTAINERS=()
cleanup_containers() {
  local id
  for id in "${CONTAINERS[@]}"; do rt delete --force "$id" >/dev/null 2>&1; done
}
CLEANUP_HOOKS+=(cleanup_containers)

# run_container ID BUNDLE: create (hooks run), record the sandbox list, start, wait for
# the container to stop (bounded), delete (poststop runs). Output in $T/ID.out; the
# exit status of `create` in CREATE_RC, its stderr in $T/ID.err.
run_container() {
  local id=$1 i
  CONTAINERS+=("$id")
  set +e
  rt create --bundle "$T/$2" "$id" > "$T/$id.out" 2> "$T/$id.err" < /dev/null
  CREATE_RC=$?
  set -e
  if [ "$CREATE_RC" != 0 ]; then
    rt delete --force "$id" >/dev/null 2>&1 || true
    return 0
  fi
  LIST_WHILE_CREATED=$("$AUTHPROXY" ctl --control "$SOCK" list 2>/dev/null || true)
  CONTAINER_PID=$(rt state "$id" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["pid"])')
  rt start "$id"
  for ((i = 0; i < 600; i++)); do
    rt state "$id" 2>/dev/null | grep -q '"status": "stopped"' && break
    sleep 0.05
  done
  rt state "$id" | grep -q '"status": "stopped"' || fail "container $id still running after 30 s"
  rt delete "$id"
}

RUNTIME=
WHY=()
bundle probe 'echo probe-ok' '{}' no
for candidate in runc crun; do
  command -v "$candidate" >/dev/null 2>&1 || { WHY+=("$candidate: not installed"); continue; }
  RUNTIME=$candidate
  run_container "probe-$candidate-$$" probe
  if [ "$CREATE_RC" = 0 ] && grep -q probe-ok "$T/probe-$candidate-$$.out"; then
    break
  fi
  WHY+=("$candidate: $(tr '\n' ' ' < "$T/probe-$candidate-$$.err" | head -c 300)")
  RUNTIME=
done
if [ -z "$RUNTIME" ]; then
  echo "SKIP: no OCI runtime can run a container here: ${WHY[*]}"
  exit 77
fi
[ ${#WHY[@]} -eq 0 ] || echo "note: ${WHY[*]}"
echo "runtime: $RUNTIME ($("$RUNTIME" --version | head -n1))"

# ---- the daemon and its config --------------------------------------------------
"$AUTHPROXY" serve --state-dir "$STATE" --control "$SOCK" --drain-timeout 1 -v \
  >> "$T/serve.log" 2>&1 &
SERVE_PID=$!
PIDS+=($SERVE_PID)
ctl() { "$AUTHPROXY" ctl --control "$SOCK" "$@"; }
wait_for "[ -S '$SOCK' ] && ctl health >/dev/null 2>&1"
echo -n "sk-oci-$$" | ctl secret-set AGENT_TOKEN
config() {  # SOURCE -> proxy_config
  cat <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {AGENT_TOKEN}" },
                 { "name": "X-Source", "type": "plaintext", "value": "$1" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
}
config stored > "$T/stored.json"
ctl config-set agents --config "$T/stored.json" >/dev/null
mkdir -p "$T/configs"
config file > "$T/configs/agents.json"

AGENT_SCRIPT='
wget -q -O - http://api.example.com/oci/wget/$0; echo " wget=$?"
printf "GET /oci/nc/$0 HTTP/1.0\r\nHost: api.example.com\r\n\r\n" | timeout 10 nc api.example.com 80 | head -n 1
echo "nc-done"'

# ---- a container without the hook has no network at all ------------------------------
bundle bare "wget -q -T 3 -O - http://api.example.com/oci/bare; echo \" wget=\$?\"" '{}' no
run_container "bare-$$" bare
[ "$CREATE_RC" = 0 ] || fail "the container without hooks did not start: $(cat "$T/bare-$$.err")"
assert_contains "$(cat "$T/bare-$$.out")" "wget=1" "a container without authproxy reaches nothing"
pass "without the hook: the container's namespace (lo only) reaches nothing"

# ---- with the hook: traffic only through authproxy, header injected ---------------
bundle agent "$AGENT_SCRIPT" '{}' example
"$PY" - "$T/agent/config.json" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1])); c["process"]["args"].append("stored")
json.dump(c, open(sys.argv[1], "w"))
PYEOF
run_container "agent-$$" agent
[ "$CREATE_RC" = 0 ] || fail "runc create with the hook failed: $(cat "$T/agent-$$.err")"
out=$(cat "$T/agent-$$.out")
echo "  container output: $(tr '\n' ' ' <<< "$out" | head -c 300)"
assert_contains "$out" "wget=0" "wget in the container"
assert_contains "$out" "HTTP/1.1 200" "nc in the container"
assert_eq "$(jlist "oci-agent-$$")" "$("$PY" -c 'import json, sys; print(json.dumps([s["name"] for s in json.loads(sys.argv[1])["sandboxes"] if s["netns"] == "/proc/" + sys.argv[2] + "/ns/net"]))' "$LIST_WHILE_CREATED" "$CONTAINER_PID")" \
  "sandbox oci-ID attached to the container's namespace before it started"
assert_eq "$(upq up "[(r['path'], hdr(r, 'Authorization'), hdr(r, 'X-Source')) for r in reqs if r['path'].endswith('/stored')]")" \
  "[[\"/oci/wget/stored\", [\"Bearer sk-oci-$$\"], [\"stored\"]], [\"/oci/nc/stored\", [\"Bearer sk-oci-$$\"], [\"stored\"]]]" \
  "the upstream sees the injected header from wget and nc"
assert_not_contains "$(ctl list)" "oci-agent-$$" "poststop detached the sandbox"
pass "with the hook ($RUNTIME): wget and nc reach the upstream through authproxy with the header injected; poststop detaches"

# ---- a config file from --config-dir -----------------------------------------------
bundle agentfile "$AGENT_SCRIPT" '{"io.authproxy.config-file": "agents.json"}'
"$PY" - "$T/agentfile/config.json" <<'PYEOF'
import json, sys
c = json.load(open(sys.argv[1])); c["process"]["args"].append("file")
json.dump(c, open(sys.argv[1], "w"))
PYEOF
run_container "agentfile-$$" agentfile
[ "$CREATE_RC" = 0 ] || fail "runc create with a config-file annotation failed: $(cat "$T/agentfile-$$.err")"
assert_eq "$(upq up "[hdr(r, 'X-Source') for r in reqs if r['path'] == '/oci/wget/file']")" '[["file"]]' \
  "the config file from --config-dir applied"
pass "io.authproxy.config-file: a file of --config-dir"

# ---- the hook fails: the container never starts ------------------------------------
# expect_refused ID BUNDLE TEXT: create fails, stderr says why, nothing ran.
expect_refused() {
  run_container "$1" "$2"
  [ "$CREATE_RC" != 0 ] || fail "$1: the container was created although the hook must fail"
  assert_contains "$(cat "$T/$1.err")" "$3" "$1: the reason reaches the runtime's error"
  assert_not_contains "$(cat "$T/$1.out")" "wget=" "$1: the container process never ran"
  if rt state "$1" >/dev/null 2>&1; then fail "$1: the runtime kept the container"; fi
  echo "  $1 refused: $(grep -o 'authproxy oci-hook:[^"]*' "$T/$1.err" | head -n1 | head -c 240)"
}
bundle noannot "$AGENT_SCRIPT" '{}'
expect_refused "noannot-$$" noannot "neither the annotation"
bundle traversal "$AGENT_SCRIPT" '{"io.authproxy.config-file": "../stored.json"}'
expect_refused "traversal-$$" traversal "not a path"
bundle unknown "$AGENT_SCRIPT" '{"io.authproxy.config": "nope"}'
expect_refused "unknown-$$" unknown "config_not_found"
pass "no annotation, a path in the annotation, an unknown config: the container does not start"

kill -TERM "$SERVE_PID"
wait "$SERVE_PID" 2>/dev/null || true
expect_refused "down-$$" agent "is \`authproxy serve\` running?"
assert_eq "$(upq up "len([r for r in reqs if r['path'].startswith('/oci/') and r['path'] not in ('/oci/wget/stored', '/oci/nc/stored', '/oci/wget/file', '/oci/nc/file')])")" \
  "0" "no other request reached the upstream"
pass "daemon stopped: the createRuntime hook fails and the container never starts"
