#!/usr/bin/env bash
# The daemon's state directory fills (a 256 KiB tmpfs and a file that takes its
# room), then turns read-only, and a daemon runs out of file descriptors: every
# change the API refuses says why and what to do, in its answer and in the daemon's
# log, and nothing changes (a refused attach leaves its namespace without network,
# a refused detach leaves the sandbox served). The daemon's log used to say only
# "sandbox box2: detached" of an attach that failed, and nothing of the others; the
# answers named no fix, and a refused detach did not say the sandbox was still
# served. An attach out of descriptors named the fix only when its sockets ran out,
# not when opening the namespace or writing its state did (CI saw the latter).
#
#   ap-ssf{a,b}-PID  --curl-->  authproxy serve --state-dir $T/state (tmpfs, 256 KiB)
#   ap-ssfN-PID ...              authproxy serve (64 file descriptors)
. "$(dirname "$0")/lib.sh"
. "$SRC/tests/adversarial/adv_lib.sh"

start_upstream up
mkdir -m 700 "$T/state"
mount -t tmpfs -o size=256k,mode=700 tmpfs "$T/state"
CLEANUP_HOOKS+=("umount -l '$T/state'")
serve_start
cat > "$T/cfg.json" <<EOF
{ "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
echo '{ "egress": { "default": "deny" } }' > "$T/deny.json"
nsa=$(make_netns ssfa)
nsb=$(make_netns ssfb)
code() { ip netns exec "$1" curl -sS -m 2 -o /dev/null -w '%{http_code}' http://api.example.com/ 2>/dev/null || true; }
ctl attach box --netns "/var/run/netns/$nsa" --config "$T/cfg.json" > /dev/null
assert_eq "$(code "$nsa")" "200" "box before the disk fills"

dd if=/dev/zero of="$T/state/fill" bs=4k 2>/dev/null || true
FULL="No space left on device; free space on the state directory's filesystem, then try again"
out=$(ctl attach box2 --netns "/var/run/netns/$nsb" --config "$T/cfg.json" 2>&1) &&
  fail "attach with a full state directory succeeded"
assert_contains "$out" "sandbox box2 was not attached: cannot write $T/state/sandboxes/box2.sealed: $FULL"
assert_contains "$(cat "$T/serve.log")" "control: sandbox box2 was not attached" "the daemon's log"
assert_eq "$(code "$nsb")" "000" "box2's namespace after the refused attach"
out=$(ctl update box --config "$T/deny.json" 2>&1) && fail "update with a full state directory succeeded"
assert_contains "$out" "sandbox box kept its config: cannot write"
assert_contains "$out" "$FULL"
assert_eq "$(code "$nsa")" "200" "box after the refused update (its old config)"
out=$(echo -n v | ctl secret-set K 2>&1) && fail "secret-set with a full state directory succeeded"
assert_contains "$out" "secret K was not stored: cannot write $T/state/secrets.sealed: $FULL"
pass "a full state directory: attach, update, secret-set refused, each naming the fix"

rm "$T/state/fill"
mount -o remount,ro "$T/state"
out=$(ctl detach box 2>&1) && fail "detach with a read-only state directory succeeded"
assert_contains "$out" "sandbox box was not detached (it is served as before): cannot remove"
assert_contains "$out" "Read-only file system; make the state directory's filesystem writable"
assert_contains "$(cat "$T/serve.log")" "control: sandbox box was not detached" "the daemon's log"
assert_eq "$(code "$nsa")" "200" "box after the refused detach"
mount -o remount,rw "$T/state"
ctl detach box > /dev/null
assert_eq "$(code "$nsa")" "000" "box once detached"
pass "a read-only state directory: detach refused, saying the sandbox is still served"

# A daemon with 64 descriptors: attaches take some each until one fails.
"$AUTHPROXY" ctl --control "$T/c.sock" health > /dev/null
prlimit --nofile=64:64 "$AUTHPROXY" serve --state-dir "$T/state2" --control "$T/c2.sock" \
  >> "$T/serve2.log" 2>&1 &
PIDS+=($!)
SERVE2=$!
wait_for "'$AUTHPROXY' ctl --control '$T/c2.sock' health >/dev/null 2>&1"
out=
for i in $(seq 20); do
  ns=$(make_netns "ssf$i")
  if ! out=$("$AUTHPROXY" ctl --control "$T/c2.sock" attach "b$i" --netns "/var/run/netns/$ns" \
    --config "$T/cfg.json" 2>&1 > /dev/null); then
    break
  fi
  out=
done
[ -n "$out" ] || fail "20 sandboxes attached to a daemon with 64 file descriptors"
assert_contains "$out" "Too many open files"
assert_contains "$out" "; the daemon has as many file descriptors open as it may: raise its limit (LimitNOFILE="
# Which step runs out first (the namespace's sockets, the sealed state file) depends
# on what the daemon holds at that moment; each must name the fix.
assert_contains "$(grep 'control: ' "$T/serve2.log")" "; the daemon has as many file descriptors open as it may" "the daemon's log"
pass "an attach out of file descriptors says to raise LimitNOFILE (attach $i)"

# Every step of an attach that opens a descriptor (its sockets, its nftables
# netlink socket, the write of its sealed state) names the same fix: with the limit
# raised one descriptor at a time above what the daemon holds, each attach runs out
# one step later than the one before, until one succeeds. (Only the soft limit
# moves: the hard one stays 64.)
for j in $(seq "$((i - 1))"); do
  "$AUTHPROXY" ctl --control "$T/c2.sock" detach "b$j" > /dev/null
done
# limit_free N: let the daemon open N descriptors more (the kernel hands out the
# lowest free numbers, and detaches leave holes below the highest).
limit_free() {
  local n=0 lim
  lim=$1
  while [ "$lim" -gt 0 ]; do
    [ -e "/proc/$SERVE2/fd/$n" ] || lim=$((lim - 1))
    n=$((n + 1))
  done
  prlimit --pid "$SERVE2" --nofile="$n:64"
}
steps=0
for extra in $(seq 40); do
  limit_free "$extra"
  ns=$(make_netns "ssg$extra")
  if out=$("$AUTHPROXY" ctl --control "$T/c2.sock" attach "c$extra" --netns "/var/run/netns/$ns" \
    --config "$T/cfg.json" 2>&1 > /dev/null); then
    break
  fi
  echo "limit +$extra: $out"
  assert_contains "$out" "Too many open files"
  assert_contains "$out" "; the daemon has as many file descriptors open as it may"
  steps=$((steps + 1))
done
[ "$steps" -ge 2 ] || fail "only $steps attach(es) refused on the way up to the limit that serves one"
pass "each step of an attach that runs out of descriptors names the fix ($steps steps)"

