#!/usr/bin/env bash
# Look-alike host names against host globs, through the proxy (plain HTTP and TLS):
# a rule for *.github.com must not inject for evilgithub.com, github.com or
# api.github.com.evil.com; Api.GitHub.com. (case, trailing dot) is api.github.com and
# gets its credential; a deny for evil.example.com and *.pastebin.com cannot be
# dodged with case, a trailing dot or a port; names that are not names (empty label,
# non-ASCII look-alike letters, two trailing dots) are refused.
#
#   jail: client --nft--> authproxy (in $HNS) --remap--> plain and TLS fake upstreams
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start
make_ca "$T/ca" api.github.com evilgithub.com github.com api.github.com.evil.com a.b.github.com
hupstream tls "$T/ca/server.pem" "$T/ca/server.key"
hupstream up
SECRET="gh-secret-$$"
remap() {
  local n out=""
  for n in api.github.com evilgithub.com github.com api.github.com.evil.com a.b.github.com \
           evil.example.com x.pastebin.com; do
    out="$out\"$n\": \"127.0.0.1:$1\","
  done
  echo "${out%,}"
}
cfg() {
  cat <<EOF
{ "rules": [
    { "name": "wild", "allow_plain_http": true, "match_hosts": ["*.github.com"],
      "headers": [ { "name": "Authorization", "type": "plaintext", "value": "Bearer $SECRET" } ] },
    { "name": "exact", "allow_plain_http": true, "match_hosts": ["api.github.com"],
      "headers": [ { "name": "X-Exact", "type": "plaintext", "value": "1" } ] } ],
  "egress": { "default": "allow", "deny": ["evil.example.com", "*.pastebin.com"] },
  "dns": { "remap": { $(remap "$1") } } }
EOF
}
cfg "$up_PORT" > "$T/plain.json"
cfg "$tls_PORT" > "$T/tls.json"

cat > "$T/client.py" <<'PYEOF'
import socket, ssl, sys
sys.path.insert(0, sys.argv[1])
import advlib
mode = sys.argv[2]

def req(case, host):
    return (b"GET /case/" + case.encode() + b" HTTP/1.1\r\nHost: " + host +
            b"\r\nConnection: close\r\n\r\n")

if mode == "plain":
    # (case, address to connect to: a name the resolver answers, or an address-only
    # flow; the Host header as sent)
    cases = [
        ("evilgithub", "evilgithub.com", b"evilgithub.com"),
        ("bare_github", "github.com", b"github.com"),
        ("suffix_evil", "api.github.com.evil.com", b"api.github.com.evil.com"),
        ("mixed_case_dot", "Api.GitHub.com.", b"Api.GitHub.com."),
        ("upper", "API.GITHUB.COM", b"API.GITHUB.COM"),
        ("with_port", "api.github.com", b"api.github.com:80"),
        ("deep_sub", "a.b.github.com", b"A.B.GitHub.Com"),
        ("addr_flow_dot", "203.0.113.9", b"api.github.com."),
        ("deny_case", "EVIL.Example.COM.", b"EVIL.Example.COM."),
        ("deny_port", "203.0.113.9", b"evil.example.com:80"),
        ("deny_wild_case", "X.PasteBin.com.", b"X.PasteBin.com."),
        ("two_dots", "203.0.113.9", b"api.github.com.."),
        ("empty_label", "203.0.113.9", b"api..github.com"),
        ("cyrillic_a", "203.0.113.9", "\u0430pi.github.com".encode("utf-8")),
        ("leading_dot", "203.0.113.9", b".api.github.com"),
    ]
    for case, addr, host in cases:
        if not addr[0].isdigit():
            addr = socket.gethostbyname(addr)
        advlib.emit(case, **advlib.exchange(addr, 80, req(case, host)))
else:
    # TLS: the SNI as sent (Python sends server_hostname unchanged), Host the same.
    ctx = ssl.create_default_context(cafile=sys.argv[3])
    ctx.load_verify_locations(cafile=sys.argv[4])   # the sandbox CA for intercepted names
    ctx.check_hostname = False
    for case, sni in (("tls_evilgithub", "evilgithub.com"), ("tls_bare_github", "github.com"),
                      ("tls_mixed_case_dot", "Api.GitHub.com."),
                      ("tls_upper", "API.GITHUB.COM"), ("tls_deep_sub", "a.b.github.com"),
                      ("tls_deny_case", "EVIL.Example.COM.")):
        out = {"status": ""}
        try:
            with socket.create_connection(("203.0.113.9", 443), timeout=5) as s:
                with ctx.wrap_socket(s, server_hostname=sni) as t:
                    cert = t.getpeercert()
                    out["issuer"] = dict(x[0] for x in cert["issuer"]).get("commonName", "")
                    t.sendall(req(case, sni.encode()))
                    buf = b""
                    while True:
                        chunk = t.recv(65536)
                        if not chunk:
                            break
                        buf += chunk
                    out["status"] = buf.split(b"\r\n", 1)[0].decode()
                    out["reason"] = ",".join(l.split(b":", 1)[1].strip().decode()
                                             for l in buf.split(b"\r\n")
                                             if l.lower().startswith(b"x-authproxy-error"))
        except (OSError, ssl.SSLError) as e:
            out["error"] = str(e)
        advlib.emit(case, **out)
