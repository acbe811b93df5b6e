#!/usr/bin/env bash
# An orchestrator retries an attach whose answer it did not get (its timeout ran out,
# the connection was cut): the sandbox is attached already, and the 409
# sandbox_exists must let it tell its own earlier attach from a name taken by another
# namespace. Both answered "sandbox box is already attached; PATCH its config or
# DELETE it first": a retry was told to delete what it had just attached, and an
# attach of the name to another namespace to PATCH, which cannot move it. The answer
# now names the namespace the sandbox serves, and what to do in each case.
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
out=$(attach_err "/var/run/netns/$a")
assert_contains "$out" "sandbox_exists" "a retried attach"
assert_contains "$out" "already attached to /var/run/netns/$a, the namespace this attach names" \
  "a retried attach names its namespace"
assert_contains "$out" "GET it for its CA" "a retried attach: what to do"
assert_eq "$(ctl ca box)" "$ca" "the CA after the retry"
pass "retry: $out"

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
out=$(ctl attach "$long" --netns "$dir/ns" --config "$T/config.json" 2>&1) &&
  fail "attached $long twice"
assert_contains "$out" "or DELETE it first" "a retried attach with a long name and path"
pass "a long name and path: ${#out} bytes"
ctl detach "$long" > /dev/null
