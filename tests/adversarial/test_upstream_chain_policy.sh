#!/usr/bin/env bash
# Upstream certificate chains a browser rejects must not get a credential either
# (invariant I2). mbedTLS 2.28 verifies the path, validity, basicConstraints, the
# intermediates' keyUsage and the leaf's name, but two restrictions an intermediate
# places on what it may sign are not applied:
#   - extendedKeyUsage without serverAuth: the sub-CA is not for TLS servers (an
#     S/MIME or client-auth CA, which the root programs do not audit for TLS);
#   - nameConstraints marked non-critical (CA/Browser Forum allows that): the sub-CA
#     may only sign names under its permitted subtrees.
# OpenSSL, NSS and Chrome reject a leaf for api.example.com under either; the proxy
# sent the injected credential to it.
#
#   jail: client --nft--> authproxy --upstream-ca root --TLS--> fake upstreams on
#                                                              127.0.0.1, one per chain
#   root (trusted) -> int-ok                      -> leaf ok.example.com      (control)
#                  -> int-eku (EKU clientAuth)    -> leaf eku.example.com
#                  -> int-nc  (non-critical NC: permitted allowed.test)
#                                                 -> leaf nc.example.com
#                                                 -> leaf in.allowed.test     (control)
#                  -> int-ekuany (EKU serverAuth, anyExtendedKeyUsage)
#                                                 -> leaf any.example.com     (control)
#                  -> int-ekunc (EKU clientAuth; NC permitted example.com, which the
#                                leaf is within: the log must still say why)
#                                                 -> leaf ekunc.example.com
. "$(dirname "$0")/../integration/lib.sh"

require_cmd openssl
D=$T/pki
mkdir -p "$D"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=authproxy chain test root $$" -keyout "$D/root.key" -out "$D/root.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
  2>/dev/null

# intermediate NAME EXTRA-EXTENSION-LINES
intermediate() {
  key "$D/$1.key"
  openssl req -new -key "$D/$1.key" -subj "/CN=authproxy chain test $1 $$" \
    -out "$D/$1.csr" 2>/dev/null
  printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n%b' "$2" \
    > "$D/$1.ext"
  openssl x509 -req -in "$D/$1.csr" -CA "$D/root.pem" -CAkey "$D/root.key" \
    -CAcreateserial -days 2 -extfile "$D/$1.ext" -out "$D/$1.pem" 2>/dev/null
}

# leaf INTERMEDIATE NAME: $D/NAME.chain (leaf then intermediate) and $D/NAME.key.
leaf() {
  key "$D/$2.key"
  openssl req -new -key "$D/$2.key" -subj "/CN=$2" -out "$D/$2.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
    "$2" > "$D/$2.ext"
  openssl x509 -req -in "$D/$2.csr" -CA "$D/$1.pem" -CAkey "$D/$1.key" \
    -CAcreateserial -days 2 -extfile "$D/$2.ext" -out "$D/$2.pem" 2>/dev/null
  cat "$D/$2.pem" "$D/$1.pem" > "$D/$2.chain"
}

intermediate int-ok ''
intermediate int-eku 'extendedKeyUsage=clientAuth\n'
intermediate int-nc 'nameConstraints=permitted;DNS:allowed.test\n'
intermediate int-ekuany 'extendedKeyUsage=serverAuth,anyExtendedKeyUsage\n'
intermediate int-ekunc 'extendedKeyUsage=clientAuth\nnameConstraints=permitted;DNS:example.com\n'
leaf int-ok ok.example.com
leaf int-eku eku.example.com
leaf int-nc nc.example.com
leaf int-nc in.allowed.test
leaf int-ekuany any.example.com
leaf int-ekunc ekunc.example.com

# What a browser-grade verifier says about each chain: the premise of the test.
browser() {
  openssl verify -purpose sslserver -CAfile "$D/root.pem" -untrusted "$D/$2.pem" \
    -verify_hostname "$1" "$D/$1.pem" >/dev/null 2>&1
}
for n in ok.example.com:int-ok in.allowed.test:int-nc any.example.com:int-ekuany; do
  browser "${n%%:*}" "${n#*:}" || fail "openssl rejects the control chain of ${n%%:*}"
done
for n in eku.example.com:int-eku nc.example.com:int-nc ekunc.example.com:int-ekunc; do
  browser "${n%%:*}" "${n#*:}" && fail "openssl accepts the chain of ${n%%:*}"
done