PYEOF

hjail --config "$T/plain.json" --user nobody -- "$PY" "$T/client.py" "$TOOLS" plain > "$T/plain.out"
hjail --config "$T/tls.json" --upstream-ca "$T/ca/ca.pem" --user nobody -- \
  sh -c '"$0" "$1" "$2" tls "$3" "$SSL_CERT_FILE"' "$PY" "$T/client.py" "$TOOLS" "$T/ca/ca.pem" > "$T/tls.out"
load_results "$T/plain.out"
load_results "$T/tls.out"

# What the upstreams received, per case: the Authorization and X-Exact values.
got() { upq "$1" "[(hdr(r, 'Authorization'), hdr(r, 'X-Exact')) for r in reqs if r['path'] == '/case/$2']"; }
none='[[[], []]]'
both="[[[\"Bearer $SECRET\"], [\"1\"]]]"
wild="[[[\"Bearer $SECRET\"], []]]"

for c in evilgithub bare_github suffix_evil; do
  assert_eq "$(got up $c)" "$none" "$c: headers at the upstream"
done
for c in mixed_case_dot upper with_port addr_flow_dot; do
  assert_eq "$(got up $c)" "$both" "$c: headers at the upstream"
done
assert_eq "$(got up deep_sub)" "$wild" "a.b.github.com: headers at the upstream"
pass "plain HTTP: *.github.com injects for Api.GitHub.com., API.GITHUB.COM, a.b.github.com, not for evilgithub.com, github.com, api.github.com.evil.com"

for c in deny_case deny_port deny_wild_case; do
  assert_contains "$(result "$T/plain.out" $c status)" " 403 " "$c: status"
  assert_eq "$(result "$T/plain.out" $c reason)" "egress_deny" "$c: reason"
done
for c in two_dots empty_label cyrillic_a leading_dot; do
  assert_contains "$(result "$T/plain.out" $c status)" " 400 " "$c: status"
done
assert_eq "$(upq up "len([r for r in reqs if r['path'].split('/')[-1] in ('deny_case', 'deny_port', 'deny_wild_case', 'two_dots', 'empty_label', 'cyrillic_a', 'leading_dot')])")" \
  "0" "denied or invalid names forwarded"
pass "plain HTTP: denies hold against case, trailing dot and port; malformed names 400"

# TLS: look-alikes are tunnelled untouched (the sandbox sees the upstream's own
# certificate); the real name in any spelling is intercepted and injected.
for c in tls_evilgithub tls_bare_github; do
  assert_contains "$(result "$T/tls.out" $c status)" " 200 " "$c: status"
  assert_contains "$(result "$T/tls.out" $c issuer)" "authproxy test CA" "$c: tunnelled end to end"
done
assert_eq "$(got tls tls_evilgithub)" "$none" "TLS evilgithub.com: headers at the upstream"
assert_eq "$(got tls tls_bare_github)" "$none" "TLS github.com: headers at the upstream"
for c in tls_mixed_case_dot tls_upper; do
  assert_contains "$(result "$T/tls.out" $c status)" " 200 " "$c: status"
  assert_contains "$(result "$T/tls.out" $c issuer)" "authproxy sandbox CA" "$c: intercepted"
  assert_eq "$(got tls $c)" "$both" "$c: headers at the upstream"
done
assert_eq "$(got tls tls_deep_sub)" "$wild" "TLS a.b.github.com: headers at the upstream"
assert_contains "$(result "$T/tls.out" tls_deny_case status)" " 403 " "TLS deny with case and dot"
assert_eq "$(upq tls 'len([r for r in reqs if r["path"] == "/case/tls_deny_case"])')" "0" \
  "TLS denied name forwarded"
# Both spellings are one name: the second may ride the first's pooled connection.
assert_eq "$(upq tls 'sorted(set(e["sni"] for e in events if e["event"] == "conn" and e["sni"] and e["sni"].lower().startswith("api")))')" \
  '["api.github.com"]' "SNI the proxy sends upstream (normalized)"
pass "TLS: look-alikes tunnelled untouched; Api.GitHub.com. / API.GITHUB.COM intercepted as api.github.com"
assert_eq "$(resolved 'len(qs)')" "0" "names the proxy resolved (all are remapped)"
