#!/usr/bin/env bash
# Upstream TLS sessions are one sandbox's (invariant I8, and tenants unlinkable): the
# proxy resumes its TLS sessions with an upstream only for connections of the sandbox
# that made them. The daemon's session cache used to be keyed by "name:port" alone:
# sandbox B's first connection to a name resumed the session sandbox A's had made,
# which lets the upstream link the two by session ticket or ID; and one sandbox
# visiting many destinations pushed every other sandbox's sessions out of the cache
# (256 entries for the whole daemon). Now a sandbox holds at most 16 entries, replacing
# its own least recently used; its entries are freed when it detaches, and a sandbox
# attached again under the same name starts with none.
#
#   ap-a-PID   (box-a) --nft--> authproxy serve --upstream-ca  --TLS--> fake upstream
#   ap-b-PID   (box-b) --nft-->   one daemon, one session cache         127.0.0.1, logs
#   ap-a2-PID  (box-a again)                                            "resumed" per
#                                                                       TLS connection
# The sandboxes connect to api.example.com on many ports: dns.remap sends every port to
# the one upstream, and each port is its own cache entry ("name:port").
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

make_ca "$T/ca" api.example.com
start_upstream tls "$T/ca/server.pem" "$T/ca/server.key"
NSA=$(make_netns a)
NSB=$(make_netns b)
NSA2=$(make_netns a2)

serve_start --upstream-ca "$T/ca/ca.pem" -v

# Intercepted (a header rule), so that the proxy runs its own TLS client upstream.
cat > "$T/cfg.json" <<EOF
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Seen", "type": "plaintext", "value": "1" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$tls_PORT" } } }
EOF
ctl attach box-a --netns "/var/run/netns/$NSA" --config "$T/cfg.json" > "$T/ca-a.pem"
ctl attach box-b --netns "/var/run/netns/$NSB" --config "$T/cfg.json" > "$T/ca-b.pem"

# client.py CA PORT...: one intercepted HTTPS request per port, one after the other,
# each on a new connection that the upstream closes (/close), so that none is served
# from the upstream pool and each makes its own TLS handshake upstream.
cat > "$T/client.py" <<'PYEOF'
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
for port in sys.argv[2:]:
    with socket.create_connection(("api.example.com", int(port)), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="api.example.com") as t:
            t.sendall(b"GET /close HTTP/1.1\r\nHost: api.example.com:%s\r\n\r\n" % port.encode())
            data = b""
            while True:
                k = t.recv(65536)
                if not k:
                    break
                data += k
            if b"until close" not in data:
                sys.exit("port %s: unexpected answer %r" % (port, data[:200]))
PYEOF
# connect NS CAFILE PORT...: runs client.py in NS; prints the upstream's "resumed" of
# each TLS connection it made, in order, as a JSON list.
connect() {
  local ns=$1 ca=$2
  shift 2
  : > "$T/tls.jsonl"
  ip netns exec "$ns" "$PY" "$T/client.py" "$ca" "$@" >> "$T/client.log" 2>&1 ||
    fail "client in $ns: $(tail -n 3 "$T/client.log")"
  upq tls '[e["resumed"] for e in events if e["event"] == "conn"]'
}
repeat() { "$PY" -c 'import json, sys; print(json.dumps([sys.argv[1] == "true"] * int(sys.argv[2])))' "$@"; }

# ---- one sandbox's session is not another's ----------------------------------------
assert_eq "$(connect "$NSA" "$T/ca-a.pem" 443 443)" "[false, true]" \
  "box-a: a second connection resumes the first's session"
assert_eq "$(connect "$NSB" "$T/ca-b.pem" 443)" "[false]" \
  "box-b's first connection resumed a session (box-a's)"
assert_eq "$(connect "$NSB" "$T/ca-b.pem" 443)" "[true]" "box-b resumes its own session"
pass "a sandbox resumes only its own upstream sessions"

# ---- a sandbox holds at most 16, and replaces its own least recently used ---------
# box-a holds 443; 15 more make 16, all of which resume (443 first: it is then the
# least recently used); one more (10016) replaces 443, which then needs a full
# handshake again.
ports=$(seq 10001 10015)
# shellcheck disable=SC2086
assert_eq "$(connect "$NSA" "$T/ca-a.pem" $ports)" "$(repeat false 15)" "box-a: 15 new ports"
# shellcheck disable=SC2086
assert_eq "$(connect "$NSA" "$T/ca-a.pem" 443 $ports)" "$(repeat true 16)" \
  "box-a: its 16 sessions resume"
assert_eq "$(connect "$NSA" "$T/ca-a.pem" 10016 443)" "[false, false]" \
  "box-a: a 17th session replaces its least recently used one"
pass "a sandbox keeps at most 16 upstream sessions, replacing its own"

# ---- many destinations in one sandbox do not evict another's sessions ---------------
# 300 more ports, past the 256 entries of the whole cache.
# shellcheck disable=SC2086
assert_eq "$(connect "$NSA" "$T/ca-a.pem" $(seq 11001 11300))" "$(repeat false 300)" \
  "box-a: 300 new ports"
assert_eq "$(connect "$NSB" "$T/ca-b.pem" 443)" "[true]" \
  "box-b's session, after box-a visited 300 destinations"
pass "one sandbox visiting many destinations leaves the others' sessions alone"

# ---- detach frees a sandbox's sessions; the same name attached again has none -------
ctl detach box-a > /dev/null
wait_for "grep -q 'sandbox box-a: 16 upstream TLS session(s) dropped' '$T/serve.log'" 10
ctl attach box-a --netns "/var/run/netns/$NSA2" --config "$T/cfg.json" > "$T/ca-a2.pem"
assert_eq "$(connect "$NSA2" "$T/ca-a2.pem" 443 443)" "[false, true]" \
  "box-a attached again: a first connection that resumed the old box-a's session"
assert_eq "$(connect "$NSB" "$T/ca-b.pem" 443)" "[true]" "box-b after box-a's detach"
pass "a detached sandbox's sessions are freed, not inherited by its name"
