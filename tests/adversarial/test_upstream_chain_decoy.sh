#!/usr/bin/env bash
# The count of an upstream chain's signature checks follows the parents mbedTLS
# takes. It counted every CA certificate whose subject matched the child's issuer
# loosely (any string type, any keyUsage) and went on from the first within its
# validity period; mbedTLS 2.28 passes over a CA that may not sign certificates (no
# keyCertSign) or whose subject is the same text in another string type, without
# checking its signature. A chain with such a decoy "X" before the real "X" went up
# the decoy in the count (one check) while mbedTLS searched through the expired
# certificates behind the real one, the search test_upstream_chain_search.sh has
# refused since 1f8547a: hundreds of checks on the loop all sandboxes share.
#
#   jail: curl --nft--> authproxy (in-process) --TLS--> server sending leaf, a decoy
#                        "X", the real "X" (issued by "Z") and expired "Z" certificates
. "$(dirname "$0")/../integration/lib.sh"

"$PY" - "$T" <<'PYEOF'
import base64, datetime, sys
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
def name(s):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, s)])
now = datetime.datetime.utcnow()
signer = ec.generate_private_key(ec.SECP256R1())
leaf_key = ec.generate_private_key(ec.SECP256R1())
no_cert_sign = x509.KeyUsage(digital_signature=True, content_commitment=False,
                             key_encipherment=False, data_encipherment=False,
                             key_agreement=False, key_cert_sign=False, crl_sign=False,
                             encipher_only=False, decipher_only=False)
def cert(subject, issuer, key, serial, not_after, ca, ku=None):
    b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
         .public_key(key).serial_number(serial)
         .not_valid_before(now - datetime.timedelta(days=10)).not_valid_after(not_after))
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("api.example.com")]), False)
    if ku is not None:
        b = b.add_extension(ku, True)
    return b.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
later = now + datetime.timedelta(days=2)
chain = [cert("api.example.com", "X", leaf_key.public_key(), 1, later, False),
         cert("X", "Y", signer.public_key(), 2, later, True, no_cert_sign),
         cert("X", "Z", signer.public_key(), 3, later, True)]
size = sum(len(c) + 3 for c in chain)
while True:  # as many as a 16 KiB handshake record holds
    c = cert("Z", "Z", signer.public_key(), len(chain) + 1, now - datetime.timedelta(days=1), True)
    if size + len(c) + 3 > 16000:
        break
    chain.append(c)
    size += len(c) + 3
with open(sys.argv[1] + "/chain.pem", "w") as f:
    for d in chain:
        f.write("-----BEGIN CERTIFICATE-----\n%s-----END CERTIFICATE-----\n"
                % base64.encodebytes(d).decode())
with open(sys.argv[1] + "/leaf.key", "wb") as f:
    f.write(leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
PYEOF
upstream_chain_refused "signature checks to search"
pass "a chain whose decoy CA hides a long parent search is refused before any check"
