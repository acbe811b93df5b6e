#!/usr/bin/env bash
# The CNI plugin, driven the way libcni drives a chain: Debian's reference loopback
# plugin first, then authproxy-cni with the loopback result as prevResult (DEL in
# reverse order with the final result). Inline, file and stored configs; traffic from
# the namespace proxied with injection; CHECK; DEL twice; VERSION; every error is the
# spec's JSON with its code; the daemon down for ADD (error 100) and for DEL (success,
# and the restarted daemon forgets the sandbox whose namespace went away).
#
#   ap-cniN-PID (named namespaces)            host
#   lo (loopback plugin)                       authproxy serve --control $T/control.sock
#   curl --nft (authproxy-cni ADD)--> listener ====> fake upstream 127.0.0.1:$up_PORT
. "$(dirname "$0")/lib.sh"

CNI_BIN=/usr/lib/cni
if [ ! -x "$CNI_BIN/loopback" ]; then
  echo "SKIP: $CNI_BIN/loopback not found (install containernetworking-plugins)"
  exit 77
fi
mkdir -p "$T/bin"
ln -s "$AUTHPROXY" "$T/bin/authproxy-cni"
PLUGIN=$T/bin/authproxy-cni
STATE=$T/state
SOCK=$T/control.sock
start_upstream up

