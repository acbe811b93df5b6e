#!/usr/bin/env bash
# A sandbox CA the operator imports with nameConstraints (tests/data/ca/
# name_constrained_ca: DNS:example.com, IP:192.0.2.0/24): a name inside them is
# intercepted as usual; a connection to a name outside them is refused before any
# certificate is minted, audited with reason outside_ca_name_constraints, and the
# daemon's log names the host and the fix. Without the check the client would get a
# leaf and fail on an opaque certificate error. A denied name outside them keeps its
# deny reason.
#
#   ap-nc-PID (named namespace)            host
#   curl --cacert name_constrained_ca ---nft---> authproxy serve (sandbox CA imported
#                                                  with ctl attach --ca-cert/--ca-key)
#                                                -> TLS upstream 127.0.0.1:$tls_PORT
. "$(dirname "$0")/lib.sh"

make_ca "$T/up" api.example.com api.example.net
start_upstream tls "$T/up/server.pem" "$T/up/server.key"
SOCK=$T/control.sock
FIXTURE=$SRC/tests/data/ca/name_constrained_ca
install -m 0600 "$FIXTURE.key" "$T/ca.key"

"$AUTHPROXY" serve --state-dir "$T/state" --control "$SOCK" --log "$T/audit.jsonl" \
  --upstream-ca "$T/up/ca.pem" > "$T/serve.log" 2>&1 &
PIDS+=($!)
wait_for "[ -S '$SOCK' ] && '$AUTHPROXY' ctl --control '$SOCK' health >/dev/null 2>&1"
ctl() { "$AUTHPROXY" ctl --control "$SOCK" "$@"; }

cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com", "api.example.net"],
    "headers": [ { "name": "X-Injected", "type": "plaintext", "value": "yes" } ] } ],
  "egress": { "default": "allow", "deny": ["denied.example.org"] },
  "dns": { "remap": { "api.example.com": "127.0.0.1:$tls_PORT",
                      "api.example.net": "127.0.0.1:$tls_PORT" } } }
EOF
ns=$(make_netns nc)
ctl attach nc --netns "/var/run/netns/$ns" --config "$T/config.json" \
  --ca-cert "$FIXTURE.pem" --ca-key "$T/ca.key" > "$T/sandbox-ca.pem"
assert_eq "$(cat "$T/sandbox-ca.pem")" "$(cat "$FIXTURE.pem")" "the imported CA is the sandbox CA"
assert_contains "$(cat "$T/serve.log")" "authproxy applies them" "import log"

# Inside the constraints: intercepted, injected, verified by curl against the CA.
out=$(ip netns exec "$ns" curl -sS --cacert "$FIXTURE.pem" https://api.example.com/inside)
assert_contains "$out" '"path": "/inside"' "a name inside the constraints"
assert_eq "$(upq tls 'hdr(reqs[-1], "X-Injected")')" '["yes"]' "injected inside the constraints"
pass "a name inside the CA's nameConstraints is intercepted"

# Outside: refused (reset) before a certificate exists; nothing reaches the upstream.
before=$(upq tls 'len(reqs)')
if ip netns exec "$ns" curl -sS --cacert "$FIXTURE.pem" https://api.example.net/outside \
  > "$T/outside.out" 2> "$T/outside.err"; then
  fail "a name outside the constraints was served: $(cat "$T/outside.out")"
fi
assert_not_contains "$(cat "$T/outside.err")" "certificate" "curl saw a certificate"
assert_eq "$(upq tls 'len(reqs)')" "$before" "requests reaching the upstream"
wait_for "grep -q outside_ca_name_constraints '$T/audit.jsonl'"
rec=$(grep outside_ca_name_constraints "$T/audit.jsonl")
assert_contains "$rec" '"api.example.net"' "the audit record names the host"
line=$(grep "refused (outside_ca_name_constraints)" "$T/serve.log")
assert_contains "$line" "sandbox nc: connection to api.example.net refused" "log line"
assert_contains "$line" "not within any permitted dNSName subtree (example.com)" "log: why"
assert_contains "$line" "reissue the CA" "log: the fix"
metric='authproxy_connections_closed_total{reason="outside_ca_name_constraints"} 1'
assert_contains "$(ctl metrics)" "$metric" "metric"
pass "a name outside them is refused, audited and explained"

# A client retrying in a loop does not fill the log: the 1st refusal is logged, then
# the 10th (and the 100th, every 1000th).
for i in $(seq 2 12); do
  ip netns exec "$ns" curl -sS --max-time 5 --cacert "$FIXTURE.pem" \
    https://api.example.net/again > /dev/null 2>&1 && fail "refusal $i was served"
done
metric='authproxy_connections_closed_total{reason="outside_ca_name_constraints"} 12'
wait_for "'$AUTHPROXY' ctl --control '$SOCK' metrics | grep -F '$metric' > /dev/null"
assert_eq "$(grep -c "connection to api.example.net refused" "$T/serve.log")" "2" \
  "log lines for 12 refusals"
assert_contains "$(grep "connection to api.example.net refused" "$T/serve.log" | tail -n 1)" \
  "(10 such refusals in this sandbox)" "the count in the 10th"
pass "repeated refusals are logged the 1st and 10th time"

# A denied name outside them keeps its own reason; it only loses the 403 inside TLS.
if ip netns exec "$ns" curl -sS --cacert "$FIXTURE.pem" https://denied.example.org/ \
  > /dev/null 2>&1; then
  fail "a denied name outside the constraints was answered"
fi
wait_for "grep -q '\"denied.example.org\"' '$T/audit.jsonl'"
assert_contains "$(grep '"denied.example.org"' "$T/audit.jsonl")" '"reason":"egress_deny"' \
  "the deny keeps its reason"
assert_not_contains "$(cat "$T/serve.log")" "connection to denied.example.org refused" \
  "a deny is not reported as a CA problem"
pass "a denied name outside them is reset with its deny reason"
ctl detach nc > /dev/null
