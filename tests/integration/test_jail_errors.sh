#!/usr/bin/env bash
# `authproxy jail`'s exit status, as a script calling it sees it: CMD's own status,
# 126 / 127 / 128+N as a shell gives them, and 125 when the jail itself fails (a bad
# option, not root, a bad config, a missing secret, an unknown --user), which it does
# before CMD runs, with a message naming the problem. CMD here would leave a file.
. "$(dirname "$0")/lib.sh"

mkdir -p "$T/w" "$T/secrets"
chmod 0777 "$T/w"
echo '{bad' > "$T/bad.json"
cat > "$T/nosecret.json" <<'EOF2'
{ "rules": [ { "name": "a", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "{NOPE}" } ] } ] }
EOF2
printf '#!/bin/sh\nexit 0\n' > "$T/noexec.sh"
chmod 0644 "$T/noexec.sh"

# status_of EXPECTED MESSAGE ARGS...: runs `authproxy jail ARGS... -- touch $T/w/ran`;
# its status must be EXPECTED, its stderr must hold MESSAGE, and CMD must not have run.
status_of() {
  local want=$1 msg=$2 rc=0 out
  shift 2
  out=$("$@" -- touch "$T/w/ran" 2>&1) || rc=$?
  assert_eq "$rc" "$want" "status of: ${*#"$AUTHPROXY"} ($out)"
  assert_contains "$out" "$msg" "message of: $*"
  [ ! -e "$T/w/ran" ] || fail "CMD ran although the jail failed: $*"
}
status_of 125 "must run as root" setpriv --reuid=65534 --regid=65534 --clear-groups \
  "$AUTHPROXY" jail
status_of 125 "unrecognized option" "$AUTHPROXY" jail --no-such-option
status_of 125 "$T/missing.json" "$AUTHPROXY" jail --user nobody --config "$T/missing.json"
status_of 125 "invalid JSON" "$AUTHPROXY" jail --user nobody --config "$T/bad.json"
status_of 125 "secret NOPE not found in $T/secrets (create the file $T/secrets/NOPE)" \
  "$AUTHPROXY" jail --user nobody --config "$T/nosecret.json" --secrets-dir "$T/secrets"
# The jail has no control API: its error used to say to push the secret with PUT.
status_of 125 "no secrets directory was given (--secrets-dir DIR" "$AUTHPROXY" jail \
  --user nobody --config "$T/nosecret.json"
status_of 125 'no such user "no-such-user-here"' "$AUTHPROXY" jail --user no-such-user-here
status_of 125 "--netns $T/no-such-netns: No such file or directory" "$AUTHPROXY" jail \
  --user nobody --netns "$T/no-such-netns"
status_of 125 "--netns $T/bad.json: not a network namespace" "$AUTHPROXY" jail \
  --user nobody --netns "$T/bad.json"
status_of 125 "--netns /proc/self/ns/mnt: not a network namespace" "$AUTHPROXY" jail \
  --user nobody --netns /proc/self/ns/mnt
pass "the jail's own failures: status 125, a message, CMD not run"

set +e
PATH=/usr/bin:/bin jail --user nobody -- no-such-command-here 2> "$T/err"; rc=$?
set -e
assert_eq "$rc" 127 "status of a CMD not found"
assert_contains "$(cat "$T/err")" "No such file" "message for a CMD not found"
# A directory of PATH CMD's user cannot search (root's /root/.local/bin) does not
# turn "not found" into "Permission denied".
mkdir -m 0700 "$T/private"
set +e
PATH=$T/private:/usr/bin:/bin jail --user nobody -- no-such-command-here 2> "$T/err"; rc=$?
set -e
assert_eq "$rc" 127 "status of a CMD not found, with an unsearchable directory in PATH"
assert_contains "$(cat "$T/err")" "No such file" "message for a CMD not found"
set +e
jail --user nobody -- "$T/noexec.sh" 2> /dev/null; rc=$?
PATH=$T/private:$T:/usr/bin:/bin jail --user nobody -- noexec.sh 2> /dev/null; rc2=$?
set -e
assert_eq "$rc $rc2" "126 126" "status of a CMD not executable, by path and found in PATH"
set +e
jail --user nobody -- sh -c 'exit 1'; rc1=$?
jail --user nobody -- sh -c 'kill -KILL $$'; rc2=$?
set -e
assert_eq "$rc1 $rc2" "1 137" "statuses of CMD exiting 1 and killed by SIGKILL"
pass "CMD's statuses as a shell gives them"

