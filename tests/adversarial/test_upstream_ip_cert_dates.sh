#!/usr/bin/env bash
# An intercepted upstream named by an address (https://10.200.0.1/, no SNI: the name
# is the Host header's address) is checked for an IP SAN after the handshake, since
# mbedTLS 2.28 matches names only against dNSName SANs. A certificate that is not for
# that address at all and is also expired failed the handshake on its dates alone, and
# was answered upstream_certificate_expired, "if it has not [expired], that clock is
# wrong": the clock is not the question, the certificate is another host's. It is
# upstream_tls_failed, as the same certificate within its dates is. Control: an
# expired certificate that is for the address is still named by its dates.
#
#   jail netns                                 $HNS (stand-in host)
#   curl https://10.200.0.1:P/  -nft->         authproxy jail (a rule on 10.200.0.1:
#                                                intercepts) -> fake upstreams on
#                                                10.200.0.1 (an address of the host's:
#                                                egress allow names it), test CA
#                                                certificates
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start
ip -n "$HNS" addr add 10.200.0.1/32 dev lo
make_ca "$T/ca" api.example.com
"$PY" - "$T" <<'PYEOF'
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

d = sys.argv[1]
ca = x509.load_pem_x509_certificate(open(d + "/ca/ca.pem", "rb").read())
ca_key = serialization.load_pem_private_key(open(d + "/ca/ca.key", "rb").read(), None)
now = datetime.datetime.utcnow()
day = datetime.timedelta(days=1)
ip = x509.IPAddress(ipaddress.ip_address("10.200.0.1"))
for label, sans, start, end in (
        ("other", [x509.DNSName("other.example.com")], now - 10 * day, now - day),
        ("otherok", [x509.DNSName("other.example.com")], now - day, now + 10 * day),
        ("mine", [ip], now - 10 * day, now - day)):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, label)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(sans), False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .sign(ca_key, hashes.SHA256()))
    open("%s/%s.pem" % (d, label), "wb").write(cert.public_bytes(serialization.Encoding.PEM))
    open("%s/%s.key" % (d, label), "wb").write(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
PYEOF
for u in other otherok mine; do
  HUP_BIND=10.200.0.1 hupstream $u "$T/$u.pem" "$T/$u.key"
done
cp "$T/ca/ca.pem" "$T/upstream-ca.pem"
chmod 644 "$T/upstream-ca.pem"
cat > "$T/config.json" <<EOF2
{ "rules": [ { "name": "internal", "match_hosts": ["10.200.0.1"],
    "headers": [ { "name": "X-Team", "type": "plaintext", "value": "agents" } ] } ],
  "egress": { "allow": ["10.200.0.1"] } }
EOF2
out=$(hjail --config "$T/config.json" --upstream-ca "$T/upstream-ca.pem" --user nobody -- \
  sh -c "for p in $other_PORT $otherok_PORT $mine_PORT; do
    curl -sS -m 20 https://10.200.0.1:\$p/ | tr -d '\n'; echo; done" 2> "$T/jail.log") || true
other=$(printf '%s\n' "$out" | sed -n 1p)
otherok=$(printf '%s\n' "$out" | sed -n 2p)
mine=$(printf '%s\n' "$out" | sed -n 3p)

assert_contains "$otherok" '"code":"upstream_tls_failed"' "another host's certificate"
assert_contains "$other" '"code":"upstream_tls_failed"' "another host's certificate, expired"
pass "a certificate without the address's IP SAN is upstream_tls_failed, expired or not"
assert_contains "$mine" '"code":"upstream_certificate_expired"' "the address's certificate, expired"
pass "an expired certificate for the address is named by its dates"
