"""Certificate chains for the tests of an upstream's hostile chains
(tests/adversarial/test_upstream_chain_*.sh): a builder, the 16 KiB fill, and the files
upstream_chain_refused (tests/integration/lib.sh) serves."""
import base64
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.utcnow()
# What one TLS handshake record holds of a Certificate message, with room to spare.
RECORD_BYTES = 16000


def name(s):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, s)])


def cert(subject, issuer, pub, signer, serial, not_after, ca, ku=None):
    """DER of a certificate signed by signer (SHA-256): a CA, or api.example.com's leaf."""
    b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
         .public_key(pub).serial_number(serial)
         .not_valid_before(NOW - datetime.timedelta(days=10)).not_valid_after(not_after))
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("api.example.com")]),
                            False)
    if ku is not None:
        b = b.add_extension(ku, True)
    return b.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def fill(chain, make):
    """Appends make(serial) to chain (DER certificates) while one record holds them."""
    size = sum(len(c) + 3 for c in chain)
    while True:
        c = make(len(chain) + 1)
        if size + len(c) + 3 > RECORD_BYTES:
            return chain
        chain.append(c)
        size += len(c) + 3


def write_chain(directory, chain, leaf_key):
    """DIRECTORY/chain.pem (chain: DER, leaf first) and DIRECTORY/leaf.key."""
    with open(directory + "/chain.pem", "w") as f:
        for d in chain:
            f.write("-----BEGIN CERTIFICATE-----\n%s-----END CERTIFICATE-----\n"
                    % base64.encodebytes(d).decode())
    with open(directory + "/leaf.key", "wb") as f:
        f.write(leaf_key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
