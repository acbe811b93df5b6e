#!/usr/bin/env bash
# The upstream pool: a keep-alive upstream connection of the HTTP engine outlives the
# sandbox connection that opened it and carries the next request to the same
# destination (one TLS handshake instead of many), never for another name, never for
# a tunnel, until it idles out or the upstream closes it; a request safe to repeat is
# sent again when a reused connection turns out dead, any other is answered 502.
#
#   jail netns                          host netns
#   +------------------------------+    +------------------------------------------+
#   | curl, one process per request| -> | authproxy: HTTP engine -> pool (per      |
#   | (a new connection each)      |    |   sandbox, name, port) -> fake upstreams |
#   +------------------------------+    +------------------------------------------+
. "$(dirname "$0")/lib.sh"

make_ca "$T/ca" api.example.com other.example.com tunnel.example.com
start_upstream tls "$T/ca/server.pem" "$T/ca/server.key"
start_upstream plain

cat > "$T/config.json" <<EOF
{
  "rules": [
    { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com", "other.example.com", "plain.example.com"],
      "headers": [ { "name": "X-Seen", "type": "plaintext", "value": "1" } ] }
  ],
  "dns": { "remap": {
    "api.example.com": "127.0.0.1:$tls_PORT",
    "other.example.com": "127.0.0.1:$tls_PORT",
    "tunnel.example.com": "127.0.0.1:$tls_PORT",
    "plain.example.com": "127.0.0.1:$plain_PORT"
  } }
}
EOF
cp "$T/ca/ca.pem" "$T/upstream-ca.pem"
chmod 644 "$T/upstream-ca.pem"

run() {
  jail --config "$T/config.json" --upstream-ca "$T/ca/ca.pem" --user nobody -- "$@"
}
conns() { upq "$1" 'len([e for e in events if e["event"] == "conn"])'; }
code() { echo "curl -sS -o /dev/null -w '%{http_code}\n' $*"; }

