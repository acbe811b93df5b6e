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

"$PY" - "$T" "$TOOLS" <<'PYEOF'
import datetime, sys
sys.path.insert(0, sys.argv[2])
from chain_pki import NOW, cert, fill, write_chain
from cryptography.hazmat.primitives.asymmetric import ec
signer = ec.generate_private_key(ec.SECP521R1())
leaf_key = ec.generate_private_key(ec.SECP256R1())
expired = NOW - datetime.timedelta(days=1)
chain = [cert("api.example.com", "X", leaf_key.public_key(), signer, 1,
              NOW + datetime.timedelta(days=2), False)]
fill(chain, lambda serial: cert("X", "X", signer.public_key(), signer, serial, expired, True))
write_chain(sys.argv[1], chain, leaf_key)
PYEOF
upstream_chain_refused "signature checks to search"
pass "a chain whose parent search would check hundreds of signatures is refused before any"
