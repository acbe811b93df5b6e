#!/usr/bin/env bash
# What sandboxes make the daemon hold besides their connections, bounded for all
# sandboxes together (invariant I8), and the connections' share giving way.
#
# 1. DNS over TCP: each sandbox's responder keeps up to 64 TCP clients, and nothing
#    bounded them across sandboxes: four sandboxes holding theirs took every
#    descriptor of a daemon limited to 256, and the control socket went unanswered.
#    All sandboxes' clients now hold at most a sixteenth of the limit; past it a new
#    client takes the place of the one idle the longest, whichever sandbox's it is.
# 2. The connections' share (three quarters of the limit): a connection past it used
#    to be refused while other sandboxes held idle pooled upstreams. The oldest of
#    those now gives way.
#
#   ap-d1..d4-PID (64 DNS/TCP clients each) --nft--> authproxy serve (RLIMIT_NOFILE 256)
#   ap-b-PID (DNS/TCP; 16 pooled upstreams) --nft-->          |        --> fake upstream
#   ap-a-PID, ap-c-PID (connections, held)  --nft-->          |
#   ctl list, ctl metrics                   --control.sock--> +
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

start_upstream up
serve_start --wrap prlimit --nofile=256:256 --  # prlimit execs the daemon
metric() {
  ctl metrics | awk -v m="$1" '$1 == m { print $2 }'
}

cat > "$T/cfg.json" <<EOF2
{ "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT",
                      "api2.example.com": "127.0.0.1:$up_PORT" } } }
EOF2
NSB=$(make_netns b)
ctl attach box-b --netns "/var/run/netns/$NSB" --config "$T/cfg.json" >/dev/null

assert_eq "$(metric 'authproxy_fd_budget_max{use="dns_tcp"}')" "16" "DNS over TCP budget for a limit of 256"
assert_eq "$(metric 'authproxy_fd_budget_max{use="callback"}')" "16" "callback budget for a limit of 256"

# ---- 1. DNS over TCP ----
for i in 1 2 3 4; do
  ns=$(make_netns "d$i")
  ctl attach "box-d$i" --netns "/var/run/netns/$ns" --config "$T/cfg.json" >/dev/null
  flood "$ns" "d$i" dns 64
  DNS_FLOODS+=("$FLOOD_PID")
  # Every client's query is answered: a new one closes the idlest to make room.
  assert_eq "$(head -1 "$T/flood-d$i.log")" "64" "box-d$i's DNS over TCP queries answered"
done
ctl list > "$T/list.json" 2>&1 || fail "the control socket while four sandboxes hold DNS clients: $(cat "$T/list.json")"
assert_contains "$(cat "$T/list.json")" '"box-d4"' "ctl list while four sandboxes hold DNS clients"
assert_eq "$(metric 'authproxy_fd_budget_used{use="dns_tcp"}')" "16" "DNS over TCP descriptors held"
# Another sandbox, holding none, still gets its answer over TCP.
flood "$NSB" b-dns dns 1
assert_eq "$(head -1 "$T/flood-b-dns.log")" "1" "box-b's DNS over TCP query while the budget is full"
kill "$FLOOD_PID"
fds=$(ls "/proc/$serve_pid/fd" | wc -l)
[ "$fds" -lt 200 ] || fail "the daemon holds $fds of its 256 descriptors"
assert_contains "$(cat "$T/serve.log")" "all sandboxes' TCP clients hold the 16 file descriptors" \
  "the full budget is logged"
pass "256 DNS over TCP clients from four sandboxes hold 16 descriptors; the daemon answers ($fds in use)"

kill "${DNS_FLOODS[@]}"
for i in 1 2 3 4; do
  ctl detach "box-d$i" >/dev/null
done
wait_for "[ \"\$(ctl metrics | awk '\$1 == \"authproxy_fd_budget_used{use=\\\"dns_tcp\\\"}\" { print \$2 }')\" = 0 ]" 30

# ---- 2. pooled upstreams give way at the connections' share ----
# box-a holds 40 connections, box-b leaves 16 upstreams in the pool (8 per name, the
# per-destination cap), then box-c floods. 3/4 of 256 less 3 sandboxes' sockets leaves
# room for 87 connections: box-c gets 31, then each of box-b's pooled upstreams gives
# way to one more (the old daemon refused them), then box-c is refused.
NSA=$(make_netns a)
NSC=$(make_netns c)
ctl attach box-a --netns "/var/run/netns/$NSA" --config "$T/cfg.json" >/dev/null
ctl attach box-c --netns "/var/run/netns/$NSC" --config "$T/cfg.json" >/dev/null
flood "$NSA" a conns 40
ip netns exec "$NSB" "$PY" - <<'PYEOF' || fail "box-b's requests"
import http.client
conns = [http.client.HTTPConnection(h, 80, timeout=10)
         for h in ["api.example.com"] * 8 + ["api2.example.com"] * 8]
for c in conns:
    c.request("GET", "/pool")
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
for c in conns:
    c.close()
PYEOF
# Pooled upstreams idle out after 4 s: box-c floods at once.
wait_for "[ \"\$(ctl metrics | awk '\$1 == \"authproxy_upstream_pooled\" { print \$2 }')\" = 16 ]" 2
flood "$NSC" c conns 100
evicted=$(metric authproxy_upstream_pool_evicted_total)
[ "${evicted:-0}" -ge 1 ] || fail "box-c's connections past the share evicted no pooled upstream (evicted: '${evicted}')"
ctl list > "$T/list.json" 2>&1 || fail "the control socket at the connections' share: $(cat "$T/list.json")"
assert_contains "$(cat "$T/serve.log")" "all sandboxes'" "the refusals past the share are logged"
pass "at the connections' share, $evicted of box-b's pooled upstreams gave way to box-c's connections"
