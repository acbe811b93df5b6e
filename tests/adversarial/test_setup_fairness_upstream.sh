#!/usr/bin/env bash
# The upstream side of an intercepted connection has its own TLS handshake, made
# when the sandbox's first request is read (after the sandbox's handshake): each step
# costs the loop 1-3 ms of mbedTLS (the upstream's chain, ECDHE), like a sandbox-side
# one. dcd882e left these reads out of the per-sandbox setup budget, on the grounds
# that each upstream handshake follows a sandbox-side connection that passed it; but
# the sandbox-side handshakes are over by then, and a sandbox that sends the requests
# of N set-up connections at once had all N upstream handshake steps run in one turn
# of the loop (measured with 1,000: 526 in one turn, which held the loop 0.2-1.3 s
# while another sandbox's request waited 0.5-1.7 s). A relay in front of the
# upstream holds the upstream's first flights until every connection has one, then
# sends them together: their reads must be put off to later turns, in the sandbox's
# queue (authproxy_setup_reads_yielded_total), and every request still answered.
#
#   ap-a-PID (N TLS connections, then N requests at once) --nft--> authproxy serve
#     --> relay (holds upstream -> proxy bytes until all N have some) --> TLS upstream
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

N=100
make_ca "$T/ca" api.example.com
start_upstream tls "$T/ca/server.pem" "$T/ca/server.key"
NSA=$(make_netns a)

cat > "$T/relay.py" <<'PYEOF'
import asyncio, sys
upstream, n, port_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
held, flushed = {}, asyncio.Event()
async def pipe(r, w, key):
    while True:
        data = await r.read(65536)
        if not data:
            break
        if key is not None and not flushed.is_set():
            held.setdefault(key, []).append(data)
            if len(held) >= n:
                for k, chunks in held.items():
                    k.write(b"".join(chunks))
                flushed.set()
            continue
        w.write(data)
    await flushed.wait() if key is not None else None
    w.close()
async def handle(cr, cw):
    ur, uw = await asyncio.open_connection("127.0.0.1", upstream)
    await asyncio.gather(pipe(cr, uw, None), pipe(ur, cw, cw))
async def main():
    srv = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    open(port_file, "w").write(str(srv.sockets[0].getsockname()[1]))
    try:
        await asyncio.wait_for(flushed.wait(), 60)
    except asyncio.TimeoutError:
        for k, chunks in held.items():
            k.write(b"".join(chunks))
        flushed.set()
    await asyncio.sleep(3600)
asyncio.run(main())
PYEOF
"$PY" "$T/relay.py" "$tls_PORT" $N "$T/relay.port" 2> "$T/relay.log" &
PIDS+=($!)
wait_for "[ -s '$T/relay.port' ]"
serve_start --upstream-ca "$T/ca/ca.pem"
metric() { ctl metrics | awk -v m="$1" '$1 == m { print $2 }'; }

cat > "$T/cfg.json" <<EOF2
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Injected", "type": "plaintext", "value": "yes" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$(cat "$T/relay.port")" } } }
EOF2
ctl attach box-a --netns "/var/run/netns/$NSA" --config "$T/cfg.json" > "$T/a-ca.pem"

# N connections set up one after another (nothing to put off), then, once the
# daemon's count says so, their requests written at once.
cat > "$T/burst.py" <<'PYEOF'
import os, socket, ssl, sys, time
n, ca, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
addr = socket.gethostbyname("api.example.com")
conns = [ctx.wrap_socket(socket.create_connection((addr, 443), timeout=60),
                         server_hostname="api.example.com") for _ in range(n)]
open(go + ".ready", "w").close()
for _ in range(6000):
    if os.path.exists(go):
        break
    time.sleep(0.01)
for c in conns:
    c.sendall(b"GET /burst HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")
ok = sum(1 for c in conns if c.recv(4096).startswith(b"HTTP/1.1 200"))
print(ok)
PYEOF
ip netns exec "$NSA" "$PY" "$T/burst.py" $N "$T/a-ca.pem" "$T/go" > "$T/burst.out" 2> "$T/burst.log" &
burst=$!
PIDS+=($burst)
wait_for "[ -e '$T/go.ready' ]" 60
before=$(metric authproxy_setup_reads_yielded_total)
: > "$T/go"
wait "$burst" || fail "the burst client failed: $(cat "$T/burst.log")"
assert_eq "$(cat "$T/burst.out")" "$N" "requests answered"
after=$(metric authproxy_setup_reads_yielded_total)
[ "$after" -gt "$before" ] ||
  fail "$N upstream handshakes' first flights, ready at once, were all read in one turn (setup reads put off: $before before the requests, $after after)"
assert_eq "$(upq tls 'len([r for r in reqs if r["path"] == "/burst"])')" "$N" \
  "requests at the upstream"
pass "upstream handshakes ready at once are read over turns ($((after - before)) reads put off), and every request is answered"
