#!/usr/bin/env bash
# An upstream cannot make the proxy spend its shared loop on finite-field
# Diffie-Hellman of the upstream's choosing. With DHE the server picks the group, and
# mbedTLS accepts any modulus up to 8192 bits: three exponentiations of 0.46 s each,
# on the one loop that serves every sandbox. An upstream preferring DHE with an
# 8192-bit group (its own, or whoever answers on the path: the group is not signed
# by the certificate's CA) held every other sandbox's requests for about a second
# per connection (a plain request to another host took 2.2 s beside three such
# handshakes). The proxy no longer offers DHE suites, as browsers do not; such an
# upstream gets ECDHE, and one with nothing else fails its handshake.
#
#   jail: curl --nft--> authproxy (in-process) --TLS--> dhe server (RSA certificate,
#                                                        prefers DHE, 8192-bit group)
. "$(dirname "$0")/../integration/lib.sh"

mkdir -p "$T/ca"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=authproxy test RSA CA $$" \
  -keyout "$T/ca/ca.key" -out "$T/ca/ca.pem" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=api.example.com" -keyout "$T/ca/server.key" \
  -out "$T/ca/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:api.example.com,DNS:only.example.com\nextendedKeyUsage=serverAuth\n' \
  > "$T/ca/ext.cnf"
openssl x509 -req -in "$T/ca/server.csr" -CA "$T/ca/ca.pem" -CAkey "$T/ca/ca.key" \
  -CAcreateserial -days 2 -extfile "$T/ca/ext.cnf" -out "$T/ca/server.pem" 2>/dev/null

cat > "$T/dhe_server.py" <<'PYEOF'
# PORT_FILE CIPHERS: a TLS 1.2 server that prefers the first of CIPHERS, with an
# 8192-bit DH group (any odd modulus: no client checks that it is prime); logs the
# suite of each connection on stdout, answers "ok".
import base64, socket, ssl, sys, threading
def der(tag, b):
    n = len(b)
    return bytes([tag]) + (bytes([n]) if n < 128 else
                           bytes([0x80 | ((n.bit_length() + 7) // 8)]) +
                           n.to_bytes((n.bit_length() + 7) // 8, "big")) + b
def der_int(v):
    return der(2, v.to_bytes((v.bit_length() + 8) // 8, "big"))
dh = der(0x30, der_int((1 << 8191) | 12345) + der_int(2))
with open(sys.argv[1] + ".dh", "w") as f:
    f.write("-----BEGIN DH PARAMETERS-----\n%s\n-----END DH PARAMETERS-----\n"
            % base64.encodebytes(dh).decode().strip())
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
ctx.load_cert_chain(sys.argv[3], sys.argv[4])
ctx.load_dh_params(sys.argv[1] + ".dh")
ctx.set_ciphers(sys.argv[2])
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(16)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(ls.getsockname()[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
def serve(s):
    try:
        t = ctx.wrap_socket(s, server_side=True)
        print(t.cipher()[0], flush=True)
        t.recv(65536)
        t.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        t.close()
    except (OSError, ssl.SSLError) as e:
        print("error", e, flush=True)
while True:
    threading.Thread(target=serve, args=(ls.accept()[0],), daemon=True).start()
PYEOF
start() {
  "$PY" "$T/dhe_server.py" "$T/$1.port" "$2" "$T/ca/server.pem" "$T/ca/server.key" \
    > "$T/$1.out" 2> "$T/$1.log" &
  PIDS+=($!)
  wait_for "[ -s '$T/$1.port' ]" 10
}
start both "DHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"
start only "DHE-RSA-AES128-GCM-SHA256"
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com", "only.example.com"],
    "headers": [ { "name": "X-Team", "type": "plaintext", "value": "agents" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$(cat "$T/both.port")",
                      "only.example.com": "127.0.0.1:$(cat "$T/only.port")" } } }
EOF

out=$(jail --config "$T/config.json" --upstream-ca "$T/ca/ca.pem" --user nobody -- \
  sh -c 'curl -sS -m 20 https://api.example.com/; echo;
         curl -sS -m 20 -o /dev/null -w "%{http_code}" https://only.example.com/')
assert_eq "$(head -n 1 "$T/both.out")" "ECDHE-RSA-AES128-GCM-SHA256" \
  "the suite an upstream preferring DHE got"
assert_eq "$out" "$(printf 'ok\n502')" "the answers"
pass "upstreams get ECDHE, never DHE of their choosing; DHE-only ones are a 502"
