#!/usr/bin/env bash
# An upstream's chain cannot make mbedTLS search it for parents at length. mbedTLS
# 2.28 looks for each certificate's parent among the certificates sent after it and
# checks the signature of every one whose subject is the child's issuer, before it
# knows that the chain reaches a trusted CA; one outside its validity period is kept
# as a fallback and the search goes on. A 16 KiB Certificate message of 37 expired
# CA certificates with one P-521 key, all named "X" and issued by "X", made it check
# about 300 P-521 signatures (a quadratic search over nine steps): 2.9 s of the loop
# every sandbox shares per connection, with an ordinary key size and exponent, and
# needing no private key of any trusted CA. The proxy now counts the signature
# checks the search would make and refuses a chain that needs more than the longest
# chain mbedTLS takes, before any signature is checked.
#
#   jail: curl --nft--> authproxy (in-process) --TLS--> server sending leaf + 37
#                                                        expired "X" certificates
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
signer = ec.generate_private_key(ec.SECP521R1())
leaf_key = ec.generate_private_key(ec.SECP256R1())
def cert(subject, key, serial, not_after, ca):
    b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name("X"))
         .public_key(key).serial_number(serial)
         .not_valid_before(now - datetime.timedelta(days=10)).not_valid_after(not_after))
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("api.example.com")]), False)
    return b.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.DER)
chain = [cert("api.example.com", leaf_key.public_key(), 1, now + datetime.timedelta(days=2), False)]
size = len(chain[0]) + 3
while True:  # as many as a 16 KiB handshake record holds
    c = cert("X", signer.public_key(), len(chain) + 1, now - datetime.timedelta(days=1), True)
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
pass "a chain whose parent search would check hundreds of signatures is refused before any"