# Three requests, three sandbox connections, one upstream TLS connection.
: > "$T/tls.jsonl"
out=$(run sh -c "$(code https://api.example.com/a); $(code https://api.example.com/b);
                 $(code https://api.example.com/c)")
assert_eq "$(echo $out)" "200 200 200" "intercepted requests"
assert_eq "$(conns tls)" "1" "upstream TLS connections for three sandbox connections"
assert_eq "$(upq tls 'len(set(r["conn"] for r in reqs))')" "1" "requests on one connection"
assert_eq "$(upq tls '[hdr(r, "X-Seen") for r in reqs]')" '[["1"], ["1"], ["1"]]' \
  "header injected on every reused request"
pass "intercepted HTTPS: one upstream connection for three sandbox connections"

: > "$T/plain.jsonl"
out=$(run sh -c "$(code http://plain.example.com/a); $(code http://plain.example.com/b)")
assert_eq "$(echo $out)" "200 200" "plain requests"
assert_eq "$(conns plain)" "1" "upstream connections for plain HTTP"
pass "plain HTTP: the upstream connection is reused"

# A client that sends Connection: close (Python's urllib does) ends its own connection
# after the response; the upstream connection is the proxy's and goes to the pool.
: > "$T/tls.jsonl"
out=$(run sh -c "$(code -H "'Connection: close'" https://api.example.com/c1);
                 $(code -H "'Connection: close'" https://api.example.com/c2)")
assert_eq "$(echo $out)" "200 200" "requests with Connection: close"
assert_eq "$(conns tls)" "1" "upstream connections for two closing sandbox connections"
assert_eq "$(upq tls '[hdr(r, "Connection") for r in reqs]')" '[[], []]' \
  "Connection fields upstream"
pass "a sandbox's Connection: close ends its own connection, not the pooled upstream"

# A connection verified for one name never carries another name's request, even to
# the same address.
: > "$T/tls.jsonl"
out=$(run sh -c "$(code https://api.example.com/x); $(code https://other.example.com/y);
                 $(code https://api.example.com/z)")
assert_eq "$(echo $out)" "200 200 200" "requests to two names"
assert_eq "$(conns tls)" "2" "upstream connections for two names"
assert_eq "$(upq tls '[[e["sni"] for e in events if e["event"] == "conn" and e["conn"] == r["conn"]][0] + r["path"] for r in reqs]')" \
  '["api.example.com/x", "other.example.com/y", "api.example.com/z"]' \
  "each request on a connection verified for its own name"
pass "names are never shared"

# Tunnels carry the sandbox's own TLS: nothing to pool.
: > "$T/tls.jsonl"
out=$(run sh -c "$(code --cacert $T/upstream-ca.pem https://tunnel.example.com/t1);
                 $(code --cacert $T/upstream-ca.pem https://tunnel.example.com/t2)")
assert_eq "$(echo $out)" "200 200" "tunnelled requests"
assert_eq "$(conns tls)" "2" "upstream connections for two tunnels"
pass "tunnels are not pooled"

# A pooled connection idle past the pool's limit (4 s) is closed, not reused.
: > "$T/tls.jsonl"
out=$(run sh -c "$(code https://api.example.com/early); sleep 5;
                 $(code https://api.example.com/late)")
assert_eq "$(echo $out)" "200 200" "requests around the idle limit"
assert_eq "$(conns tls)" "2" "upstream connections across the idle limit"
assert_eq "$(upq tls '[e["event"] for e in events if e["event"] in ("conn", "conn_end")][:3]')" \
  '["conn", "conn_end", "conn"]' "the idle connection closed before the next one opened"
pass "idle pooled connections expire"

# The upstream closes a pooled connection (its keep-alive timeout): the pool notices,
# and the next request, a POST that could not be repeated, gets a fresh connection.
: > "$T/tls.jsonl"
out=$(run sh -c "$(code 'https://api.example.com/ka-close?after=0.2'); sleep 1;
                 $(code -X POST -d payload https://api.example.com/after-close)")
assert_eq "$(echo $out)" "200 200" "a request after the upstream closed its pooled connection"
assert_eq "$(conns tls)" "2" "upstream connections"
pass "a connection the upstream closes leaves the pool"

# A reused connection that dies on the next request: GET is sent again on a new
# connection; POST with a body is not (RFC 9110 9.2.2) and is answered 502.
: > "$T/tls.jsonl"
out=$(run sh -c "$(code https://api.example.com/drop-next); $(code https://api.example.com/again)")
assert_eq "$(echo $out)" "200 200" "GET on a reused connection that dies"
assert_eq "$(upq tls '(lambda d, a: len(a) == 2 and a[0] == d and a[1] != d)([r["conn"] for r in reqs if r["path"] == "/drop-next"][0], [r["conn"] for r in reqs if r["path"] == "/again"])')" \
  "True" "the GET reached the upstream on the dead connection, then on a new one"
pass "a GET on a dead reused connection is retried once on a new connection"

: > "$T/tls.jsonl"
out=$(run sh -c "$(code https://api.example.com/drop-next);
                 $(code -X POST -d payload https://api.example.com/post)")
assert_eq "$(echo $out)" "200 502" "POST on a reused connection that dies"
assert_eq "$(upq tls 'len([r for r in reqs if r["path"] == "/post"])')" "1" \
  "the POST reached the upstream once"
pass "a POST on a dead reused connection is not sent again"

# A sandbox connection quiet for longer than 2 s gives its upstream back to the pool;
# its next request takes it back from there.
: > "$T/tls.jsonl"
cat > "$T/ka.py" <<'EOF'
import http.client, ssl, time
c = http.client.HTTPSConnection("api.example.com", context=ssl.create_default_context())
out = []
for path, pause in (("/k1", 2.6), ("/k2", 0)):
    c.request("GET", path)
    r = c.getresponse()
    r.read()
    out.append(str(r.status))
    time.sleep(pause)
print(" ".join(out))
EOF
out=$(run "$PY" "$T/ka.py")
assert_eq "$out" "200 200" "a keep-alive sandbox connection with a pause"
assert_eq "$(conns tls)" "1" "upstream connections (released to the pool, then reused)"
pass "an idle sandbox connection's upstream goes through the pool"

# Pooled upstreams count as connections but give way to the sandbox's own: under
# --max-conns 1 the second sandbox connection is accepted and the pooled one closed.
: > "$T/tls.jsonl"
out=$(jail --config "$T/config.json" --upstream-ca "$T/ca/ca.pem" --user nobody \
        --max-conns 1 -- sh -c "$(code https://api.example.com/m1); $(code https://api.example.com/m2)")
assert_eq "$(echo $out)" "200 200" "two sandbox connections one after the other under --max-conns 1"
pass "a pooled upstream gives way to a sandbox connection at the connection cap"

# Pooled connections do not hold up the jail's exit (they are closed at once).
start=$(date +%s%N)
run curl -sS -o /dev/null https://api.example.com/exit
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$elapsed_ms" -lt 3500 ] || fail "jail took ${elapsed_ms} ms to exit with a pooled connection"
pass "the pool is closed when the sandbox detaches (${elapsed_ms} ms)"
