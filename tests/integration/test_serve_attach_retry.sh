#!/usr/bin/env bash
# An orchestrator retries an attach whose answer it did not get (its timeout ran out,
# the connection was cut): the sandbox is attached already. An attach that repeats the
# sandbox exactly (the name, the namespace's path, the config, and the CA if it names
# one) is answered 200 with the sandbox, as the attach that succeeded was answered 201;
# it used to be a 409 the retry could not tell from a clash. Anything else is the 409
# sandbox_exists, which names the namespace the sandbox serves and what to do: an
# attach of the name to another namespace (DELETE first; a PATCH cannot move it), one
# with another config or CA (PATCH, or DELETE), one by another path to the namespace.
#
#   ap-ra-PID (attached as box)   host
#   ap-rb-PID (never attached)    authproxy serve
. "$(dirname "$0")/lib.sh"

SOCK=$T/control.sock
"$AUTHPROXY" serve --state-dir "$T/state" --control "$SOCK" >> "$T/serve.log" 2>&1 &
PIDS+=($!)
wait_for "[ -S '$SOCK' ] && '$AUTHPROXY' ctl --control '$SOCK' health >/dev/null 2>&1"
ctl() { "$AUTHPROXY" ctl --control "$SOCK" "$@"; }
echo '{}' > "$T/config.json"
a=$(make_netns ra)
b=$(make_netns rb)
ca=$(ctl attach box --netns "/var/run/netns/$a" --config "$T/config.json")

attach_err() {  # NETNS: the error of attaching box to it
  local out
  if out=$(ctl attach box --netns "$1" --config "$T/config.json" 2>&1); then
    fail "attached box again to $1"
  fi
  echo "$out"
}
put() {  # NAME BODY: prints the status; the answer is in $T/answer
  curl -sS -o "$T/answer" -w '%{http_code}' --unix-socket "$SOCK" -X PUT \
    -H 'Content-Type: application/json' --data-binary "$2" "http://authproxy/v1/sandboxes/$1"
}
answer_ca() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["ca_certificate"], end="")' "$T/answer"; }

# The retry: 200, with the sandbox as the first attach answered it. ctl takes it too.
assert_eq "$(put box "{\"netns\": \"/var/run/netns/$a\", \"proxy_config\": {}}")" 200 \
  "a retried attach"
assert_eq "$(answer_ca)" "$ca" "the CA a retried attach answers"
assert_eq "$(ctl attach box --netns "/var/run/netns/$a" --config "$T/config.json")" "$ca" \
  "ctl attach, repeated"
assert_eq "$(ctl ca box)" "$ca" "the CA after the retries"
assert_contains "$(cat "$T/serve.log")" "sandbox box: attach repeated" "the log says so"
pass "a retry is answered 200 with the sandbox"

# Not a retry: the config differs (a PATCH since, or another caller's).
echo '{"egress": {"default": "deny"}}' > "$T/other.json"
out=$(ctl attach box --netns "/var/run/netns/$a" --config "$T/other.json" 2>&1) &&
  fail "attached box again with another config"
assert_contains "$out" "sandbox_exists" "an attach with another config"
assert_contains "$out" "already attached to /var/run/netns/$a, the namespace this attach names, but not as this attach asks" \
  "an attach with another config names the namespace"
assert_contains "$out" "PATCH to change its config" "an attach with another config: what to do"
assert_eq "$(ctl get box | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["proxy_config"].get("egress"))')" \
  None "the config after the refused attach"
pass "another config: $out"

out=$(attach_err "/var/run/netns/$b")
assert_contains "$out" "sandbox_exists" "an attach of the name to another namespace"
assert_contains "$out" "already attached, to /var/run/netns/$a" \
  "an attach of the name to another namespace names the one it serves"
assert_contains "$out" "DELETE it first to attach it to another namespace" \
  "an attach of the name to another namespace: what to do"
if ip netns exec "$b" nft list table inet authproxy > /dev/null 2>&1; then
  fail "the namespace the refused attach named got rules"
fi
pass "another namespace: $out"
ctl detach box > /dev/null

# The same namespace is the same namespace, not the same path. One reached by another
# path is the one this attach names; a path that names a new namespace since (`ip netns
# del` and `add` while the daemon holds the old one) is not: told "the namespace this
# attach names (an earlier attach that succeeded?)" a caller took the new namespace,
# which has no rules, for one attached.
ca=$(ctl attach box --netns "/var/run/netns/$a" --config "$T/config.json")
ip netns exec "$a" sleep 30 &
holder=$!
PIDS+=($holder)
wait_for "[ \"\$(stat -L -c %i /proc/$holder/ns/net)\" = \"\$(stat -L -c %i /var/run/netns/$a)\" ]"
out=$(attach_err "/proc/$holder/ns/net")
assert_contains "$out" "already attached to /var/run/netns/$a, the namespace this attach names" \
  "an attach naming the namespace by another path"
pass "the same namespace by another path: $out"
kill "$holder"
ip netns del "$a"
ip netns add "$a"
out=$(attach_err "/var/run/netns/$a")
assert_contains "$out" "sandbox_exists" "an attach to a namespace replaced at the path"
assert_not_contains "$out" "the namespace this attach names" \
  "an attach to a namespace replaced at the path"