# CMD's environment: the CA variables name the bundle, and no proxy variable of the
# caller's survives (a proxy would be reached through authproxy, and every request
# to it denied for names that disagree).
# Package managers' own proxy settings too: npm (and pnpm and yarn 1, which read
# npm's) with npm_config_https_proxy failed every install with "400 Bad Request -
# [object Object]", authproxy's answer to the CONNECT it sent the corporate proxy.
# npm and yarn read a '-' after their prefix as '_': npm in the jail with
# "npm_config_https-proxy" set (env(1) and a CI's or container's env take such names)
# answered `npm config get https-proxy` with the corporate proxy.
env_out=$(env http_proxy=http://corp:3128 HTTPS_PROXY=http://corp:3128 ALL_PROXY=socks5://corp \
  no_proxy=example.com npm_config_https_proxy=http://corp:3128 NPM_CONFIG_PROXY=http://corp:3128 \
  npm_config_noproxy=example.com YARN_HTTPS_PROXY=http://corp:3128 PIP_PROXY=http://corp:3128 \
  CARGO_HTTP_PROXY=http://corp:3128 npm_config_registry=https://registry.example \
  npm_config_https-proxy=http://corp:3128 YARN_HTTPS-PROXY=http://corp:3128 \
  "$AUTHPROXY" jail --user nobody -- env)
assert_contains "$env_out" "npm_config_registry=" "CMD's environment kept npm's other settings"
for v in http_proxy HTTPS_PROXY ALL_PROXY no_proxy npm_config_https_proxy NPM_CONFIG_PROXY \
  npm_config_noproxy YARN_HTTPS_PROXY PIP_PROXY CARGO_HTTP_PROXY npm_config_https-proxy \
  YARN_HTTPS-PROXY; do
  ! grep -q "^$v=" <<<"$env_out" || fail "CMD's environment kept $v"
done
assert_contains "$env_out" "SSL_CERT_FILE=" "CMD's environment names the CA bundle"
# An environment entry without '=' (execve takes any string) under one of those names:
# unsetenv leaves it, and the jail's child looked for it again forever, at 100% CPU,
# CMD never run. (timeout only bounds the failure; the jail takes well under a second.)
rc=0
env_out=$(timeout -s KILL 60 python3 -c '
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
def arr(l):
    a = (ctypes.c_char_p * (len(l) + 1))(*[s.encode() for s in l])
    a[len(l)] = None
    return a
argv = sys.argv[1:]
libc.execve(argv[0].encode(), arr(argv), arr(["PATH=/usr/bin:/bin", "npm_config_proxy",
                                           "NPM_CONFIG_PROXY=http://corp:3128"]))
sys.exit("execve: errno %d" % ctypes.get_errno())
' "$AUTHPROXY" jail --user nobody -- env) || rc=$?
assert_eq "$rc" 0 "status of a jail whose environment has an entry without '='"
! grep -qi "^npm_config_proxy=" <<<"$env_out" || fail "CMD's environment kept NPM_CONFIG_PROXY"
pass "CMD's environment: CA variables set, no proxy variables"

# A config over the 1 MiB limit: refused before CMD runs, naming the limit.
head -c $((3 << 20)) /dev/zero | tr '\0' ' ' > "$T/huge.json"
status_of 125 "larger than 1 MiB" "$AUTHPROXY" jail --user nobody --config "$T/huge.json"
pass "a config over 1 MiB: status 125, the limit named"

# A config part that can never apply: warned of as `config check` does, and CMD runs.
cat > "$T/dead-rule.json" <<'EOF2'
{ "egress": { "default": "deny", "allow": ["api.openai.com"] },
  "rules": [ { "name": "anth", "match_hosts": ["api.anthropic.com"],
    "headers": [ { "name": "x-api-key", "type": "plaintext", "value": "k" } ] } ] }
EOF2
out=$(jail --user nobody --config "$T/dead-rule.json" -- echo cmd-ran 2>&1) ||
  fail "the jail refused a config with a warning: $out"
assert_contains "$out" "authproxy jail: config: rules[0].match_hosts[0]: warning: egress never lets the sandbox reach api.anthropic.com" \
  "the warning"
assert_contains "$out" "cmd-ran" "CMD ran"
pass "a config part that never applies: warned of, and CMD runs"