start_upstream ok "$D/ok.example.com.chain" "$D/ok.example.com.key"
start_upstream eku "$D/eku.example.com.chain" "$D/eku.example.com.key"
start_upstream nc "$D/nc.example.com.chain" "$D/nc.example.com.key"
start_upstream inside "$D/in.allowed.test.chain" "$D/in.allowed.test.key"
start_upstream any "$D/any.example.com.chain" "$D/any.example.com.key"
start_upstream ekunc "$D/ekunc.example.com.chain" "$D/ekunc.example.com.key"

mkdir -p "$T/secrets"
SECRET="sk-chain-$$"
printf '%s\n' "$SECRET" > "$T/secrets/KEY"
cat > "$T/config.json" <<EOF
{
  "rules": [
    { "name": "all", "match_hosts": ["*.example.com", "*.allowed.test"],
      "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] }
  ],
  "dns": { "remap": {
    "ok.example.com": "127.0.0.1:$ok_PORT",
    "eku.example.com": "127.0.0.1:$eku_PORT",
    "nc.example.com": "127.0.0.1:$nc_PORT",
    "in.allowed.test": "127.0.0.1:$inside_PORT",
    "any.example.com": "127.0.0.1:$any_PORT",
    "ekunc.example.com": "127.0.0.1:$ekunc_PORT"
  } }
}
EOF

# One jail for every request: a line per host with its status and the reason the
# proxy gave (X-Authproxy-Error), if any.
out=$(jail -v --config "$T/config.json" --secrets-dir "$T/secrets" --upstream-ca "$D/root.pem" \
  --user nobody -- sh -c '
for h in ok.example.com in.allowed.test any.example.com nc.example.com eku.example.com; do
  printf "%s " "$h"
  curl -sS -m 10 -o /dev/null -w "%{http_code} %header{x-authproxy-error}\n" \
    "https://$h/secret" 2>&1 || echo failed
done' 2>"$T/jail.log")
echo "$out"

status() { printf '%s\n' "$out" | awk -v h="$1" '$1 == h { print $2 }'; }
reason() { printf '%s\n' "$out" | awk -v h="$1" '$1 == h { print $3 }'; }

# Controls: a plain intermediate, a leaf within the constraints, an intermediate whose
# EKU includes serverAuth.
for u in ok:ok.example.com inside:in.allowed.test any:any.example.com; do
  assert_eq "$(status "${u#*:}")" "200" "${u#*:}: status"
  assert_eq "$(upq "${u%%:*}" 'hdr(reqs[-1], "Authorization")')" "$(jlist "Bearer $SECRET")" \
    "${u#*:}: injected"
done
pass "chains a browser accepts get the credential"

for u in eku:eku.example.com nc:nc.example.com; do
  assert_eq "$(status "${u#*:}")" "502" "${u#*:}: status"
  assert_eq "$(reason "${u#*:}")" "upstream_tls_failed" "${u#*:}: reason"
  assert_eq "$(upq "${u%%:*}" 'len(reqs)')" "0" "${u#*:}: request reached the upstream"
done
# The log names the reason (a sandbox's upstream TLS failures are logged 1st, 10th,
# ...: nc.example.com's is the first; a jail of its own shows eku.example.com's).
grep -q "nc.example.com is not within any permitted dNSName subtree (allowed.test)" \
  "$T/jail.log" || fail "the log does not say why nc.example.com was refused"
jail -v --config "$T/config.json" --secrets-dir "$T/secrets" --upstream-ca "$D/root.pem" \
  --user nobody -- curl -sS -m 10 -o /dev/null https://eku.example.com/ 2>"$T/jail2.log" || true
grep -q "extendedKeyUsage does not include serverAuth" "$T/jail2.log" ||
  fail "the log does not say why eku.example.com was refused"
assert_eq "$(upq eku 'len(reqs)')" "0" "eku.example.com: request reached the upstream"
# The leaf within the intermediate's nameConstraints: that check passing kept the
# reason of the extendedKeyUsage refusal before it (it blanked it).
jail -v --config "$T/config.json" --secrets-dir "$T/secrets" --upstream-ca "$D/root.pem" \
  --user nobody -- curl -sS -m 10 -o /dev/null https://ekunc.example.com/ 2>"$T/jail3.log" || true
grep -q "extendedKeyUsage does not include serverAuth" "$T/jail3.log" ||
  fail "the log does not say why ekunc.example.com was refused: $(grep -i ekunc "$T/jail3.log")"
assert_eq "$(upq ekunc 'len(reqs)')" "0" "ekunc.example.com: request reached the upstream"
pass "an intermediate's extendedKeyUsage and non-critical nameConstraints are applied"
