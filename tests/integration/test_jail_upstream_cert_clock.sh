#!/usr/bin/env bash
# An intercepted upstream whose certificate is out of its validity period by the
# host's clock (expired, or not valid yet: what a valid certificate looks like after
# the host's clock was stepped, or before NTP set it) is a 502 whose code and message
# name the certificate's dates and the clock. It used to be upstream_tls_failed, "a
# certificate that did not verify for its name", which sends whoever reads it after a
# trust or name problem that is not there. A chain failing for another reason as well
# keeps upstream_tls_failed.
#
#   jail netns                                  host netns
#   curl https://old.example.com/  -nft->       authproxy jail (intercepts: a rule)
#   curl https://new.example.com/                 -> fake upstreams, certificates by
#                                                    the test CA: expired / not yet valid
. "$(dirname "$0")/lib.sh"

make_ca "$T/ca" api.example.com
make_ca "$T/other" other.example.com
# Leaves signed by the test CA, for the name and 127.0.0.1, with the dates given.
"$PY" - "$T" <<'PYEOF'
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

d = sys.argv[1]
ca = x509.load_pem_x509_certificate(open(d + "/ca/ca.pem", "rb").read())
ca_key = serialization.load_pem_private_key(open(d + "/ca/ca.key", "rb").read(), None)
other_key = serialization.load_pem_private_key(open(d + "/other/ca.key", "rb").read(), None)
now = datetime.datetime.utcnow()
day = datetime.timedelta(days=1)
for label, host, start, end, issuer_key in (
        ("old", "old.example.com", now - 10 * day, now - day, ca_key),
        ("new", "new.example.com", now + day, now + 10 * day, ca_key),
        ("both", "both.example.com", now - 10 * day, now - day, other_key)):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .sign(issuer_key, hashes.SHA256()))
    open("%s/%s.pem" % (d, label), "wb").write(cert.public_bytes(serialization.Encoding.PEM))
    open("%s/%s.key" % (d, label), "wb").write(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
PYEOF
start_upstream old "$T/old.pem" "$T/old.key"
start_upstream new "$T/new.pem" "$T/new.key"
start_upstream both "$T/both.pem" "$T/both.key"
cat > "$T/config.json" <<EOF2
{ "rules": [ { "name": "api",
    "match_hosts": ["old.example.com", "new.example.com", "both.example.com"],
    "headers": [ { "name": "X-Team", "type": "plaintext", "value": "agents" } ] } ],
  "dns": { "remap": { "old.example.com": "127.0.0.1:$old_PORT",
                      "new.example.com": "127.0.0.1:$new_PORT",
                      "both.example.com": "127.0.0.1:$both_PORT" } } }
EOF2
out=$(jail -v --config "$T/config.json" --log "$T/audit.jsonl" --upstream-ca "$T/ca/ca.pem" \
  --user nobody -- sh -c '
for h in old new both; do
  r=$(curl -sS -m 20 -w " code=%{http_code}" https://$h.example.com/)
  echo "$r" | tr -d "\n"; echo
done' 2> "$T/jail.log") || true
old=$(printf '%s\n' "$out" | sed -n 1p)
new=$(printf '%s\n' "$out" | sed -n 2p)
both=$(printf '%s\n' "$out" | sed -n 3p)

assert_contains "$old" "code=502" "expired: the answer"
assert_contains "$old" '"code":"upstream_certificate_expired"' "expired: the reason"
assert_contains "$old" "clock" "expired: the message names the clock"
# The log shows a sandbox's 1st, 10th, 100th... such failure: this first one.
assert_contains "$(cat "$T/jail.log")" "has expired by this host's clock" "expired: the log"
pass "an upstream certificate that expired by the host's clock is named so"

assert_contains "$new" "code=502" "not yet valid: the answer"
assert_contains "$new" '"code":"upstream_certificate_not_yet_valid"' "not yet valid: the reason"
assert_contains "$new" "clock" "not yet valid: the message names the clock"
pass "an upstream certificate not valid yet by the host's clock is named so"

# Expired and signed by a CA the proxy does not trust: the clock is not the question.
assert_contains "$both" "code=502" "untrusted and expired: the answer"
assert_contains "$both" '"code":"upstream_tls_failed"' "untrusted and expired: the reason"
audit=$(cat "$T/audit.jsonl")
assert_contains "$audit" '"reason":"upstream_certificate_expired"' "the audit: expired"
assert_contains "$audit" '"reason":"upstream_certificate_not_yet_valid"' \
  "the audit: not yet valid"
assert_contains "$audit" '"reason":"upstream_tls_failed"' "the audit: untrusted"
pass "an untrusted certificate that also expired is still upstream_tls_failed"