assert_contains "$out" "that path names another namespace now" \
  "an attach to a namespace replaced at the path"
if ip netns exec "$a" nft list table inet authproxy > /dev/null 2>&1; then
  fail "the replacing namespace got rules"
fi
pass "a namespace replaced at the path: $out"
ctl detach box > /dev/null

# The longest name and a long path still leave room for what to do (the message is at
# most 511 bytes: with the path given 256 of them, its end was cut off).
long=$(printf 'n%.0s' $(seq 128))
dir=$T/$(printf 'd%.0s' $(seq 100))/$(printf 'e%.0s' $(seq 100))
mkdir -p "$dir"
ln -s "/var/run/netns/$b" "$dir/ns"
ctl attach "$long" --netns "$dir/ns" --config "$T/config.json" > /dev/null
out=$(ctl attach "$long" --netns "$dir/ns" --config "$T/other.json" 2>&1) &&
  fail "attached $long twice"
assert_contains "$out" "or DELETE it first" "a retried attach with a long name and path"
pass "a long name and path: ${#out} bytes"
ctl detach "$long" > /dev/null

# A CA given: the retry names the same one (a CA it did not name is the daemon's
# choice, and the sandbox's is taken).
make_ca "$T/c1" one.example
make_ca "$T/c2" two.example
with_ca() {  # CERT KEY [CONFIG]: an attach body of box to ap-rb-PID with that CA
  "$PY" -c 'import json,sys; print(json.dumps({"netns": sys.argv[1],
    "proxy_config": json.loads(sys.argv[4]),
    "ca": {"certificate": open(sys.argv[2]).read(), "key": open(sys.argv[3]).read()}}))' \
    "/var/run/netns/$b" "$1" "$2" "${3:-{\}}"
}
assert_eq "$(put box "$(with_ca "$T/c1/ca.pem" "$T/c1/ca.key")")" 201 "an attach with a CA"
ca=$(answer_ca)
assert_eq "$(put box "$(with_ca "$T/c1/ca.pem" "$T/c1/ca.key")")" 200 "its retry"
assert_eq "$(answer_ca)" "$ca" "the CA its retry answers"
assert_eq "$(put box "{\"netns\": \"/var/run/netns/$b\", \"proxy_config\": {}}")" 200 \
  "a retry that names no CA"
assert_eq "$(put box "$(with_ca "$T/c2/ca.pem" "$T/c2/ca.key")")" 409 "an attach with another CA"
assert_contains "$(cat "$T/answer")" "but not as this attach asks" "an attach with another CA"
# A CA no attach would take is refused as a fresh attach refuses it: a 409 would send
# its caller to PATCH or DELETE, in vain.
assert_eq "$(put box "$(with_ca "$T/c1/ca.pem" "$T/c2/ca.key")")" 400 \
  "an attach with the CA's certificate and another key"
assert_contains "$(cat "$T/answer")" '"invalid_ca"' \
  "an attach with the CA's certificate and another key"
# So is one whose config differs too: told 409, its caller would DELETE the sandbox,
# and the fresh attach would be refused all the same.
assert_eq "$(put box "$(with_ca "$T/c1/ca.pem" "$T/c2/ca.key" '{"no_proxy": ["x.example"]}')")" \
  400 "an attach with another config and the CA's certificate with another key"
assert_contains "$(cat "$T/answer")" '"invalid_ca"' \
  "an attach with another config and the CA's certificate with another key"
assert_eq "$(ctl ca box)" "$ca" "the CA after the refused attaches"
pass "a CA given: the same is a retry, another is a clash"
ctl detach box > /dev/null

# A config with a secret's template stores the same after the secret's value changed,
# but it is not the same config: an attach resolves it now, with the new value. A
# retry answered 200 would leave the sandbox injecting the old value while its caller
# took it for attached as asked (with the new one), so it is a clash: 409.
cat > "$T/secret.json" <<'EOF2'
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret",
                   "value": "Bearer {KEY}" } ] } ] }
EOF2
echo -n "sk-first-$$" | ctl secret-set KEY > /dev/null
ctl attach box --netns "/var/run/netns/$b" --config "$T/secret.json" > /dev/null
ctl attach box --netns "/var/run/netns/$b" --config "$T/secret.json" > /dev/null ||
  fail "a retry of an attach with a secret's template"
echo -n "sk-second-$$" | ctl secret-set KEY > /dev/null
out=$(ctl attach box --netns "/var/run/netns/$b" --config "$T/secret.json" 2>&1) &&
  fail "a retry answered as attached after its secret changed (the sandbox has the old value)"
assert_contains "$out" "sandbox_exists" "a retry after its secret changed"
pass "a secret changed since: a clash, not a retry ($out)"
# Deleted since: the retry is refused as a fresh attach is, naming the secret.
ctl secret-delete KEY > /dev/null
out=$(ctl attach box --netns "/var/run/netns/$b" --config "$T/secret.json" 2>&1) &&
  fail "a retry answered as attached after its secret was deleted"
assert_contains "$out" "invalid_config" "a retry after its secret was deleted"
assert_contains "$out" "KEY" "a retry after its secret was deleted"
pass "a secret deleted since: the config is refused ($out)"
ctl detach box > /dev/null
