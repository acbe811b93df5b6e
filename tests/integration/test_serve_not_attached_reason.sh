#!/usr/bin/env bash
# A sandbox the daemon could not attach again at start (its config names a secret that
# was deleted) is listed under not_attached with the reason, and has no network. The
# reason said "proxy_config was rejected: 1 error(s); see details", and no answer had
# details (only the daemon's log named the secret); a GET of the sandbox, as a CNI
# CHECK makes after a restart, said "no sandbox NAME", as of a name never attached.
# Both now say what is wrong (the secret) and what to do.
#
#   ap-na-PID      host
#   (no traffic)   authproxy serve, restarted after the secret is deleted
. "$(dirname "$0")/lib.sh"

STATE=$T/state
SOCK=$T/control.sock
serve() {
  "$AUTHPROXY" serve --state-dir "$STATE" --control "$SOCK" >> "$T/serve.log" 2>&1 &
  SERVE_PID=$!
  PIDS+=($SERVE_PID)
  wait_for "[ -S '$SOCK' ] && '$AUTHPROXY' ctl --control '$SOCK' health >/dev/null 2>&1"
}
ctl() { "$AUTHPROXY" ctl --control "$SOCK" "$@"; }
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret",
                   "value": "Bearer {GONE_KEY}" } ] } ] }
EOF

serve
ns=$(make_netns na)
echo -n "sk-na-$$" | ctl secret-set GONE_KEY
ctl attach box --netns "/var/run/netns/$ns" --config "$T/config.json" > /dev/null
ctl secret-delete GONE_KEY > /dev/null
kill -TERM "$SERVE_PID"
wait "$SERVE_PID" || fail "the daemon's stop: exit $?"
serve

reason=$(ctl list | "$PY" -c '
import json, sys
print([l["reason"] for l in json.load(sys.stdin)["not_attached"] if l["name"] == "box"][0])')
assert_contains "$reason" "secret GONE_KEY not found" "the reason listed under not_attached"
pass "not_attached names the missing secret: $reason"

set +e
out=$(ctl get box 2>&1)
rc=$?
set -e
[ $rc -ne 0 ] || fail "GET of a sandbox not attached succeeded: $out"
assert_contains "$out" "sandbox_not_found" "the code of a GET of a sandbox not attached"
assert_contains "$out" "is not attached" "a GET of a sandbox not attached"
assert_contains "$out" "secret GONE_KEY not found" "a GET of a sandbox not attached: why"
pass "GET of it: $out"

# Once the secret is back, an attach takes it off the list, as before.
echo -n "sk-na-$$" | ctl secret-set GONE_KEY
ctl attach box --netns "/var/run/netns/$ns" --config "$T/config.json" > /dev/null
assert_eq "$(ctl list | "$PY" -c 'import json, sys; print(len(json.load(sys.stdin)["not_attached"]))')" \
  "0" "not_attached after the attach"
ctl detach box > /dev/null
pass "attached again with the secret back"