serve() {
  "$AUTHPROXY" serve --state-dir "$STATE" --control "$SOCK" --drain-timeout 1 -v \
    >> "$T/serve.log" 2>&1 &
  SERVE_PID=$!
  PIDS+=($SERVE_PID)
  wait_for "[ -S '$SOCK' ] && '$AUTHPROXY' ctl --control '$SOCK' health >/dev/null 2>&1"
}
stop_serve() { kill -TERM "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true; }
ctl() { "$AUTHPROXY" ctl --control "$SOCK" "$@"; }
# jq-like access with python: jget JSON EXPR (EXPR over `d`).
jget() { "$PY" -c 'import json, sys; d = json.loads(sys.argv[1]); r = eval(sys.argv[2]); print(r if isinstance(r, str) else json.dumps(r))' "$1" "$2"; }

# run EXE COMMAND ID NETNS CONFIG-JSON: one plugin run with the CNI environment as a
# runtime sets it (nothing else inherited); sets OUT (its stdout) and RC.
run() {
  printf '%s' "$5" > "$T/stdin.json"
  set +e
  env -i PATH="$PATH" ASAN_OPTIONS="${ASAN_OPTIONS:-}" UBSAN_OPTIONS="${UBSAN_OPTIONS:-}" \
    CNI_COMMAND="$2" CNI_CONTAINERID="$3" CNI_NETNS="$4" CNI_IFNAME=eth0 \
    CNI_PATH="$CNI_BIN:$T/bin" CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=agent" \
    "$1" < "$T/stdin.json" > "$T/stdout.json" 2>> "$T/plugin.log"
  RC=$?
  set -e
  OUT=$(cat "$T/stdout.json")
}
run_plugin() { run "$PLUGIN" "$@"; }

# outcome N, the CHECK of the sweeps below (sweep_allocations, lib.sh): with allocation
# N failing, the run succeeded with nothing on standard output (when OUTCOME_OK is 1),
# or answered an error document whose code is one of OUTCOME_CODES. OUTCOME_WHAT
# names the run.
outcome() {
  local code
  if [ "$OUTCOME_OK" = 1 ] && [ "$RC/$OUT" = "0/" ]; then return; fi
  code=$(jget "$OUT" 'd["code"]' 2> /dev/null) ||
    fail "$OUTCOME_WHAT with allocation $1 failing: not a JSON document: '$OUT'"
  [ "$RC" = 1 ] && [[ " $OUTCOME_CODES " == *" $code "* ]] ||
    fail "$OUTCOME_WHAT with allocation $1 failing: status $RC, $OUT"
}

# conf NAME VERSION PLUGIN-KEYS-JSON [PREVRESULT]: a plugin's execution configuration
# as libcni derives it (cniVersion and name from the list, prevResult added).
conf() {
  "$PY" - "$@" <<'PYEOF'
import json, sys
name, version, keys = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
c = {"cniVersion": version, "name": name}
c.update(keys)
if len(sys.argv) > 4 and sys.argv[4]:
    c["prevResult"] = json.loads(sys.argv[4])
print(json.dumps(c))
PYEOF
}

# chain_add ID NS VERSION KEYS: loopback ADD, then authproxy-cni ADD with its result
# as prevResult. Leaves the final result in RESULT (and RC), the loopback's in LO_RESULT.
chain_add() {
  local id=$1 ns=/var/run/netns/$2 ver=$3 keys=$4
  run "$CNI_BIN/loopback" ADD "$id" "$ns" "$(conf net "$ver" '{"type": "loopback"}')"
  [ "$RC" = 0 ] || fail "loopback ADD failed: $OUT"
  LO_RESULT=$OUT
  run_plugin ADD "$id" "$ns" "$(conf net "$ver" "$keys" "$LO_RESULT")"
  RESULT=$OUT
}

# expect_error CODE WHAT: OUT must be a CNI error document with that code, RC non-zero.
expect_error() {
  [ "$RC" != 0 ] || fail "$2: the plugin succeeded: $OUT"
  assert_eq "$(jget "$OUT" 'sorted(d.keys())')" '["cniVersion", "code", "details", "msg"]' \
    "$2: error document fields"
  assert_eq "$(jget "$OUT" 'd["code"]')" "$1" "$2: error code ($OUT)"
}

serve
echo -n "sk-cni-$$" | ctl secret-set TOKEN
KEYS_BASE="\"type\": \"authproxy-cni\", \"control\": \"$SOCK\""
cat > "$T/cfg.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {TOKEN}" },
                 { "name": "X-Source", "type": "plaintext", "value": "SOURCE" },
                 { "name": "X-Opaque", "type": "opaque", "value": "opaque-cni-$$" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
cfg_with() { sed "s/SOURCE/$1/" "$T/cfg.json"; }

# ---- ADD with an inline config: result, attach, traffic ----------------------------
ns1=$(make_netns cni1)
chain_add ctr-inline-$$ "$ns1" 1.0.0 "{$KEYS_BASE, \"proxy_config\": $(cfg_with inline)}"
[ "$RC" = 0 ] || fail "authproxy-cni ADD failed: $RESULT"
assert_eq "$(jget "$RESULT" 'd["cniVersion"]')" "1.0.0" "result cniVersion"
assert_eq "$(jget "$RESULT" 'd["dns"]["nameservers"]')" '["127.0.0.53"]' "result nameservers"
assert_eq "$(jget "$RESULT" '[d["interfaces"], d["ips"]]')" \
  "$(jget "$LO_RESULT" '[d["interfaces"], d["ips"]]')" "prevResult passed through"
assert_eq "$(jget "$LO_RESULT" 'd["interfaces"][0]["name"]')" "lo" "the loopback plugin ran"
list=$(ctl list)
assert_eq "$(jget "$list" "[s['netns'] for s in d['sandboxes'] if s['name'] == 'cni-ctr-inline-$$']")" \
  "[\"/var/run/netns/$ns1\"]" "sandbox cni-ID attached to CNI_NETNS"
ip netns exec "$ns1" curl -sS -o /dev/null http://api.example.com/cni/inline
assert_eq "$(upq up "[(hdr(r, 'Authorization'), hdr(r, 'X-Source'), hdr(r, 'X-Opaque')) for r in reqs if r['path'] == '/cni/inline']")" \
  "[[[\"Bearer sk-cni-$$\"], [\"inline\"], [\"opaque-cni-$$\"]]]" "headers injected for the CNI sandbox"
pass "loopback + authproxy-cni ADD: result passed through with the responder as nameserver; traffic proxied with injection"

# ---- CHECK -------------------------------------------------------------------------
CONF1=$(conf net 1.0.0 "{$KEYS_BASE, \"proxy_config\": $(cfg_with inline)}" "$RESULT")
run_plugin CHECK ctr-inline-$$ "/var/run/netns/$ns1" "$CONF1"
assert_eq "$RC/$OUT" "0/" "CHECK of an attached sandbox: success, no output"
run_plugin CHECK ctr-inline-$$ "/var/run/netns/other" "$CONF1"
expect_error 103 "CHECK with another CNI_NETNS"
run_plugin CHECK ctr-inline-$$ "/var/run/netns/$ns1" "$(conf net 1.0.0 "{$KEYS_BASE, \"proxy_config\": {}}")"
expect_error 7 "CHECK without prevResult"
run_plugin CHECK ctr-inline-$$ "/var/run/netns/$ns1" "$(conf net 0.3.1 "{$KEYS_BASE, \"proxy_config\": {}}" "$LO_RESULT")"
expect_error 1 "CHECK with cniVersion 0.3.1"
pass "CHECK: attached is success; another namespace, no prevResult, an old version are errors"

# CHECK out of memory (tests/tools/failmalloc.c; the plain build only), each of the
# plugin's allocations failing in turn against the daemon and the sandbox attached
# above: success, or out of memory (5). The plugin's own out of memory once read as
# the daemon's absence (100, "authproxy daemon unreachable") when it struck while the
# answer was read, and as the namespace not served (103) while it was decoded.
if [ -f "$FAILMALLOC" ]; then
  printf '%s' "$CONF1" > "$T/check-in.json"
  OUTCOME_WHAT=CHECK OUTCOME_OK=1 OUTCOME_CODES=5 \
    sweep_allocations authproxy-cni "$T/check-in.json" outcome \
    env CNI_COMMAND=CHECK CNI_CONTAINERID=ctr-inline-$$ CNI_NETNS="/var/run/netns/$ns1" \
    CNI_IFNAME=eth0 CNI_PATH="$CNI_BIN" "$PLUGIN"
  pass "CHECK with each of its $SWEPT allocations failing: success or error 5"
fi

# ---- ADD twice is an error (the spec: the attachment exists) -------------------------
run_plugin ADD ctr-inline-$$ "/var/run/netns/$ns1" "$CONF1"
expect_error 102 "second ADD"
assert_contains "$OUT" "sandbox_exists" "second ADD names the reason"
# Another container's ADD for that namespace (a pooled namespace, a pod's second
# container) fails too, naming the sandbox that holds it: that is what to detach. It
# used to blame "another authproxy (a daemon or a jail)" or a DNS server.
run_plugin ADD ctr-other-$$ "/var/run/netns/$ns1" "$CONF1"
expect_error 102 "ADD of another container for an attached namespace"
assert_contains "$(jget "$OUT" 'd["details"]')" "already attached as sandbox cni-ctr-inline-$$" \
  "the sandbox holding the namespace is named"
assert_not_contains "$(jget "$OUT" 'd["details"]')" "another authproxy" "no other authproxy is blamed"
ip netns exec "$ns1" curl -sS -o /dev/null http://api.example.com/cni/still
assert_eq "$(upq up "[hdr(r, 'X-Source') for r in reqs if r['path'] == '/cni/still']")" '[["inline"]]' \
  "the namespace is still served by its sandbox"

# ---- DEL (reverse order), twice: idempotent ---------------------------------------
run_plugin DEL ctr-inline-$$ "/var/run/netns/$ns1" "$CONF1"
assert_eq "$RC/$OUT" "0/" "DEL"
run "$CNI_BIN/loopback" DEL ctr-inline-$$ "/var/run/netns/$ns1" "$(conf net 1.0.0 '{"type": "loopback"}' "$RESULT")"
assert_eq "$RC" "0" "loopback DEL"
assert_not_contains "$(ctl list)" "cni-ctr-inline-$$" "sandbox gone after DEL"
rules=$(ip netns exec "$ns1" nft list table inet authproxy)
assert_not_contains "$rules" "redirect" "the namespace keeps no redirect after DEL"
assert_contains "$rules" "drop" "the namespace is locked down after DEL"
run_plugin DEL ctr-inline-$$ "/var/run/netns/$ns1" "$CONF1"
assert_eq "$RC/$OUT" "0/" "second DEL"
ip netns del "$ns1"
run_plugin DEL ctr-inline-$$ "" "$CONF1"
assert_eq "$RC/$OUT" "0/" "DEL without CNI_NETNS, namespace gone"
run_plugin CHECK ctr-inline-$$ "/var/run/netns/$ns1" "$CONF1"
expect_error 103 "CHECK after DEL"
pass "DEL detaches and locks the namespace down; DEL again (also without CNI_NETNS) succeeds; CHECK then fails"

# ---- proxy_config_file and proxy_config_name ----------------------------------------
cfg_with file > "$T/file-cfg.json"
ns2=$(make_netns cni2)
chain_add ctr-file-$$ "$ns2" 0.4.0 "{$KEYS_BASE, \"proxy_config_file\": \"$T/file-cfg.json\"}"
[ "$RC" = 0 ] || fail "ADD with proxy_config_file: $RESULT"
assert_eq "$(jget "$RESULT" 'd["cniVersion"]')" "0.4.0" "result speaks the requested version"
ip netns exec "$ns2" curl -sS -o /dev/null http://api.example.com/cni/file
cfg_with stored > "$T/stored-cfg.json"
ctl config-set agents --config "$T/stored-cfg.json" > "$T/config-set.out"
assert_eq "$(jget "$(cat "$T/config-set.out")" 'd["unresolved_secrets"]')" "[]" "config-set: TOKEN is known"
assert_eq "$(jget "$(ctl configs)" 'd["configs"]')" '["agents"]' "stored configs listed"
got=$(ctl config-get agents)
assert_contains "$got" "Bearer {TOKEN}" "stored config shown with its template"
assert_not_contains "$got" "opaque-cni-$$" "stored config shown without its opaque value"
ns3=$(make_netns cni3)
chain_add ctr-named-$$ "$ns3" 1.0.0 "{$KEYS_BASE, \"proxy_config_name\": \"agents\"}"
[ "$RC" = 0 ] || fail "ADD with proxy_config_name: $RESULT"
ip netns exec "$ns3" curl -sS -o /dev/null http://api.example.com/cni/stored
assert_eq "$(upq up "[(hdr(r, 'Authorization'), hdr(r, 'X-Source')) for r in reqs if r['path'] in ('/cni/file', '/cni/stored')]")" \
  "[[[\"Bearer sk-cni-$$\"], [\"file\"]], [[\"Bearer sk-cni-$$\"], [\"stored\"]]]" "file and stored configs applied"
pass "proxy_config_file and proxy_config_name (ctl config-set) attach with their configs"

# ---- stored configs: validated when stored, templates resolved at each attach --------
sed 's/{TOKEN}/{LATER}/' "$T/stored-cfg.json" > "$T/later-cfg.json"
out=$(ctl config-set later --config "$T/later-cfg.json")
assert_eq "$(jget "$out" 'd["unresolved_secrets"]')" '["LATER"]' "config-set names the secret not pushed yet"
ns8=$(make_netns cni8)
run_plugin ADD ctr-later-$$ "/var/run/netns/$ns8" "$(conf net 1.0.0 "{$KEYS_BASE, \"proxy_config_name\": \"later\"}")"
expect_error 101 "attach before the secret is pushed"
assert_contains "$OUT" "secret LATER not found" "the missing secret is named"
echo -n "sk-later-$$" | ctl secret-set LATER
run_plugin ADD ctr-later-$$ "/var/run/netns/$ns8" "$(conf net 1.0.0 "{$KEYS_BASE, \"proxy_config_name\": \"later\"}")"
assert_eq "$RC" "0" "attach once the secret is pushed"
ip netns exec "$ns8" curl -sS -o /dev/null http://api.example.com/cni/later
assert_eq "$(upq up "[hdr(r, 'Authorization') for r in reqs if r['path'] == '/cni/later']")" \
  "[[\"Bearer sk-later-$$\"]]" "the template resolved at attach"
echo '{"rules": [{"name": "x", "allow_plain_http": true, "match_hosts": ["a b"]}]}' > "$T/bad-cfg.json"
err=$(ctl config-set bad --config "$T/bad-cfg.json" 2>&1) && fail "an invalid config was stored"
assert_contains "$err" "proxy_config.rules[0].match_hosts[0]" "config-set shows the JSON path"
ctl config-delete later > /dev/null
assert_eq "$(jget "$(ctl configs)" 'd["configs"]')" '["agents"]' "deleted config gone, invalid one never stored"
err=$(ctl config-delete later 2>&1) && fail "deleting an unknown config succeeded"
assert_contains "$err" "config_not_found" "deleting an unknown config"
[ ! -e "$STATE/configs/later.sealed" ] || fail "the deleted config's state file is left"
assert_contains "$(ctl list)" "cni-ctr-later-$$" "a sandbox keeps its config when the stored one is deleted"
run_plugin DEL ctr-later-$$ "/var/run/netns/$ns8" "$(conf net 1.0.0 "{$KEYS_BASE, \"proxy_config_name\": \"later\"}")"
pass "stored configs: a secret may come later; invalid configs are refused; delete"

# ---- no prevResult: authproxy-cni alone ------------------------------------------
ns4=$(make_netns cni4)
run_plugin ADD ctr-alone-$$ "/var/run/netns/$ns4" "$(conf net 1.0.0 "{$KEYS_BASE, \"proxy_config_name\": \"agents\"}")"
assert_eq "$RC" "0" "ADD without prevResult"
assert_eq "$OUT" '{"cniVersion":"1.0.0","dns":{"nameservers":["127.0.0.53"]}}' "result without prevResult"
run_plugin DEL ctr-alone-$$ "/var/run/netns/$ns4" "$(conf net 1.0.0 "{$KEYS_BASE, \"proxy_config_name\": \"agents\"}")"
pass "first in a chain (no prevResult): a result with the nameserver only"

# ---- VERSION ---------------------------------------------------------------------
for v in 0.3.0 0.3.1 0.4.0 1.0.0; do
  run_plugin VERSION "" "" "{\"cniVersion\": \"$v\"}"
  assert_eq "$RC/$OUT" "0/{\"cniVersion\":\"$v\",\"supportedVersions\":[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\"]}" "VERSION $v"
done
# Input that is not JSON is a decoding error, not a crash.
run_plugin VERSION "" "" '{bad'
expect_error 6 "VERSION input that is not JSON"
# A result the runtime never gets is a failure, not a success with nothing to read.
set +e
err=$(env -i PATH="$PATH" ASAN_OPTIONS="${ASAN_OPTIONS:-}" UBSAN_OPTIONS="${UBSAN_OPTIONS:-}" \
  CNI_COMMAND=VERSION "$PLUGIN" <<< '{"cniVersion": "1.0.0"}' 2>&1 > /dev/full)
RC=$?
set -e
assert_eq "$RC" "1" "VERSION with its result unwritable: status"
assert_eq "$err" "authproxy-cni: cannot write to standard output: No space left on device" \
  "VERSION with its result unwritable: said"
pass "VERSION; a result that cannot be written fails the run"

# VERSION out of memory (tests/tools/failmalloc.c; the plain build only): each of the
# plugin's allocations fails in turn. Its answer is the whole list or an I/O error (5),
# never a shorter list a runtime would choose a version from.
if [ -f "$FAILMALLOC" ]; then
  full='{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0"]}'
  whole_or_5() {
    if [ "$RC" = 0 ]; then
      assert_eq "$OUT" "$full" "VERSION with allocation $1 failing, status 0"
    else
      assert_contains "$OUT" '"code":5,' "VERSION with allocation $1 failing, status $RC"
    fi
  }
  echo '{"cniVersion": "1.0.0"}' > "$T/version-in.json"
  sweep_allocations authproxy-cni "$T/version-in.json" whole_or_5 \
    env CNI_COMMAND=VERSION "$PLUGIN"
  pass "VERSION with each of its $SWEPT allocations failing: the whole list or error 5"

  # ADD of a valid proxy_config_file with no daemon: with any one allocation failing,
  # an I/O error (5: out of memory, or the input unread) or the daemon's absence (100),
  # as a document. Out of memory used to blame the file (7, "cannot read
  # proxy_config_file: Cannot allocate memory"), a failed error document left standard
  # output empty, and out of memory while decoding VERSION's input was error 6.
  cfg_with sweep > "$T/sweep.json"
  conf net 1.0.0 "{\"type\": \"authproxy-cni\", \"control\": \"$T/none.sock\",
    \"proxy_config_file\": \"$T/sweep.json\"}" > "$T/sweep-in.json"
  OUTCOME_WHAT=ADD OUTCOME_OK=0 OUTCOME_CODES="5 100" \
    sweep_allocations authproxy-cni "$T/sweep-in.json" outcome \
    env CNI_COMMAND=ADD CNI_CONTAINERID=ctr-sweep CNI_NETNS=/var/run/netns/none-$$ \
    CNI_IFNAME=eth0 CNI_PATH="$CNI_BIN" "$PLUGIN"
  pass "ADD with each of its $SWEPT allocations failing: error 5 or 100, as a document"
fi

# ---- errors: each a CNI error document with its code ------------------------------
NS=/var/run/netns/$ns4
run_plugin ADD ctr-bad-$$ "$NS" "$(conf net 1.0.0 "{$KEYS_BASE, \"proxy_config\": {\"rules\": [{\"name\": \"\", \"match_hosts\": [\"a b\"]}]}}")"
expect_error 101 "invalid proxy_config"
assert_contains "$(jget "$OUT" 'd["details"]')" "proxy_config.rules[0].name" "details carry the JSON path"
assert_contains "$(jget "$OUT" 'd["details"]')" "proxy_config.rules[0].match_hosts[0]" "details carry every error"
# Out of memory decoding the daemon's answer (the plain build only): the rejection
# (101), or out of memory (5); not a failed attach (102), as when the answer's code
# could not be read. Likewise DEL of a container never attached: success (the daemon
# has no such sandbox), or 5, not "could not detach" (102).
if [ -f "$FAILMALLOC" ]; then
  conf net 1.0.0 "{$KEYS_BASE, \"proxy_config\": {\"rules\": [{\"name\": \"\", \"match_hosts\": [\"a b\"]}]}}" \
    > "$T/bad-in.json"
  OUTCOME_WHAT="ADD (rejected)" OUTCOME_OK=0 OUTCOME_CODES="5 101" \
    sweep_allocations authproxy-cni "$T/bad-in.json" outcome \
    env CNI_COMMAND=ADD CNI_CONTAINERID=ctr-bad-$$ CNI_NETNS="$NS" CNI_IFNAME=eth0 \
    CNI_PATH="$CNI_BIN" "$PLUGIN"
  pass "ADD of a rejected proxy_config with each of its $SWEPT allocations failing: 101 or 5"
  conf net 1.0.0 "{$KEYS_BASE, \"proxy_config_name\": \"agents\"}" > "$T/del-in.json"
  OUTCOME_WHAT=DEL OUTCOME_OK=1 OUTCOME_CODES=5 \
    sweep_allocations authproxy-cni "$T/del-in.json" outcome \
    env CNI_COMMAND=DEL CNI_CONTAINERID=ctr-never-$$ CNI_NETNS="$NS" CNI_IFNAME=eth0 \
    CNI_PATH="$CNI_BIN" "$PLUGIN"
  pass "DEL of a container never attached with each of its $SWEPT allocations failing: success or 5"
fi
run_plugin ADD ctr-bad-$$ "$NS" "$(conf net 1.0.0 "{$KEYS_BASE, \"proxy_config_name\": \"nope\"}")"
expect_error 101 "unknown stored config"
run_plugin ADD ctr-bad-$$ "$NS" "$(conf net 1.0.0 "{$KEYS_BASE, \"proxy_config_file\": \"$T/missing.json\"}")"
expect_error 7 "missing proxy_config_file"
echo '{"rules": [' > "$T/broken.json"
run_plugin ADD ctr-bad-$$ "$NS" "$(conf net 1.0.0 "{$KEYS_BASE, \"proxy_config_file\": \"$T/broken.json\"}")"
expect_error 7 "proxy_config_file that is not JSON"
run_plugin ADD ctr-bad-$$ "$NS" "$(conf net 1.0.0 "{$KEYS_BASE, \"proxy_config\": {}, \"proxyconfig_name\": \"x\"}")"
expect_error 2 "unknown key"
assert_contains "$OUT" 'proxyconfig_name' "unknown key named"
run_plugin ADD ctr-bad-$$ "$NS" "$(conf net 1.0.0 "{$KEYS_BASE, \"proxy_config\": {}, \"proxy_config_name\": \"agents\"}")"
expect_error 7 "two config sources"
run_plugin ADD ctr-bad-$$ "$NS" "$(conf net 1.0.0 "{$KEYS_BASE}")"
expect_error 7 "no config source"
run_plugin ADD ctr-bad-$$ "$NS" "$(conf net 0.2.0 "{$KEYS_BASE, \"proxy_config\": {}}")"
expect_error 1 "unsupported cniVersion"
assert_eq "$(jget "$OUT" 'd["cniVersion"]')" "0.2.0" "the error speaks the configuration's version"
run_plugin ADD ctr-bad-$$ "$NS" '{"cniVersion": "1.0.0", "name": '
expect_error 6 "configuration that is not JSON"
run_plugin ADD "bad id!" "$NS" "$(conf net 1.0.0 "{$KEYS_BASE, \"proxy_config\": {}}")"
expect_error 4 "invalid CNI_CONTAINERID"
assert_contains "$OUT" "CNI_CONTAINERID" "the variable is named"
run_plugin ADD ctr-bad-$$ "" "$(conf net 1.0.0 "{$KEYS_BASE, \"proxy_config\": {}}")"
expect_error 4 "ADD without CNI_NETNS"
run_plugin ADD ctr-bad-$$ /proc/$$/ns/net "$(conf net 1.0.0 "{$KEYS_BASE, \"proxy_config\": {}}")"
expect_error 102 "the host's namespace"
assert_contains "$OUT" "host_netns" "the daemon refuses the host's namespace"
ip link show lo >/dev/null && ! nft list table inet authproxy >/dev/null 2>&1 \
  || fail "the host's namespace was given an authproxy table"
OUT=$(env -i CNI_COMMAND=GC "$PLUGIN" < /dev/null) && RC=0 || RC=$?
expect_error 4 "unknown CNI_COMMAND"
# A configuration over 1.25 MiB (a proxy_config the daemon takes, and a prevResult) is
# refused whole, before anything is parsed or sent.
head -c $((1300 * 1024)) /dev/zero | tr '\0' ' ' > "$T/huge.json"
OUT=$(env -i CNI_COMMAND=ADD "$PLUGIN" < "$T/huge.json" 2>> "$T/plugin.log") && RC=0 || RC=$?
expect_error 7 "a configuration over 1.25 MiB"
assert_contains "$(jget "$OUT" 'd["details"]')" "standard input: larger than 1.25 MiB" \
  "the limit is named"
# Run by hand: --help is the usage on standard output; any other argument is an error.
out=$("$PLUGIN" --help) || fail "authproxy-cni --help failed"
assert_contains "$out" "CNI_COMMAND (ADD, DEL, CHECK, VERSION)" "--help"
OUT=$("$PLUGIN" ADD 2> "$T/usage.err") && RC=0 || RC=$?
assert_eq "$RC/$OUT" "2/" "an argument: status 2, nothing on standard output"
assert_contains "$(cat "$T/usage.err")" "usage: authproxy cni" "the usage on standard error"
down_keys="{\"type\": \"authproxy-cni\", \"control\": \"$T/nothing-here.sock\", \"proxy_config\": {}}"
run_plugin ADD ctr-bad-$$ "$NS" "$(conf net 1.0.0 "$down_keys")"
expect_error 100 "no daemon on the socket"
run_plugin DEL ctr-bad-$$ "$NS" "$(conf net 1.0.0 "$down_keys")"
assert_eq "$RC/$OUT" "0/" "DEL with no daemon on the socket is best effort"
assert_not_contains "$(ctl list)" "cni-ctr-bad-$$" "no failed ADD left a sandbox"
pass "errors: 1, 2, 4, 6, 7, 100, 101, 102 as CNI error JSON; the host namespace is refused; input over 1.25 MiB; usage"

# ---- the daemon down: ADD fails (no network rather than an open one), DEL succeeds ----
ns5=$(make_netns cni5)
chain_add ctr-down-$$ "$ns5" 1.0.0 "{$KEYS_BASE, \"proxy_config_name\": \"agents\"}"
[ "$RC" = 0 ] || fail "ADD before stopping the daemon: $RESULT"
CONF5=$(conf net 1.0.0 "{$KEYS_BASE, \"proxy_config_name\": \"agents\"}" "$RESULT")
stop_serve
ns6=$(make_netns cni6)
chain_add ctr-new-$$ "$ns6" 1.0.0 "{$KEYS_BASE, \"proxy_config_name\": \"agents\"}"
OUT=$RESULT
expect_error 100 "ADD while the daemon is down"
run_plugin CHECK ctr-down-$$ "/var/run/netns/$ns5" "$CONF5"
expect_error 100 "CHECK while the daemon is down"
run_plugin DEL ctr-down-$$ "/var/run/netns/$ns5" "$CONF5"
assert_eq "$RC/$OUT" "0/" "DEL while the daemon is down"
ip netns del "$ns5"   # the runtime removes the namespace after DEL
serve
list=$(ctl list)
assert_not_contains "$(jget "$list" '[s["name"] for s in d["sandboxes"]]')" "cni-ctr-down-$$" \
  "the restarted daemon serves the deleted container"
assert_contains "$(jget "$list" '[s["name"] for s in d["not_attached"]]')" "cni-ctr-down-$$" \
  "the restarted daemon reports the vanished sandbox"
[ ! -e "$STATE/sandboxes/cni-ctr-down-$$.sealed" ] || fail "state of the deleted container kept"
assert_contains "$(jget "$list" '[s["name"] for s in d["sandboxes"]]')" "cni-ctr-named-$$" \
  "the other sandboxes are back"
ip netns exec "$ns3" curl -sS -o /dev/null http://api.example.com/cni/after-restart
assert_eq "$(upq up "[hdr(r, 'Authorization') for r in reqs if r['path'] == '/cni/after-restart']")" \
  "[[\"Bearer sk-cni-$$\"]]" "injection after the restart"
chain_add ctr-new-$$ "$ns6" 1.0.0 "{$KEYS_BASE, \"proxy_config_name\": \"agents\"}"
[ "$RC" = 0 ] || fail "the stored config did not survive the restart: $RESULT"
pass "daemon down: ADD and CHECK fail with 100, DEL succeeds; after the restart the deleted container is forgotten and stored configs remain"

# ---- examples/authproxy.conflist, run the way libcni runs a network list ------------
cat > "$T/libcni.py" <<'PYEOF'
# A few lines of libcni: ADD runs the plugins in order, each with the previous result
# as prevResult, and caches the final result; CHECK (in order) and DEL (in reverse)
# get the cached result. Plugins are found by "type" in CNI_PATH.
import json, os, subprocess, sys
conflist, command, cid, netns, cache = sys.argv[1:6]
net = json.load(open(conflist))
plugins = net["plugins"] if command != "DEL" else list(reversed(net["plugins"]))
prev = json.load(open(cache)) if command != "ADD" and os.path.exists(cache) else None
for p in plugins:
    conf = dict(p, cniVersion=net["cniVersion"], name=net["name"])
    if prev is not None:
        conf["prevResult"] = prev
    exe = next(os.path.join(d, p["type"]) for d in os.environ["CNI_PATH"].split(":")
               if os.path.exists(os.path.join(d, p["type"])))
    env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID=cid, CNI_NETNS=netns,
               CNI_IFNAME="eth0")
    r = subprocess.run([exe], input=json.dumps(conf).encode(), env=env, capture_output=True)
    if r.returncode != 0:
        sys.stdout.write(r.stdout.decode())
        sys.exit(1)
    if command == "ADD":
        prev = json.loads(r.stdout)
