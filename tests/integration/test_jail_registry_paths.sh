#!/usr/bin/env bash
# A private npm registry behind path rules: npm names every scoped package with an
# encoded '/' ("/@scope%2fname"), so such a path must get the registry's credential
# from a rule limited to the registry's paths, and must not be taken for a denied
# path ("npm login"'s /-/user/...) that it is not under either reading of the '/'.
#
#   jail netns                                host netns
#   +------------------------------+          +------------------------------------+
#   | curl (npm's requests), npm   |  -nft->  | authproxy: intercepts              |
#   | if installed                 |          |   npm.corp.example -> fake upstream |
#   +------------------------------+          +------------------------------------+
. "$(dirname "$0")/lib.sh"

make_ca "$T/ca" npm.corp.example
start_upstream reg "$T/ca/server.pem" "$T/ca/server.key"
mkdir -p "$T/secrets"
printf 'npm-tok-%s\n' "$$" > "$T/secrets/NPM_TOKEN"
TOKEN="Bearer npm-tok-$$"
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "nexus-npm", "match_hosts": ["npm.corp.example"],
    "match_paths": ["/repository/npm/*"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret",
                   "value": "Bearer {NPM_TOKEN}" } ] } ],
  "egress": { "deny": [ { "hosts": ["npm.corp.example"],
                          "paths": ["/repository/npm/-/user/*"] } ] },
  "dns": { "remap": { "npm.corp.example": "127.0.0.1:$reg_PORT" } } }
EOF
run() {
  jail --config "$T/config.json" --secrets-dir "$T/secrets" --upstream-ca "$T/ca/ca.pem" \
    --user nobody -- "$@"
}
R=https://npm.corp.example/repository/npm

# npm's requests for a scoped package: the packument and the tarball.
out=$(run curl -sS -o /dev/null -o /dev/null -w "%{http_code} " "$R/@corp%2fthing" \
  "$R/@corp%2fthing/-/thing-1.0.0.tgz")
assert_eq "$out" "200 200 " "scoped package requests (403: taken for the denied path)"
assert_eq "$(upq reg '[hdr(r, "Authorization") for r in reqs]')" \
  "$("$PY" -c 'import json, sys; print(json.dumps([[sys.argv[1]]] * 2))' "$TOKEN")" \
  "the registry's credential on scoped package requests"
pass "a scoped package's path gets the credential and is not denied"

# The denied path, under either reading of an encoded '/', and one that decoding
# turns into a dot-segment, stay denied; none reaches the registry.
: > "$T/reg.jsonl"
for p in "-/user/org.couchdb.user:x" "-%2Fuser/org.couchdb.user:x" \
  "@x%2F..%2F-/user/org.couchdb.user:x"; do
  out=$(run curl -sS -X PUT -o /dev/null -w '%{http_code}' "$R/$p")
  assert_eq "$out" "403" "PUT $R/$p"
done
assert_eq "$(upq reg 'len(reqs)')" "0" "denied requests forwarded"
pass "the denied path stays denied, encoded or not"

# The real client, where it is installed (Debian's npm package).
if command -v npm >/dev/null 2>&1; then
  : > "$T/reg.jsonl"
  mkdir -p "$T/npm"
  chmod 777 "$T/npm"
  run env HOME="$T/npm" npm_config_cache="$T/npm/cache" npm view --json --no-update-notifier \
    --registry "$R/" @corp/thing > /dev/null 2> "$T/npm.log" || true
  assert_eq "$(upq reg '[r["path"] for r in reqs][:1]')" "$(jlist /repository/npm/@corp%2fthing)" \
    "npm's request"
  assert_eq "$(upq reg 'hdr(reqs[0], "Authorization")')" "$(jlist "$TOKEN")" "npm: injected"
  pass "npm view of a scoped package: injected"
else
  echo "note: npm not installed; npm itself not exercised"
fi
