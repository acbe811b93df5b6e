#!/usr/bin/env bash
# What a restart checks of the sandbox CAs it restores. The pair in a sandbox's sealed
# state was proven (key matches certificate, a test leaf verifies) when the sandbox was
# attached, and only the daemon's key could have sealed it, so a restart does not
# prove it again: those proofs were four fifths of a restart's CPU
# (scripts/bench/restore.sh). What depends on the clock is checked again: a CA given at
# attach that expired while the daemon was down is not restored, and says why. The CAs
# restored issue leaves that clients accept, and an attach (not a restart) still
# refuses a key that does not match its certificate.
#
#   ap-rk-PID, ap-rs-PID, ap-rg-PID        host
#   curl --cacert CA https://api...        authproxy serve (restarted) --> fake upstream
#     --nft--> listener                      api.example.com -> tup (TLS)
. "$(dirname "$0")/lib.sh"

make_ca "$T/upca" api.example.com
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
ctl() { "$AUTHPROXY" ctl --control "$SOCK" "$@"; }
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Tag", "type": "plaintext", "value": "tag-$$" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$tup_PORT" } } }
EOF

# Two operator CAs: "long" valid for a month, "short" until a few seconds from now
# (prints its notAfter, epoch seconds).
until_s=$("$PY" - "$T" <<'PYEOF'
import datetime, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

d = sys.argv[1]
now = datetime.datetime.utcnow().replace(microsecond=0)
for label, end in (("long", now + datetime.timedelta(days=30)),
                   ("short", now + datetime.timedelta(seconds=3))):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "authproxy %s test CA" % label)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                         False, False), True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           False)
            .sign(key, hashes.SHA256()))
    open("%s/%s.pem" % (d, label), "wb").write(cert.public_bytes(serialization.Encoding.PEM))
    open("%s/%s.key" % (d, label), "wb").write(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
print(int(end.replace(tzinfo=datetime.timezone.utc).timestamp()))
PYEOF
)
chmod 600 "$T/long.key" "$T/short.key"

serve
# An attach still proves the pair: a key that is not the certificate's is refused.
nsk=$(make_netns rk)
out=$(ctl attach keep --netns "/var/run/netns/$nsk" --config "$T/config.json" \
  --ca-cert "$T/long.pem" --ca-key "$T/short.key" 2>&1) && fail "a mismatched pair attached"
assert_contains "$out" "invalid_ca" "a mismatched pair at attach"
grep -q "does not match certificate" "$T/serve.log" || fail "the log does not say why"
pass "an attach refuses a CA key that does not match its certificate"

# A CA file ctl cannot read: named with its option and why (it used to say only
# "cannot read A or B"), and nothing is sent.
out=$(ctl attach keep --netns "/var/run/netns/$nsk" --config "$T/config.json" \
  --ca-cert "$T/long.pem" --ca-key "$T/no-such.key" 2>&1) && fail "attached without a key file"
assert_contains "$out" "--ca-key $T/no-such.key: No such file or directory" "a missing --ca-key"
out=$(ctl attach keep --netns "/var/run/netns/$nsk" --config "$T/config.json" \
  --ca-cert "$T/no-such.pem" --ca-key "$T/long.key" 2>&1) && fail "attached without a cert file"
assert_contains "$out" "--ca-cert $T/no-such.pem: No such file or directory" "a missing --ca-cert"
assert_contains "$(ctl list)" '"sandboxes":	[]' "nothing attached"
pass "ctl names the CA file it cannot read"

ctl attach keep --netns "/var/run/netns/$nsk" --config "$T/config.json" \
  --ca-cert "$T/long.pem" --ca-key "$T/long.key" > /dev/null
nss=$(make_netns rs)
ctl attach short --netns "/var/run/netns/$nss" --config "$T/config.json" \
  --ca-cert "$T/short.pem" --ca-key "$T/short.key" > /dev/null
nsg=$(make_netns rg)
ctl attach gen --netns "/var/run/netns/$nsg" --config "$T/config.json" > "$T/gen.pem"

# get NS CAFILE PATH: a client that trusts CAFILE only; prints the status.
get() {
  ip netns exec "$1" curl -sS -m 5 -o /dev/null -w '%{http_code}' --cacert "$2" \
    "https://api.example.com$3" 2>> "$T/curl.log" || true
}
assert_eq "$(get "$nsk" "$T/long.pem" /before)" "200" "operator CA, before"
assert_eq "$(get "$nsg" "$T/gen.pem" /before)" "200" "generated CA, before"

kill -TERM "$SERVE_PID"
wait "$SERVE_PID" || fail "the daemon's stop: exit $?"
# The short CA expires while the daemon is down.
wait_for "[ \$(date +%s) -gt $until_s ]" 10
serve

h=$(ctl health)
assert_contains "$h" '"sandboxes":	2' "two sandboxes restored: $h"
assert_contains "$h" '"not_attached":	1' "one not: $h"
out=$(ctl get short 2>&1) && fail "the expired CA's sandbox was restored"
assert_contains "$out" "ca: the certificate and key were refused" "why it was not restored"
grep -q "has expired" "$T/serve.log" || fail "the log does not say it expired"
pass "a CA that expired while the daemon was down is not restored, and says why"

cmp -s <(openssl x509 -in "$T/long.pem" -outform DER) \
  <(ctl ca keep | openssl x509 -outform DER) || fail "the operator CA changed"
cmp -s "$T/gen.pem" <(ctl ca gen) || fail "the generated CA changed"
assert_eq "$(get "$nsk" "$T/long.pem" /after)" "200" "operator CA, after the restart"
assert_eq "$(get "$nsg" "$T/gen.pem" /after)" "200" "generated CA, after the restart"
assert_eq "$(get "$nsg" "$T/long.pem" /other)" "000" "a leaf of one CA is not another's"
assert_eq "$(upq tup "[hdr(r, 'X-Tag') for r in reqs if r['path'] == '/after']")" \
  "[[\"tag-$$\"], [\"tag-$$\"]]" "the rule applies after the restart"
pass "the CAs restored issue leaves their clients accept"
