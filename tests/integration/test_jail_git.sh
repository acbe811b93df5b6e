#!/usr/bin/env bash
# git over HTTPS with the credential injected by the proxy, configured as the README
# says: a rule for github.com adding "Authorization: Basic {GITHUB_BASIC}" (the secret
# holds base64 of "x-access-token:TOKEN"), github.com remapped to a smart-HTTP git
# server (git http-backend) that requires exactly that header. Clones (protocol v0
# and v2, shallow, partial), fetch, pushes (small, and chunked past http.postBuffer
# after git's probe), the README's read-only policy, git:// and SSH refused by an
# allow list of github.com:443, a redirect to another host (no credential follows),
# and the credential echoed back by the server (masked, also percent-encoded in a
# redirect's Location).
#
#   jail netns (git as nobody)           host netns
#   git https://github.com/o/r.git -nft-> authproxy -remap-> gh: git_http_server.py
#                                                     (TLS, test CA, checks the header)
#                                                  -remap-> other: the same, no auth
. "$(dirname "$0")/lib.sh"
require_cmd git

make_ca "$T/ca" github.com other.example.com
# A token of GitHub's shape: "x-access-token:" and it make 55 bytes, so its base64
# ends in "==" padding, which a percent-encoded echo writes as %3D%3D.
TOKEN="ghs_$(printf '%036d' $$)"
mkdir -p "$T/secrets" "$T/repos/o" "$T/sb"
printf 'x-access-token:%s' "$TOKEN" | base64 -w0 > "$T/secrets/GITHUB_BASIC"
BASIC=$(cat "$T/secrets/GITHUB_BASIC")
CRED=${BASIC%%=*}  # the credential without its padding: it decodes to the token all the same

git init -q --bare "$T/repos/o/r.git"
git -C "$T/repos/o/r.git" config http.receivepack true
git -C "$T/repos/o/r.git" config uploadpack.allowFilter true
git init -q "$T/seed"
for i in 1 2 3; do
  echo "$i" > "$T/seed/f$i"
  git -C "$T/seed" add "f$i"
  git -C "$T/seed" -c user.email=a@b -c user.name=a commit -qm "c$i"
done
git -C "$T/seed" push -q "$T/repos/o/r.git" HEAD:refs/heads/main
git -C "$T/repos/o/r.git" symbolic-ref HEAD refs/heads/main
HEAD0=$(git -C "$T/repos/o/r.git" rev-parse main)
chmod -R a+rwX "$T/repos" "$T/sb"

start_git() {  # NAME ARGS...: sets NAME_PORT
  local name=$1
  shift
  : > "$T/$name.jsonl"
  "$PY" "$TOOLS/git_http_server.py" --root "$T/repos" --port-file "$T/$name.port" \
    --log "$T/$name.jsonl" --cert "$T/ca/server.pem" --key "$T/ca/server.key" "$@" \
    2> "$T/$name.log" &
  PIDS+=($!)
  wait_for "[ -s '$T/$name.port' ]" 10
  printf -v "${name}_PORT" '%s' "$(cat "$T/$name.port")"
}
start_git gh --auth "Basic $BASIC" --redirect /moved/=https://other.example.com/o/ \
  --login /expired/
start_git other

config() {  # EXTRA: more members of the config
  cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "github", "match_hosts": ["github.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret",
                   "value": "Basic {GITHUB_BASIC}" } ] } ],
  $1
  "dns": { "remap": { "github.com": "127.0.0.1:$gh_PORT",
                      "other.example.com": "127.0.0.1:$other_PORT" } } }
EOF
}
run() {
  : > "$T/audit.jsonl"
  jail --config "$T/config.json" --secrets-dir "$T/secrets" --upstream-ca "$T/ca/ca.pem" \
    --log "$T/audit.jsonl" --user nobody -- env HOME="$T/sb" GIT_TERMINAL_PROMPT=0 \
    GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@b GIT_COMMITTER_NAME=a GIT_COMMITTER_EMAIL=a@b \
    sh -c "cd '$T/sb' && $1"
}
# The requests a server saw, one line each: METHOD PATH STATUS CHUNKED AUTHORIZATION.
seen() {
  "$PY" - "$T/$1.jsonl" <<'PYEOF'
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    auth = [v for k, v in r["headers"] if k.lower() == "authorization"]
    print(r["method"], r["path"], r["status"], "chunked" if r["chunked"] else "-",
          auth[0] if auth else "none")
PYEOF
}

