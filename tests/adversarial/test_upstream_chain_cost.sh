#!/usr/bin/env bash
# An upstream's certificate chain cannot hold the loop every sandbox shares. mbedTLS
# checks each signature of a chain as it builds it, with the keys of the certificates
# the server sent, before it knows that the chain reaches a trusted CA, and takes any
# RSA exponent below the modulus. A 14 KiB chain of 8192-bit keys with exponents as
# long, which chains to nothing and needs no private key, cost 1.8 s of the loop per
# connection: a plain request to another host took 3.7 s beside three such
# handshakes. Whoever answers a connection to an intercepted name can send one (its
# server, anyone on the path). Certificates with an RSA exponent over 32 bits are now
# refused before any signature is checked (65537 is what certificates use).
#
#   jail: curl --nft--> authproxy (in-process) --TLS--> server sending leaf + 4 such
#                                                        "intermediates"
. "$(dirname "$0")/../integration/lib.sh"

"$PY" - "$T" "$TOOLS" <<'PYEOF'
import datetime, secrets, sys
sys.path.insert(0, sys.argv[2])
from chain_pki import name, write_chain
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
def der(tag, b):
    n = len(b)
    ln = bytes([n]) if n < 128 else (bytes([0x80 | ((n.bit_length() + 7) // 8)]) +
                                     n.to_bytes((n.bit_length() + 7) // 8, "big"))
    return bytes([tag]) + ln + b
SHA256_RSA = der(0x30, bytes.fromhex("06092a864886f70d01010b") + b"\x05\x00")
def with_signature(cert):
    # A signature of the parent's modulus length (below any modulus): mbedTLS checks
    # it with the parent's key. Nothing needs to verify.
    sig = b"\x00" + secrets.token_bytes(1023)
    return der(0x30, cert.tbs_certificate_bytes + SHA256_RSA + der(0x03, b"\x00" + sig))
now = datetime.datetime.utcnow()
signer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
leaf_key = ec.generate_private_key(ec.SECP256R1())
def builder(subject, issuer, key, serial):
    return (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
            .public_key(key).serial_number(serial)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2)))
chain = [with_signature(builder("api.example.com", "ca 1", leaf_key.public_key(), 1)
                        .add_extension(x509.SubjectAlternativeName(
                            [x509.DNSName("api.example.com")]), False)
                        .sign(signer, hashes.SHA256()))]
for i in range(1, 5):
    n = secrets.randbits(8192) | (1 << 8191) | 1
    e = secrets.randbits(8190) | (1 << 8189) | 1
    key = rsa.RSAPublicNumbers(e, n).public_key()
    chain.append(with_signature(builder("ca %d" % i, "ca %d" % (i + 1), key, i + 1)
                                .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                                .sign(signer, hashes.SHA256())))
write_chain(sys.argv[1], chain, leaf_key)
PYEOF
upstream_chain_refused "RSA public exponent of more than 32 bits"
pass "a chain with RSA exponents of 8190 bits is refused before its signatures are checked"
