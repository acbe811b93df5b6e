#!/usr/bin/env bash
# The daemon's /metrics: valid Prometheus text (each family's HELP and TYPE once,
# before its samples; no series twice), values that match a known amount of traffic,
# open connections back at 0 when they have closed (idle pooled upstreams used to count),
# and counters that never go down: detaching a sandbox used to take its DNS and
# certificate counts out of the totals, which Prometheus reads as a counter reset.
#
#   ap-m-PID (named namespace)       host
#   curl ---nft---> listener  ====>  authproxy serve --state-dir $T/state
#                                      control API: $T/control.sock
#                                      fake upstreams 127.0.0.1: up (HTTP), tls (HTTPS)
. "$(dirname "$0")/lib.sh"

make_ca "$T/pki" api.example.com
start_upstream up
start_upstream tls "$T/pki/server.pem" "$T/pki/server.key"
STATE=$T/state
SOCK=$T/control.sock
"$AUTHPROXY" serve --state-dir "$STATE" --control "$SOCK" --upstream-ca "$T/pki/ca.pem" \
  --drain-timeout 1 --log "$T/audit.jsonl" >> "$T/serve.log" 2>&1 &
PIDS+=($!)
ctl() { "$AUTHPROXY" ctl --control "$SOCK" "$@"; }
wait_for "[ -S '$SOCK' ] && ctl health >/dev/null 2>&1"

cat > "$T/cfg.json" <<EOF
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com", "plain.example.com",
                                            "dead.example.com"],
    "headers": [ { "name": "Authorization", "type": "plaintext", "value": "Bearer x" },
                 { "name": "X-Team", "type": "plaintext", "value": "agents" } ] } ],
  "no_proxy": ["np.example.com"],
  "egress": { "deny": ["evil.example.com",
                      { "hosts": ["plain.example.com"], "methods": ["DELETE"] }] },
  "dns": { "remap": { "api.example.com": "127.0.0.1:$tls_PORT",
                      "plain.example.com": "127.0.0.1:$up_PORT",
                      "evil.example.com": "127.0.0.1:$up_PORT",
                      "dead.example.com": "127.0.0.1:1",
                      "np.example.com": "127.0.0.1:$up_PORT" } } }
EOF
ns=$(make_netns m)
ctl attach box --netns "/var/run/netns/$ns" --config "$T/cfg.json" > "$T/box-ca.pem"
in_box() { ip netns exec "$ns" "$@"; }
# 3 plain requests and 1 intercepted one inject 2 headers each; 1 request is denied.
for i in 1 2 3; do in_box curl -sS -o /dev/null "http://plain.example.com/$i"; done
in_box curl -sS -o /dev/null --cacert "$T/box-ca.pem" https://api.example.com/tls
assert_eq "$(in_box curl -sS -o /dev/null -w '%{http_code}' http://evil.example.com/)" 403 \
  "denied request"
wait_for "[ \"\$(ctl metrics | awk '\$1 == \"authproxy_connections_closed_total{reason=\\\"egress_deny\\\"}\" { print \$2 }')\" = 1 ]"

