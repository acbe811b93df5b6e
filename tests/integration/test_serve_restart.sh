#!/usr/bin/env bash
# What a daemon restart (SIGTERM, start again: an upgrade) keeps and what it renews.
#
# It keeps the synthetic addresses its
# sandboxes' clients hold. The DNS table is not kept, but a name's address is stable
# (derived from the sandbox name), so a client that cached the address of a name
# before the restart and connects to it with that name (Host, SNI) reaches the name.
# Such connections used to be denied (403 unknown_synthetic_address; a reset, seen as
# a certificate error by a client that does not trust the sandbox CA, for a tunnelled
# name) until the client asked DNS again: up to the TTL, or for good in a program that
# resolves once (an nginx upstream). A name whose address it is not is still denied.
#
# It renews the values of {KEY} templates: resolved when a config is pushed, and again
# when the restarted daemon attaches the sandbox, which then has the values current.
#
#   ap-rd-PID                              host
#   curl --resolve NAME:PORT:198.18.x.y    authproxy serve (restarted) --> fake upstreams
#     --nft--> listener                      api.example.com -> up (HTTP)
#                                            tun.example.com -> tup (TLS, tunnelled)
. "$(dirname "$0")/lib.sh"

make_ca "$T/upca" tun.example.com
start_upstream up
start_upstream tup "$T/upca/server.pem" "$T/upca/server.key"
STATE=$T/state
SOCK=$T/control.sock
serve() {
  "$AUTHPROXY" serve --state-dir "$STATE" --control "$SOCK" --upstream-ca "$T/upca/ca.pem" \
    --drain-timeout 1 >> "$T/serve.log" 2>&1 &
  SERVE_PID=$!
  PIDS+=($SERVE_PID)
  wait_for "[ -S '$SOCK' ] && '$AUTHPROXY' ctl --control '$SOCK' health >/dev/null 2>&1"
}
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Tag", "type": "plaintext", "value": "tag-$$" },
                 { "name": "X-Key", "type": "workspace_secret", "value": "{KEY}" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT",
                      "par.example.com": "127.0.0.1:$up_PORT",
                      "tun.example.com": "127.0.0.1:$tup_PORT" } } }
EOF
serve
echo -n "v1-$$" | "$AUTHPROXY" ctl --control "$SOCK" secret-set KEY
ns=$(make_netns rd)
"$AUTHPROXY" ctl --control "$SOCK" attach box --netns "/var/run/netns/$ns" \
  --config "$T/config.json" > /dev/null

resolve() {  # NAME: the address the sandbox's DNS answers
  ip netns exec "$ns" "$PY" -c "
import socket, sys; sys.path.insert(0, '$TOOLS'); import advlib
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(advlib.dns_query('$1'), ('127.0.0.53', 53))
print(advlib.dns_answer_summary(s.recv(512))[1][0])"
}
API=$(resolve api.example.com)
TUN=$(resolve tun.example.com)
IDLE=$(resolve idle.example.com)
PAR=$(resolve par.example.com)
# A resolver with a search list and ndots (a Kubernetes pod's) asks for the expanded
# name first, which the responder answers: the client keeps that name's address.
EXP=$(resolve api.example.com.ns.svc.cluster.local)
# get NAME PORT:ADDR URL: a client that resolved NAME to ADDR earlier; prints the
# status and the proxy's error header.
get() {
  ip netns exec "$ns" curl -sS -m 5 -o /dev/null -D - --cacert "$T/upca/ca.pem" \
    --resolve "$1:$2" "$3" 2>> "$T/curl.log" |
    awk '/^HTTP\// { s = $2 } tolower($1) == "x-authproxy-error:" { e = $2 }
         END { printf "%s %s", s, e }' | tr -d '\r' || true
}
assert_eq "$(get api.example.com "80:$API" http://api.example.com/before)" "200 " "before"
assert_eq "$(get api.example.com "80:$EXP" http://api.example.com/expanded)" "200 " \
  "the name on its search-expanded address, before"
echo -n "v2-$$" | "$AUTHPROXY" ctl --control "$SOCK" secret-set KEY
assert_eq "$(get api.example.com "80:$API" http://api.example.com/pushed)" "200 " "after a push"

kill -TERM "$SERVE_PID"
wait "$SERVE_PID" || fail "the daemon's stop: exit $?"
serve

assert_eq "$(get api.example.com "80:$API" http://api.example.com/after)" "200 " \
  "plain HTTP to the address cached before the restart"
assert_eq "$(upq up "[hdr(r, 'X-Tag') for r in reqs if r['path'] == '/after']")" \
  "[[\"tag-$$\"]]" "the rule applies to it"
assert_eq "$(upq up "[hdr(r, 'X-Key') for r in reqs if r['path'] != '/expanded']")" "[[\"v1-$$\"], [\"v1-$$\"], [\"v2-$$\"]]" \
  "the secret's value before and after the new value's push, and after the restart"
assert_eq "$(get tun.example.com "443:$TUN" https://tun.example.com/after)" "200 " \
  "tunnelled TLS to the address cached before the restart"
assert_eq "$(upq tup "[r['path'] for r in reqs if r['path'] == '/after']")" '["/after"]' \
  "the tunnelled request reached its upstream"
# Connections opened together, before any has sent its name (a client's pool): each
# reaches the name, whichever names it first.
got=$(ip netns exec "$ns" "$PY" -c "
import socket
socks = [socket.create_connection(('$PAR', 80), timeout=5) for _ in range(3)]
for i, s in enumerate(socks):
    s.sendall(b'GET /par%d HTTP/1.1\\r\\nHost: par.example.com\\r\\nConnection: close\\r\\n\\r\\n' % i)
    print(s.makefile('rb').readline().split()[1].decode(), end=' ')")
assert_eq "$got" "200 200 200 " "connections opened together to a cached address"
assert_eq "$(resolve api.example.com)" "$API" "the name's address after the restart"
pass "clients that cached a synthetic address before a restart reach its name"
pass "a restart resolves the config's templates again"

# Another name on an address (not its own, and no one's since the restart) is denied,
# as is a name on the address of another name.
assert_eq "$(get other.example.com "80:$IDLE" http://other.example.com/x)" \
  "403 unknown_synthetic_address" "another name on a cached address"
assert_eq "$(get tun.example.com "80:$API" http://tun.example.com/x)" \
  "403 host_mismatch" "a name on the address of another"
# The address of the expanded name is not the name's own (README): the name sent cannot
# claim it, and the expanded name it stands for is not known.
assert_eq "$(get api.example.com "80:$EXP" http://api.example.com/expanded-after)" \
  "403 unknown_synthetic_address" "the name on its search-expanded address, after"
# Without a name (TCP that is neither TLS nor HTTP, as SSH) nothing can be decided.
got=$(ip netns exec "$ns" "$PY" -c "
import socket
s = socket.create_connection(('$IDLE', 22), timeout=5)
s.sendall(b'SSH-2.0-OpenSSH_9.2\\r\\n')
try:
    print('closed' if s.recv(100) == b'' else 'answered')
except ConnectionResetError:
    print('closed')")
assert_eq "$got" "closed" "other TCP to a cached address"
pass "a name on an address that is not its own, or none, is still denied"
