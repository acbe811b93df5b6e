#!/usr/bin/env bash
# An intercepted upstream named by an IPv6 address (https://[fd00:200::1]:P/, no SNI)
# is checked for an iPAddress SAN of 16 bytes equal to that address after the
# handshake (mbedTLS 2.28 matches dNSName SANs only), before the credential is sent:
# a certificate for another IPv6 address, for the same address's IPv4-mapped form,
# or for a name only is upstream_tls_failed and nothing reaches the upstream. Control:
# the certificate for the address gets the request and its injected header. The
# IPv4 twin of this test is test_upstream_ip_cert_dates.sh.
#
#   jail netns                                 $HNS (stand-in host)
#   curl https://[fd00:200::1]:P/  -nft->      authproxy jail (a rule on fd00:200::1
#                                                intercepts) -> fake upstreams on
#                                                fd00:200::1 (an address of the
#                                                host's), test CA certificates
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

ADDR=fd00:200::1
host_ns_start
ip -n "$HNS" addr add "$ADDR/128" dev lo nodad
make_ca "$T/ca" api.example.com
"$PY" - "$T" "$ADDR" <<'PYEOF'
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

d, addr = sys.argv[1], ipaddress.ip_address(sys.argv[2])
ca = x509.load_pem_x509_certificate(open(d + "/ca/ca.pem", "rb").read())
ca_key = serialization.load_pem_private_key(open(d + "/ca/ca.key", "rb").read(), None)
now = datetime.datetime.utcnow()
day = datetime.timedelta(days=1)
mapped = ipaddress.ip_address("::ffff:10.200.0.1")
for label, sans in (
        ("mine", [x509.IPAddress(addr)]),
        ("other", [x509.IPAddress(ipaddress.ip_address("fd00:200::2"))]),
        ("mapped", [x509.IPAddress(mapped), x509.IPAddress(ipaddress.ip_address("10.200.0.1"))]),
        ("named", [x509.DNSName(str(addr)), x509.DNSName("api.example.com")])):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, label)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - day).not_valid_after(now + 10 * day)
            .add_extension(x509.SubjectAlternativeName(sans), False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .sign(ca_key, hashes.SHA256()))
    open("%s/%s.pem" % (d, label), "wb").write(cert.public_bytes(serialization.Encoding.PEM))
    open("%s/%s.key" % (d, label), "wb").write(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
PYEOF
for u in mine other mapped named; do
  HUP_BIND=$ADDR hupstream $u "$T/$u.pem" "$T/$u.key"
done
cp "$T/ca/ca.pem" "$T/upstream-ca.pem"
chmod 644 "$T/upstream-ca.pem"
cat > "$T/config.json" <<EOF2
{ "rules": [ { "name": "internal", "match_hosts": ["$ADDR"],
    "headers": [ { "name": "X-Team", "type": "plaintext", "value": "agents" } ] } ],
  "egress": { "allow": ["$ADDR"] } }
EOF2
out=$(hjail -v --config "$T/config.json" --upstream-ca "$T/upstream-ca.pem" --user nobody -- \
  sh -c "for p in $mine_PORT $other_PORT $mapped_PORT $named_PORT; do
    curl -sS -m 20 https://[$ADDR]:\$p/ | tr -d '\n'; echo; done" 2> "$T/jail.log") || true
line() { printf '%s\n' "$out" | sed -n "$1p"; }

assert_contains "$(line 1)" '"path": "/"' "the address's own certificate"
assert_eq "$(upq mine 'hdr(reqs[-1], "X-Team")')" '["agents"]' "injected for the address"
pass "an IPv6 upstream whose certificate carries its address gets the request"
for n in 2:other 3:mapped 4:named; do
  assert_contains "$(line "${n%%:*}")" '"code":"upstream_tls_failed"' "${n#*:}"
  assert_eq "$(upq "${n#*:}" 'len(reqs)')" "0" "${n#*:}: requests reaching the upstream"
done
assert_contains "$(cat "$T/jail.log")" "upstream $ADDR: certificate has no IP address SAN for it" \
  "the log says why"
pass "another IPv6 address, the IPv4-mapped form or a dNSName of the address: refused"
