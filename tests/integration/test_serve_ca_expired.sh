#!/usr/bin/env bash
# A sandbox CA that expires while the daemon runs (an operator's CA given at attach
# reaching its notAfter, or the host's clock stepped past it) refuses to mint, and
# every intercepted connection of the sandbox is closed. That was logged twice per
# connection ("ca: the CA certificate has expired", then "cannot mint a certificate:
# Key has expired"), at warning level, as fast as the sandbox connects: the flood
# tests/adversarial/test_log_flood.sh keeps out elsewhere. It is logged the 1st, 10th,
# 100th and every 1000th time in a sandbox, with the count, naming the clock.
#
#   ap-ce-PID                               host
#   curl https://api.example.com/ (x N)     authproxy serve: sandbox CA given at attach,
#     --nft--> listener                       expiring seconds later
. "$(dirname "$0")/lib.sh"

N=25 # connections after the CA expired: lines 1 and 10 are logged
STATE=$T/state
SOCK=$T/control.sock
"$AUTHPROXY" serve --state-dir "$STATE" --control "$SOCK" --drain-timeout 1 \
  >> "$T/serve.log" 2>&1 &
PIDS+=($!)
wait_for "[ -S '$SOCK' ] && '$AUTHPROXY' ctl --control '$SOCK' health >/dev/null 2>&1"
cat > "$T/config.json" <<EOF2
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Team", "type": "plaintext", "value": "agents" } ] } ] }
EOF2
ns=$(make_netns ce)

# A CA valid until a few seconds from now; prints its notAfter (epoch seconds).
until_s=$("$PY" - "$T" <<'PYEOF'
import datetime, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

d = sys.argv[1]
now = datetime.datetime.utcnow().replace(microsecond=0)
end = now + datetime.timedelta(seconds=3)
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "authproxy expiring test CA")])
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                     False), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256()))
open(d + "/sbca.pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(d + "/sbca.key", "wb").write(key.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption()))
print(int(end.replace(tzinfo=datetime.timezone.utc).timestamp()))
PYEOF
)
"$AUTHPROXY" ctl --control "$SOCK" attach box --netns "/var/run/netns/$ns" \
  --config "$T/config.json" --ca-cert "$T/sbca.pem" --ca-key "$T/sbca.key" > /dev/null
# Waits for the wall clock to pass the CA's notAfter (a few seconds).
wait_for "[ \$(date +%s) -gt $until_s ]" 10

before=$(wc -l < "$T/serve.log")
ip netns exec "$ns" sh -c "for i in \$(seq $N); do
  curl -sk -m 5 -o /dev/null https://api.example.com/ 2>/dev/null; done" || true
lines=$(tail -n +$((before + 1)) "$T/serve.log")
n=$(printf '%s\n' "$lines" | grep -c -i "expired" || true)
[ "$n" -le 2 ] || fail "$N connections refused for the expired CA logged $n lines: $lines"
assert_contains "$lines" "(10 such refusals in this sandbox)" "the 10th, with the count"
assert_contains "$lines" "clock" "the line names the clock"
pass "an expired sandbox CA is logged the 1st and 10th of $N times, naming the clock"