if command == "ADD":
    json.dump(prev, open(cache, "w"))
    print(json.dumps(prev))
PYEOF
"$PY" - "$SRC/examples/authproxy.conflist" "$SOCK" > "$T/example.conflist" <<'PYEOF'
import json, sys
net = json.load(open(sys.argv[1]))
assert [p["type"] for p in net["plugins"]] == ["loopback", "authproxy-cni"]
net["plugins"][1]["control"] = sys.argv[2]
print(json.dumps(net))
PYEOF
libcni() { CNI_PATH="$CNI_BIN:$T/bin" "$PY" "$T/libcni.py" "$T/example.conflist" "$@" "$T/example.cache"; }
ns7=$(make_netns cni7)
RESULT=$(libcni ADD ctr-example-$$ "/var/run/netns/$ns7") || fail "the example conflist: ADD failed: $RESULT"
assert_eq "$(jget "$RESULT" '[d["cniVersion"], d["dns"]["nameservers"], d["interfaces"][0]["name"]]')" \
  '["1.0.0", ["127.0.0.53"], "lo"]' "the example's result"
ip netns exec "$ns7" curl -sS -o /dev/null http://api.example.com/cni/example
assert_eq "$(upq up "[hdr(r, 'Authorization') for r in reqs if r['path'] == '/cni/example']")" \
  "[[\"Bearer sk-cni-$$\"]]" "injection through the example conflist"