# ---- clones, fetch, pushes -------------------------------------------------------
config ""
out=$(run '
  git -c protocol.version=0 clone -q https://github.com/o/r.git v0 && git -C v0 rev-parse HEAD
  git clone -q https://github.com/o/r.git v2 && git -C v2 rev-parse HEAD
  git clone -q --depth 1 https://github.com/o/r.git shallow && git -C shallow rev-list --count HEAD
  git clone -q --filter=blob:none https://github.com/o/r.git partial && git -C partial show HEAD:f2
  cd v2 && echo small > s && git add s && git commit -qm small && git push -q origin HEAD:main &&
  head -c 200000 /dev/urandom > big && git add big && git commit -qm big &&
  GIT_TRACE_CURL=1 GIT_TRACE_CURL_NO_DATA=1 git -c http.postBuffer=65536 push -q origin \
    HEAD:main 2> ../trace && git rev-parse HEAD && git -C ../v0 fetch -q && \
    git -C ../v0 rev-parse origin/main' 2>&1)
pushed=$(git -C "$T/repos/o/r.git" rev-parse main)
assert_eq "$out" "$(printf '%s\n%s\n1\n2\n%s\n%s' "$HEAD0" "$HEAD0" "$pushed" "$pushed")" \
  "clones (v0, v2, shallow, partial), pushes and a fetch"
assert_not_contains "$(cat "$T/sb/trace")" "Authorization" "an Authorization in git's own trace"
assert_contains "$(cat "$T/sb/trace")" "Transfer-Encoding: chunked" "the large push chunked"
assert_eq "$(seen gh | grep -vc " Basic $BASIC\$")" 0 "requests without the credential"
assert_contains "$(seen gh)" "POST /o/r.git/git-receive-pack 200 chunked" "the chunked push"
assert_eq "$(grep -c '"injected":\["Authorization"\]' "$T/audit.jsonl")" \
  "$(grep -c '"event":"request"' "$T/audit.jsonl")" "audited as injected"
pass "clone v0/v2/shallow/partial, fetch, small and chunked push: injected, never seen"

# ---- the README's read-only policy ---------------------------------------------------
config '"egress": { "default": "allow", "deny": [ { "hosts": ["github.com"],
    "paths": ["/*/git-receive-pack"], "methods": ["POST"] } ] },'
: > "$T/gh.jsonl"
rc=0
out=$(run 'git clone -q https://github.com/o/r.git ro && cd ro && echo x > x && git add x &&
  git commit -qm x && git push origin HEAD:main' 2>&1) || rc=$?
assert_eq "$rc" 1 "git push's status under the read-only policy"
assert_contains "$out" "RPC failed; HTTP 403 curl 22 The requested URL returned error: 403" \
  "what git prints"
assert_contains "$out" "the remote end hung up" "what git prints next"
assert_eq "$(echo "$out" | tail -n 1)" "Everything up-to-date" "what git prints last"
assert_not_contains "$out" "egress_deny" "the reason in what git prints"
assert_not_contains "$(seen gh)" "git-receive-pack 200" "a push the server received"
assert_contains "$(cat "$T/audit.jsonl")" '"path":"/o/r.git/git-receive-pack","action":"deny","reason":"egress_deny"' \
  "the audit record"
assert_eq "$(git -C "$T/repos/o/r.git" rev-parse main)" "$pushed" "the branch"
pass "read-only: push refused with 403 at once (audited egress_deny), clone works"

# ---- git:// and SSH under an allow list of github.com:443 ----------------------------
config '"egress": { "default": "deny", "allow": ["github.com:443"] },'
rc=0
out=$(run 'git ls-remote https://github.com/o/r.git main | cut -f1
  git ls-remote git://github.com/o/r.git
  command -v ssh >/dev/null || exit 0
  GIT_SSH_COMMAND="ssh -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null" \
    git ls-remote git@github.com:o/r.git' 2>&1) || rc=$?
assert_eq "$(echo "$out" | head -n1)" "$pushed" "ls-remote over HTTPS"
assert_contains "$out" "Connection reset by peer" "git:// refused"
assert_eq "$(grep -c '"dst":"[0-9.]*:9418".*"action":"deny","reason":"egress_not_allowed"' "$T/audit.jsonl")" 1 \
  "git:// audited"
if command -v ssh >/dev/null; then
  assert_contains "$out" "Connection reset by" "ssh refused"
  assert_eq "$(grep -c '"dst":"[0-9.]*:22".*"action":"deny","reason":"egress_not_allowed"' "$T/audit.jsonl")" 1 \
    "ssh audited"
fi
pass "git:// and ssh refused by host and port (a reset, audited egress_not_allowed)"

# ---- redirects and echoes ----------------------------------------------------------
config ""
: > "$T/gh.jsonl"
out=$(run 'cat "$SSL_CERT_FILE" '"'$T/ca/ca.pem'"' > bundle.pem &&
  GIT_SSL_CAINFO=$PWD/bundle.pem git clone -q https://github.com/moved/r.git moved &&
  git -C moved rev-parse HEAD
  curl -sS -i https://github.com/expired/r.git/info/refs' 2>&1)
assert_contains "$out" "$pushed" "the clone redirected to another host"
assert_eq "$(seen other | grep -vc ' none$')" 0 "requests to the other host with a credential"
assert_contains "$(seen other)" "GET /o/r.git/info/refs 200" "the other host served the clone"
assert_not_contains "$out" "$CRED" "the credential in what the sandbox received"
assert_contains "$out" "Location: /login?auth=Basic%20$(printf '%*s' ${#CRED} '' | tr ' ' '*')" \
  "the percent-encoded echo masked"
assert_contains "$out" "refused: $(printf '%*s' $((${#BASIC} + 6)) '' | tr ' ' '*')" \
  "the echo as sent masked whole"
pass "redirect to another host: no credential follows; echoes masked"
