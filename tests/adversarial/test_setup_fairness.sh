#!/usr/bin/env bash
# One event loop serves every sandbox, and a TLS handshake with the sandbox costs it
# 1-3 ms of mbedTLS (ECDHE, the leaf's signature). A sandbox that opens hundreds of
# intercepted connections at once had every handshake step run in the turn its
# ClientHellos arrived, while another sandbox's ready request waited behind them all.
# Reads of connections being set up are now limited per sandbox per turn
# (authproxy_setup_reads_yielded_total, which the old daemon did not have). The
# delay itself is a timing (tests carry no timing thresholds): this checks that the
# budget engages, that every handshake of the burst still completes, in order of
# the turns, that a connection put off is put off once per read rather than at every
# poll, and that the other sandbox is served meanwhile.
#
#   ap-a-PID (200 TLS connections, ClientHellos sent at once) --nft--> authproxy serve
#   ap-b-PID (plain HTTP requests)                             --nft--> --> fake upstreams
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

N=200
make_ca "$T/ca" api.example.com
start_upstream tls "$T/ca/server.pem" "$T/ca/server.key"
start_upstream up
NSA=$(make_netns a)
NSB=$(make_netns b)
serve_start --upstream-ca "$T/ca/ca.pem"
metric() { ctl metrics | awk -v m="$1" '$1 == m { print $2 }'; }

cat > "$T/cfg.json" <<EOF2
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Injected", "type": "plaintext", "value": "yes" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$tls_PORT",
                      "plain.example.com": "127.0.0.1:$up_PORT" } } }
EOF2
ctl attach box-a --netns "/var/run/netns/$NSA" --config "$T/cfg.json" > "$T/a-ca.pem"
ctl attach box-b --netns "/var/run/netns/$NSB" --config "$T/cfg.json" > /dev/null
assert_eq "$(metric authproxy_setup_reads_yielded_total)" "0" "setup reads yielded before the burst"

# box-a: N connections, their ClientHellos written at once (non-blocking handshakes
# started together), then every handshake driven to its end and one request each.
cat > "$T/burst.py" <<'PYEOF'
import select, socket, ssl, sys
n, ca = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=ca)
addr = socket.gethostbyname("api.example.com")
conns = []
for i in range(n):
    s = socket.create_connection((addr, 443), timeout=30)
    s.setblocking(False)
    conns.append(ctx.wrap_socket(s, server_hostname="api.example.com",
                                 do_handshake_on_connect=False))
pending = set(range(n))
for _ in range(100000):
    if not pending:
        break
    for i in list(pending):
        try:
            conns[i].do_handshake()
            pending.discard(i)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
    if pending:
        select.select([conns[i] for i in pending], [], [], 1.0)
ok = 0
for c in conns:
    c.setblocking(True)
    c.settimeout(30)
    c.sendall(b"GET /burst HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")
    if c.recv(4096).startswith(b"HTTP/1.1 200"):
        ok += 1
print(len(pending), ok)
PYEOF
ip netns exec "$NSA" "$PY" "$T/burst.py" $N "$T/a-ca.pem" > "$T/burst.out" 2> "$T/burst.log" &
burst=$!
PIDS+=($burst)
# box-b, meanwhile: plain requests, each answered.
out=$(ip netns exec "$NSB" sh -c 'for i in 1 2 3 4 5; do
  curl -sS -m 30 -o /dev/null -w "%{http_code} " http://plain.example.com/b; done')
assert_eq "$out" "200 200 200 200 200 " "box-b's requests during box-a's burst"
wait "$burst" || fail "the burst client failed: $(cat "$T/burst.log")"
assert_eq "$(cat "$T/burst.out")" "0 $N" "box-a's handshakes left unfinished, and its requests answered"
yielded=$(metric authproxy_setup_reads_yielded_total)
[ "$yielded" -gt 0 ] ||
  fail "no setup read was put off to a later turn during a burst of $N handshakes"
# A connection put off waits its turn unread, once per read of its setup (a
# ClientHello, the handshake's second flight): not handed back by every poll to be
# refused again, which cost a burst the square of its size.
[ "$yielded" -le $((5 * N)) ] ||
  fail "$yielded setup reads put off for $N handshakes: waiting connections were refused again and again"
assert_eq "$(upq tls 'len([r for r in reqs if r["path"] == "/burst"])')" "$N" \
  "box-a's requests at the upstream"
pass "a burst of one sandbox's handshakes is set up over turns ($yielded reads put off), and another sandbox is served"