# check_exposition FILE: the Prometheus text format's rules; prints the samples as
# "SERIES VALUE TYPE" lines, or fails.
check_exposition() {
  "$PY" - "$1" <<'PYEOF'
import re, sys
help_, type_, seen, out = set(), {}, set(), []
name_re = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
sample = re.compile(r"(%s)(\{(%s=\"(?:[^\"\\\n]|\\[\\\"n])*\")(,%s=\"(?:[^\"\\\n]|\\[\\\"n])*\")*\})? (\d+(\.\d+)?)$"
                    % (name_re, name_re, name_re))
for n, line in enumerate(open(sys.argv[1]).read().split("\n")[:-1], 1):
    m = re.match(r"# (HELP|TYPE) (%s) (.+)$" % name_re, line)
    if m:
        kind, fam, rest = m.groups()
        if fam in (help_ if kind == "HELP" else type_):
            sys.exit("line %d: second %s for %s" % (n, kind, fam))
        if kind == "HELP":
            help_.add(fam)
        else:
            if rest not in ("counter", "gauge"):
                sys.exit("line %d: type %s" % (n, rest))
            if any(s.split("{")[0] == fam for s in seen):
                sys.exit("line %d: TYPE of %s after its samples" % (n, fam))
            type_[fam] = rest
        continue
    m = sample.match(line)
    if not m:
        sys.exit("line %d: not a sample: %r" % (n, line))
    series = line.rsplit(" ", 1)[0]
    fam = m.group(1)
    if fam not in type_ or fam not in help_:
        sys.exit("line %d: %s has no TYPE or HELP before it" % (n, fam))
    if series in seen:
        sys.exit("line %d: series %s given twice" % (n, series))
    seen.add(series)
    out.append("%s %s %s" % (series, m.group(5), type_[fam]))
print("\n".join(out))
PYEOF
}
# Every sandbox connection closed (the upstream ones may wait in the pool).
closed_all() {
  ctl metrics | awk '$1 == "authproxy_connections_accepted_total" { a = $2 }
    $1 ~ /^authproxy_connections_closed_total[{]/ { c += $2 } END { exit !(a == c) }'
}
wait_for closed_all
ctl metrics > "$T/m1.txt"
check_exposition "$T/m1.txt" > "$T/s1.txt" || fail "/metrics is not valid exposition text"
val() { awk -v k="$2" '$1 == k { print $2 }' "$1"; }
assert_eq "$(val "$T/s1.txt" authproxy_requests_total)" 5 "requests"
assert_eq "$(val "$T/s1.txt" 'authproxy_requests_refused_total{reason="egress_deny"}')" 1 "denials"
assert_eq "$(val "$T/s1.txt" 'authproxy_headers_injected_total{rule="api"}')" 8 "headers injected"
assert_eq "$(val "$T/s1.txt" authproxy_connections_accepted_total)" 5 "connections accepted"
assert_eq "$(val "$T/s1.txt" 'authproxy_connections_total{action="deny"}')" 1 "connections denied"
# An intercepted TLS connection is one connection: it used to count once when its
# ClientHello decided it and again at its first request (5 for these 4).
assert_eq "$(val "$T/s1.txt" 'authproxy_connections_total{action="intercept"}')" 4 \
  "connections intercepted"
assert_eq "$(awk '$1 ~ /^authproxy_connections_total[{]/ { n += $2 } END { print n + 0 }' \
  "$T/s1.txt")" 5 "connections decided, all actions, against 5 accepted"
assert_eq "$(val "$T/s1.txt" authproxy_cert_minted_total)" 1 "leaves minted"
assert_eq "$(val "$T/s1.txt" authproxy_connections_active)" 0 \
  "open connections with every one closed ($(val "$T/s1.txt" authproxy_upstream_pooled) pooled upstream)"
queries=$(val "$T/s1.txt" authproxy_dns_queries_total)
[ "$queries" -ge 5 ] || fail "DNS queries: $queries, 5 names were resolved"
pass "/metrics is valid exposition text; counts match the traffic sent"

# Denials decided before any policy lookup count as denials too: a connection to a
# synthetic address the responder never handed out (closed at once, as a port scan
# does), and a request whose Host disagrees with the name the sandbox resolved.
in_box "$PY" - <<'PYEOF'
import socket
socket.create_connection(("198.19.255.250", 80), timeout=5).close()
s = socket.create_connection(("plain.example.com", 80), timeout=5)
s.sendall(b"GET / HTTP/1.1\r\nHost: evil.example.com\r\nConnection: close\r\n\r\n")
assert s.recv(65536).startswith(b"HTTP/1.1 403"), "no 403 for a Host that disagrees"
s.close()
PYEOF
wait_for closed_all
assert_eq "$(ctl metrics | awk '$1 == "authproxy_connections_total{action=\"deny\"}" { print $2 }')" 3 \
  "connections denied, with those two"
pass "denials decided before the policy is asked are counted"

# A connection that is neither TLS nor HTTP to a host with rules has nothing to inject
# into: it is relayed (tunnel), or refused where request-level policy applies (deny,
# uninspectable_protocol). Both used to count as intercepted, which their audit
# records do not say.
in_box "$PY" - <<'PYEOF'
import socket
for name in ("api.example.com", "plain.example.com"):
    s = socket.create_connection((name, 443), timeout=5)
    try:  # the refused one is reset at once
        s.sendall(b"\x00\x01 not TLS, not HTTP\r\n")
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
    except OSError:
        pass
    s.close()
PYEOF
wait_for closed_all
ctl metrics > "$T/m3.txt"
assert_eq "$(val "$T/m3.txt" 'authproxy_connections_total{action="intercept"}')" 4 \
  "connections intercepted, with two opaque ones to hosts with rules"
assert_eq "$(val "$T/m3.txt" 'authproxy_connections_total{action="tunnel"}')" 1 \
  "opaque connection relayed to a host with rules"
assert_eq "$(val "$T/m3.txt" 'authproxy_connections_total{action="deny"}')" 4 \
  "opaque connection refused where request-level policy applies"
assert_eq "$(val "$T/m3.txt" 'authproxy_connections_closed_total{reason="uninspectable_protocol"}')" 1 \
  "uninspectable_protocol"
pass "an opaque connection counts as what was done with it"

# A request whose upstream cannot be reached is answered 502 and never sent: no header
# was injected into it. Its record and the metric used to list and count the rule's two.
assert_eq "$(in_box curl -sS -o /dev/null -w '%{http_code}' http://dead.example.com/)" 502 \
  "request to an unreachable upstream"
wait_for closed_all
assert_eq "$(ctl metrics | awk '$1 == "authproxy_headers_injected_total{rule=\"api\"}" { print $2 }')" 8 \
  "headers injected, with a request that never left"
wait_for "grep -q '\"event\":\"request\".*\"name\":\"dead.example.com\"' '$T/audit.jsonl'"
assert_eq "$(grep '"event":"request".*"name":"dead.example.com"' "$T/audit.jsonl" |
  sed -E 's/.*("action":"[a-z]+").*("injected":\[[^]]*\]).*/\1 \2/')" '"action":"reject" "injected":[]' \
  "the request record"
pass "a request never sent has no injected headers, in the log or the metrics"

# The log and the metrics reconcile: one connection record per connection accepted,
# one request record per request counted. A no_proxy connection is relayed untouched:
# its first request used to count in authproxy_requests_total, without a record.
in_box curl -sS -o /dev/null http://np.example.com/bypassed
wait_for closed_all
ctl metrics > "$T/m4.txt"
records() { grep -c "\"event\":\"$1\"" "$T/audit.jsonl" || true; }
wait_for "[ \"\$(records conn)\" = '$(val "$T/m4.txt" authproxy_connections_accepted_total)' ]"
assert_eq "$(records request)" "$(val "$T/m4.txt" authproxy_requests_total)" \
  "request records against authproxy_requests_total"
pass "the audit log's records and the metrics' counts agree"

# Detached, the sandbox takes none of its counts away.
ctl detach box > /dev/null
wait_for "[ \"\$(ctl metrics | awk '\$1 == \"authproxy_sandboxes\" { print \$2 }')\" = 0 ]"
wait_for "grep -q 'sandbox box: detached' '$T/serve.log'"
ctl metrics > "$T/m2.txt"
check_exposition "$T/m2.txt" > "$T/s2.txt" || fail "/metrics is not valid exposition text"
went_down=$(awk 'NR == FNR { if ($3 == "counter") before[$1] = $2; next }
                 ($1 in before) && $2 + 0 < before[$1] + 0 { print $1 ": " before[$1] " -> " $2 }' \
  "$T/s1.txt" "$T/s2.txt")
assert_eq "$went_down" "" "counters that went down when the sandbox detached"
for g in authproxy_connections_active authproxy_dns_names authproxy_cert_cache_entries \
    authproxy_upstream_pooled authproxy_write_queued_bytes; do
  assert_eq "$(val "$T/s2.txt" "$g")" 0 "gauge $g with nothing attached"
done
pass "detaching keeps every counter; gauges back to 0"
