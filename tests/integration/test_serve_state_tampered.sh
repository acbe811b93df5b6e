#!/usr/bin/env bash
# Sealed state files the daemon did not write as they are: each is refused at start,
# and refusal never opens a path. A sandbox's state replaced by another sandbox's
# (both sealed under the same key, bound to their names) leaves that sandbox without
# network, reported not attached, while the other is served; a stored config with
# one byte changed is not available; the pushed secrets with one byte changed stop
# the start (the daemon would otherwise drop them from the file at its next write),
# and every sandbox keeps no network until the file is put back.
#
#   ap-ta-PID, ap-tb-PID (named namespaces)     host
#   curl ---nft---> listeners  ============>     authproxy serve --state-dir $T/state
#                                                  fake upstream 127.0.0.1:$up_PORT
. "$(dirname "$0")/lib.sh"

start_upstream up
STATE=$T/state
SOCK=$T/control.sock

serve() {
  "$AUTHPROXY" serve --state-dir "$STATE" --control "$SOCK" --drain-timeout 1 \
    >> "$T/serve.log" 2>&1 &
  SERVE_PID=$!
  PIDS+=($SERVE_PID)
  wait_for "[ -S '$SOCK' ] && '$AUTHPROXY' ctl --control '$SOCK' health >/dev/null 2>&1"
}
stop() { kill -TERM "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true; rm -f "$SOCK"; }
ctl() { "$AUTHPROXY" ctl --control "$SOCK" "$@"; }
# flip FILE OFFSET: changes one bit of the byte at OFFSET from the end of FILE.
flip() {
  "$PY" - "$1" "$2" <<'PYEOF'
import sys
p, off = sys.argv[1], int(sys.argv[2])
b = bytearray(open(p, "rb").read())
b[-off] ^= 0x01
open(p, "wb").write(bytes(b))
PYEOF
}
# get NS PATH: a plain HTTP request from namespace NS; prints curl's status or "failed".
get() {
  local code
  code=$(ip netns exec "$1" curl -sS --max-time 3 -o /dev/null -w '%{http_code}' \
    "http://api.example.com$2" 2>/dev/null) || code=failed
  echo "$code"
}

SECRET="sk-tamper-$$"
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
nsa=$(make_netns ta)
nsb=$(make_netns tb)
serve
printf '%s' "$SECRET" | ctl secret-set KEY > /dev/null
ctl attach a --netns "/var/run/netns/$nsa" --config "$T/config.json" > /dev/null
ctl attach b --netns "/var/run/netns/$nsb" --config "$T/config.json" > /dev/null
ctl config-set stored --config "$T/config.json" > /dev/null
assert_eq "$(get "$nsa" /a-before)" "200" "a before"
assert_eq "$(get "$nsb" /b-before)" "200" "b before"
assert_eq "$(upq up 'hdr(reqs[-1], "Authorization")')" "$(jlist "Bearer $SECRET")" "injected"
pass "two sandboxes, a stored config and a pushed secret"

# ---- a sandbox's state replaced by another's ---------------------------------------
stop
cp "$STATE/sandboxes/b.sealed" "$STATE/sandboxes/a.sealed"
flip "$STATE/configs/stored.sealed" 20
serve
assert_contains "$(cat "$T/serve.log")" \
  "sandbox a: cannot read its state $STATE/sandboxes/a.sealed: it does not decrypt with the state key; it stays without network" \
  "the log names the sandbox, the file and why"
out=$(ctl list)
assert_contains "$out" '"not_attached"' "a is reported"
assert_contains "$out" '"state unreadable"' "why a is not attached"
assert_eq "$(get "$nsa" /a-swapped)" "failed" "a request from a"
assert_eq "$(upq up "len([r for r in reqs if r['path'] == '/a-swapped'])")" "0" \
  "requests from a that reached the upstream"
assert_eq "$(get "$nsb" /b-after-swap)" "200" "b, whose state it was"
assert_eq "$(upq up 'hdr(reqs[-1], "Authorization")')" "$(jlist "Bearer $SECRET")" \
  "b's request injected"
pass "a sandbox's state swapped for another's is refused; no network for it"

# ---- a stored config with one byte changed ------------------------------------------
assert_contains "$(cat "$T/serve.log")" \
  "config stored: cannot read $STATE/configs/stored.sealed: it does not decrypt with the state key; it is not available" \
  "the log says the config is not available"
ctl config-get stored > "$T/cfgget.out" 2>&1 && fail "the altered config was served: $(cat "$T/cfgget.out")"
ctl attach c --netns "/var/run/netns/$nsa" --config-name stored > "$T/attach.out" 2>&1 &&
  fail "an attach used the altered config"
assert_contains "$(cat "$T/attach.out")" "store it first with PUT /v1/configs/NAME" \
  "the attach's error: no such config"
assert_eq "$(get "$nsa" /a-config)" "failed" "a request from a after the refused attach"
pass "a stored config altered on disk is not available"

# ---- the pushed secrets with one byte changed ---------------------------------------
stop
cp "$STATE/secrets.sealed" "$T/secrets.sealed.good"
flip "$STATE/secrets.sealed" 1
: > "$T/serve.log"
set +e
"$AUTHPROXY" serve --state-dir "$STATE" --control "$SOCK" >> "$T/serve.log" 2>&1 &
pid=$!
PIDS+=($pid)
wait "$pid"
rc=$?
set -e
[ "$rc" -ne 0 ] || fail "the daemon started with altered secrets"
assert_contains "$(cat "$T/serve.log")" \
  "cannot read $STATE/secrets.sealed: it does not decrypt with the state key" "the log"
[ ! -S "$SOCK" ] || fail "a control socket was opened"
assert_eq "$(get "$nsb" /b-secrets-altered)" "failed" "a request from b"
assert_eq "$(upq up "len([r for r in reqs if r['path'] == '/b-secrets-altered'])")" "0" \
  "requests that reached the upstream"
cp "$T/secrets.sealed.good" "$STATE/secrets.sealed"
serve
assert_eq "$(get "$nsb" /b-restored)" "200" "b with the secrets put back"
assert_eq "$(upq up 'hdr(reqs[-1], "Authorization")')" "$(jlist "Bearer $SECRET")" \
  "b's request injected"
pass "altered pushed secrets stop the start; no network until they are put back"
