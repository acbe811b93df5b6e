#!/usr/bin/env bash
# A namespace is served by one sandbox at a time: attaching it under a second name is a
# 409 netns_attached that names the sandbox serving it, by whatever path the attach
# names it, with every sandbox the daemon serves (the daemon finds it in an index by
# namespace, which grows with the sandboxes: more than its first 64 buckets here),
# after a detach frees it, and after a restart restores the sandboxes.
#
#   ap-na0-PID ... ap-na69-PID   attached as s0 ... s69
#   host                         authproxy serve
. "$(dirname "$0")/lib.sh"

N=70
SOCK=$T/control.sock
start_daemon() {
  "$AUTHPROXY" serve --state-dir "$T/state" --control "$SOCK" >> "$T/serve.log" 2>&1 &
  DAEMON=$!
  PIDS+=($DAEMON)
  wait_for "[ -S '$SOCK' ] && '$AUTHPROXY' ctl --control '$SOCK' health >/dev/null 2>&1"
}
ctl() { "$AUTHPROXY" ctl --control "$SOCK" "$@"; }
echo '{}' > "$T/config.json"
for ((i = 0; i < N; i++)); do echo "netns add ap-na$i-$$"; done | ip -batch -
start_daemon
for ((i = 0; i < N; i++)); do
  ctl attach "s$i" --netns "/var/run/netns/ap-na$i-$$" --config "$T/config.json" > /dev/null
done

# dup_refused I PATH WHAT: attaching PATH as "dup" is refused, naming s$I.
dup_refused() {
  local out
  out=$(ctl attach dup --netns "$2" --config "$T/config.json" 2>&1) &&
    fail "$3: attached $2 a second time, as dup"
  assert_contains "$out" "netns_attached" "$3"
  assert_contains "$out" "is already attached as sandbox s$1;" "$3"
  ! ctl get dup > /dev/null 2>&1 || fail "$3: dup exists after the refused attach"
  [ ! -e "$T/state/sandboxes/dup.sealed" ] || fail "$3: dup's state was written"
}
# Attached before the index grew, when it grew, and after.
for i in 0 1 31 63 64 $((N - 1)); do
  dup_refused "$i" "/var/run/netns/ap-na$i-$$" "s$i's namespace"
done
pass "the namespaces of $N sandboxes are each refused under another name"

ip netns exec "ap-na40-$$" sleep 30 &
holder=$!
PIDS+=($holder)
wait_for "[ \"\$(stat -L -c %i /proc/$holder/ns/net)\" = \"\$(stat -L -c %i /var/run/netns/ap-na40-$$)\" ]"
dup_refused 40 "/proc/$holder/ns/net" "s40's namespace by a process in it"
kill "$holder"
pass "the same namespace by another path is refused"

# A detach frees the namespace (and only it).
ctl detach s5 > /dev/null
ctl attach dup --netns "/var/run/netns/ap-na5-$$" --config "$T/config.json" > /dev/null ||
  fail "the namespace of a detached sandbox cannot be attached again"
ctl detach dup > /dev/null
dup_refused 6 "/var/run/netns/ap-na6-$$" "s6's namespace after s5's detach"
ctl attach s5 --netns "/var/run/netns/ap-na5-$$" --config "$T/config.json" > /dev/null
pass "a detached sandbox's namespace can be attached again"

# The sandboxes a restart restores are found as well.
kill "$DAEMON"
wait "$DAEMON" || fail "the daemon exited $? at SIGTERM"
start_daemon
restored() { ctl health | "$PY" -c 'import json, sys; sys.exit(json.load(sys.stdin)["sandboxes"] != int(sys.argv[1]))' "$N"; }
wait_for restored
for i in 0 5 64 $((N - 1)); do
  dup_refused "$i" "/var/run/netns/ap-na$i-$$" "s$i's namespace after a restart"
done
pass "after a restart, restored namespaces are refused under another name"
