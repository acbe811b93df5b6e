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

"$PY" - "$T" "$TOOLS" <<'PYEOF'
import datetime, sys
sys.path.insert(0, sys.argv[2])
from chain_pki import NOW, cert, fill, write_chain
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
signer = ec.generate_private_key(ec.SECP256R1())
leaf_key = ec.generate_private_key(ec.SECP256R1())
no_cert_sign = x509.KeyUsage(digital_signature=True, content_commitment=False,
                             key_encipherment=False, data_encipherment=False,
                             key_agreement=False, key_cert_sign=False, crl_sign=False,
                             encipher_only=False, decipher_only=False)
later = NOW + datetime.timedelta(days=2)
expired = NOW - datetime.timedelta(days=1)
chain = [cert("api.example.com", "X", leaf_key.public_key(), signer, 1, later, False),
         cert("X", "Y", signer.public_key(), signer, 2, later, True, no_cert_sign),
         cert("X", "Z", signer.public_key(), signer, 3, later, True)]
fill(chain, lambda serial: cert("Z", "Z", signer.public_key(), signer, serial, expired, True))
write_chain(sys.argv[1], chain, leaf_key)
PYEOF
upstream_chain_refused "signature checks to search"
pass "a chain whose decoy CA hides a long parent search is refused before any check"
