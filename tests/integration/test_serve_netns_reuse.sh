#!/usr/bin/env bash
# A sandbox's namespace dies while the daemon is down, and a new namespace comes to its
# path with the same inode number (the kernel hands out the lowest free one): the
# restarted daemon must not put the old sandbox's config and credentials on it. The
# namespace cookie it recorded tells them apart.
#
#   ap-reuse-PID: attached, daemon stopped, deleted; new namespaces ap-twinN-PID until
#   one gets its inode number, bind-mounted at ap-reuse-PID; daemon restarted.
#
# It runs alone: a namespace another test makes meanwhile could take the freed number.
# ctest: RUN_SERIAL
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
ctl() { "$AUTHPROXY" ctl --control "$SOCK" "$@"; }

cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Sandbox", "type": "plaintext", "value": "reuse" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
ns=$(make_netns reuse)
serve
ctl attach reuse --netns "/var/run/netns/$ns" --config "$T/config.json" > /dev/null
ip netns exec "$ns" curl -sS -o /dev/null http://api.example.com/attached
assert_eq "$(upq up 'hdr(reqs[-1], "X-Sandbox")')" "$(jlist reuse)" "attached and served"
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true

ino=$(stat -L -c %i "/var/run/netns/$ns")
ip netns del "$ns"
# New namespaces, each kept so that it fills a lower free number, until one gets the
# old one's: the kernel frees it once the old namespace's clean-up has run, which can
# take seconds on a loaded machine. Bounded in count and time.
twin=""
deadline=$((SECONDS + 60))
for i in $(seq 1 2000); do
  cand=$(make_netns "twin$i")
  if [ "$(stat -L -c %i "/var/run/netns/$cand")" = "$ino" ]; then twin=$cand; break; fi
  [ $SECONDS -lt $deadline ] || break
  sleep 0.02
done
# Any namespace made anywhere on the host meanwhile (another job's containers, a
# test run beside this one) can take the freed number first: then what this test
# checks cannot be set up, which says nothing of the daemon. It skips, saying so.
if [ -z "$twin" ]; then
  echo "SKIP: no new namespace got inode $ino after $i tries (something else on the" \
    "host took it); the namespace cookie was not exercised" >&2
  exit 77
fi
echo "namespace $twin got inode $ino after $i tries"
touch "/var/run/netns/$ns"
mount --bind "/var/run/netns/$twin" "/var/run/netns/$ns"

serve
out=$(ctl list)
assert_eq "$("$PY" -c 'import json, sys; d = json.load(sys.stdin); print([s["name"] for s in d["sandboxes"]], [l["name"] for l in d["not_attached"]])' <<<"$out")" \
  "[] ['reuse']" "attached and not attached after the restart"
assert_contains "$out" "is now a different namespace" "the reason given"
if ip netns exec "$twin" nft list table inet authproxy >/dev/null 2>&1; then
  fail "the old sandbox's rules were installed in the new namespace"
fi
[ ! -e "$STATE/sandboxes/reuse.sealed" ] || fail "the replaced sandbox's state was kept"
pass "a new namespace with the old inode at the old path is told apart (namespace cookie)"
