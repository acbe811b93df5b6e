#!/usr/bin/env bash
# A detach locks the sandbox's namespace down (the drop-everything table replaces the
# redirects) even when the path it was attached by no longer names it: the runtime
# removed the path first while a process still holds the namespace, or removed it and
# made a new namespace of the same name. The namespace is the one the sandbox's
# listeners live in (SIOCGSKNS); the daemon used to open the path, find it gone or
# naming another namespace, and leave the redirects in place.
#
#   ap-g-PID (path removed; held by sleep)  <--listeners--  authproxy serve
#   ap-h-PID (path re-created: a new namespace of the same name)
. "$(dirname "$0")/lib.sh"
. "$SRC/tests/adversarial/adv_lib.sh"

start_upstream up
serve_start
cat > "$T/cfg.json" <<EOF2
{ "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF2

# hold NS: a process inside NS that keeps it alive once its path is gone; sets HOLD.
hold() {
  ip netns exec "$1" sleep 300 &
  HOLD=$!
  PIDS+=($HOLD)
  wait_for "[ \"\$(readlink /proc/$HOLD/ns/net)\" != \"\$(readlink /proc/self/ns/net)\" ]" 10
}
# table PID: the namespace's authproxy table, through the process holding it.
table() {
  nsenter --net="/proc/$1/ns/net" nft list table inet authproxy 2>&1 || true
}

# ---- the path is gone ----
NSG=$(make_netns g)
ctl attach box-g --netns "/var/run/netns/$NSG" --config "$T/cfg.json" >/dev/null
hold "$NSG"
G=$HOLD
assert_contains "$(table $G)" "redirect" "box-g's redirects while attached"
ip netns del "$NSG"
ctl detach box-g > "$T/detach-g.log" 2>&1 || fail "detach box-g: $(cat "$T/detach-g.log")"
rules=$(table $G)
assert_contains "$rules" "chain filter_output" "lockdown table after a detach whose path was gone"
assert_not_contains "$rules" "redirect" "redirects left after a detach whose path was gone"
pass "a detach locks the namespace down when its path is gone"

# ---- the path names a new namespace ----
NSH=$(make_netns h)
ctl attach box-h --netns "/var/run/netns/$NSH" --config "$T/cfg.json" >/dev/null
hold "$NSH"
H=$HOLD
ip netns del "$NSH"
ip netns add "$NSH"
ctl detach box-h > "$T/detach-h.log" 2>&1 || fail "detach box-h: $(cat "$T/detach-h.log")"
rules=$(table $H)
assert_contains "$rules" "chain filter_output" "lockdown table of the namespace attached"
assert_not_contains "$rules" "redirect" "redirects left in the namespace attached"
assert_not_contains "$(ip netns exec "$NSH" nft list tables 2>&1)" "authproxy" \
  "the new namespace of the same name touched"
pass "a detach locks down the namespace attached, not a new one at its path"
