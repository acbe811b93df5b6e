#!/usr/bin/env bash
# 1,000 distinct intercepted names keep the per-sandbox certificate cache at its bound;
# every handshake still gets a valid leaf for its own name.
. "$(dirname "$0")/lib.sh"

cat > "$T/config.json" <<'EOF2'
{ "rules": [ { "name": "wild", "match_hosts": ["*.example.com"],
    "headers": [ { "name": "X-Seen", "type": "plaintext", "value": "1" } ] } ] }
EOF2
cat > "$T/names.py" <<'EOF2'
import socket, ssl
ctx = ssl.create_default_context()
ok = 0
for i in range(1000):
    name = "n%d.example.com" % i
    with socket.create_connection((name, 443), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname=name) as t:
            sans = [v for k, v in t.getpeercert()["subjectAltName"] if k == "DNS"]
            ok += sans == [name]
print(ok)
EOF2
out=$(jail -v --leaf-cache 64 --config "$T/config.json" --user nobody -- "$PY" "$T/names.py" 2> "$T/jail.log")
assert_eq "$out" "1000" "handshakes with a leaf for their own name"
summary=$(grep 'certificates:' "$T/jail.log")
cached=$(sed -nE 's/.*certificates: ([0-9]+) cached.*/\1/p' <<<"$summary")
minted=$(sed -nE 's/.* ([0-9]+) minted.*/\1/p' <<<"$summary")
evicted=$(sed -nE 's/.* ([0-9]+) evicted.*/\1/p' <<<"$summary")
[ "$cached" -le 64 ] || fail "cache holds $cached leaves, bound 64"
assert_eq "$minted" 1000 "leaves minted"
[ "$evicted" -ge 936 ] || fail "only $evicted leaves evicted"
pass "1000 names: $minted minted, $cached cached (bound 64), $evicted evicted"