libcni CHECK ctr-example-$$ "/var/run/netns/$ns7" > /dev/null || fail "the example conflist: CHECK failed"
libcni DEL ctr-example-$$ "/var/run/netns/$ns7" > /dev/null || fail "the example conflist: DEL failed"
libcni DEL ctr-example-$$ "/var/run/netns/$ns7" > /dev/null || fail "the example conflist: second DEL failed"
assert_not_contains "$(ctl list)" "cni-ctr-example-$$" "the example's sandbox detached"
pass "examples/authproxy.conflist: ADD, CHECK, DEL, DEL as libcni runs a list"

# ---- every control slot taken: ADD is told to try again, and why ------------------
# The daemon serves 64 control connections at once; more wait for a slot, and once
# none has freed for 2 s they are refused with 503 too_many_clients. The runtime must hear "try again" (11) with that reason, not that
# the daemon is stopping, which would send an operator looking at the wrong thing.
cat > "$T/hold.py" <<'PYEOF'
import os, socket, sys, time
sock, ready, release = sys.argv[1:4]
held = []
for _ in range(64):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    held.append(s)
open(ready, "w").close()
for _ in range(400):  # at most 20 s; the daemon closes idle slots after 30 s
    if os.path.exists(release):
        break
    time.sleep(0.05)
PYEOF
"$PY" "$T/hold.py" "$SOCK" "$T/held" "$T/release" &
HOLD=$!
PIDS+=($HOLD)
wait_for "[ -e '$T/held' ]"
ns9=$(make_netns cni9)
CONF9=$(conf net 1.0.0 "{$KEYS_BASE, \"proxy_config_name\": \"agents\"}")
run_plugin ADD ctr-busy-$$ "/var/run/netns/$ns9" "$CONF9"
expect_error 11 "ADD with every control slot taken"
assert_contains "$(jget "$OUT" 'd["details"]')" "too_many_clients" "the reason is given"
assert_not_contains "$(jget "$OUT" 'd["msg"]')" "stopping" "a busy daemon is not said to be stopping"
run_plugin DEL ctr-busy-$$ "/var/run/netns/$ns9" "$CONF9"
expect_error 11 "DEL with every control slot taken"
assert_not_contains "$(jget "$OUT" 'd["msg"]')" "stopping" "a busy daemon is not said to be stopping (DEL)"
run_plugin CHECK ctr-busy-$$ "/var/run/netns/$ns9" \
  "$(conf net 1.0.0 "{$KEYS_BASE, \"proxy_config_name\": \"agents\"}" '{"cniVersion": "1.0.0"}')"
expect_error 11 "CHECK with every control slot taken"
assert_contains "$(jget "$OUT" 'd["details"]')" "too_many_clients" "the reason is given (CHECK)"
assert_not_contains "$(jget "$OUT" 'd["msg"]')" "stopping" "a busy daemon is not said to be stopping (CHECK)"
: > "$T/release"
wait "$HOLD"
run_plugin ADD ctr-busy-$$ "/var/run/netns/$ns9" "$CONF9"
assert_eq "$RC" "0" "ADD once the slots are free"
run_plugin DEL ctr-busy-$$ "/var/run/netns/$ns9" "$CONF9"
assert_eq "$RC/$OUT" "0/" "DEL once the slots are free"
pass "every control slot taken: ADD, DEL and CHECK fail with 11 and too_many_clients, then ADD and DEL succeed"

# ---- nothing holds the secret or the opaque value in clear -------------------------
printf '%s\n' "sk-cni-$$" "opaque-cni-$$" "sk-later-$$" > "$T/values.txt"
if grep -rqFf "$T/values.txt" "$STATE" "$T/plugin.log" "$T/serve.log"; then
  fail "a secret or opaque value is in the state dir or a log"
fi
pass "state dir and logs hold no secret value"
