"""Writes the seed corpus of tests/fuzz/fuzz_upstream_screen.c into the directory given:
what a real OpenSSL server (Python's ssl, TLS 1.2) sends from ServerHello to its
ChangeCipherSpec and Finished, with an RSA certificate, an ECDSA one and a chain
(its root trusted), and the hostile chains of tests/adversarial/test_upstream_chain_*.sh,
smaller. Each file: the number of cuts, the cuts, the trusted CAs, the server's bytes
(the input format the target's comment describes)."""
import datetime, secrets, ssl, struct, sys, os, tempfile
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

out = sys.argv[1]
now = datetime.datetime.utcnow()
def name(s): return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, s)])
def build(subject, issuer, pub, signer, serial, ca, nb=None, na=None, ku=None, algo=hashes.SHA256()):
    b = (x509.CertificateBuilder().subject_name(subject if isinstance(subject, x509.Name) else name(subject))
         .issuer_name(issuer if isinstance(issuer, x509.Name) else name(issuer)).public_key(pub).serial_number(serial)
         .not_valid_before(nb or now - datetime.timedelta(days=1))
         .not_valid_after(na or now + datetime.timedelta(days=36500)))
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("api.example.com")]), False)
    if ku is not None:
        b = b.add_extension(ku, True)
    return b.sign(signer, algo)
def der(c): return c.public_bytes(serialization.Encoding.DER)
def pem(c): return c.public_bytes(serialization.Encoding.PEM)
def keypem(k): return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())

def capture(chain, key, tag):
    d = tempfile.mkdtemp()
    open(d + "/c.pem", "wb").write(b"".join(pem(c) for c in chain))
    open(d + "/k.pem", "wb").write(keypem(key))
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(d + "/c.pem", d + "/k.pem")
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    cctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ci, co, si, so = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = cctx.wrap_bio(ci, co, server_hostname="api.example.com")
    s = sctx.wrap_bio(si, so, server_side=True)
    from_server = b""
    for _ in range(10):
        for x in (c, s):
            try: x.do_handshake()
            except ssl.SSLWantReadError: pass
        si.write(co.read())
        b = so.read(); from_server += b; ci.write(b)
    return from_server

def seed(fname, stream, trust=(), cuts=()):
    t = b"".join(struct.pack(">I", len(x))[1:] + x for x in trust)
    hdr = bytes([len(cuts)]) + b"".join(struct.pack(">H", c) for c in cuts) + struct.pack(">H", len(t))
    open(os.path.join(out, fname), "wb").write(hdr + t + stream)
    print(fname, len(hdr + t + stream))

def certmsg(chain):
    lst = b"".join(struct.pack(">I", len(x))[1:] + x for x in chain)
    body = struct.pack(">I", len(lst))[1:] + lst
    msg = b"\x0b" + struct.pack(">I", len(body))[1:] + body
    return b"\x16\x03\x03" + struct.pack(">H", len(msg)) + msg

# RSA leaf, self-signed
rk = rsa.generate_private_key(public_exponent=65537, key_size=2048)
rc = build("api.example.com", "api.example.com", rk.public_key(), rk, 1, False)
rsa_flight = capture([rc], rk, "rsa")
seed("openssl-rsa", rsa_flight, cuts=(3, 700))
# ECDSA leaf
ek = ec.generate_private_key(ec.SECP256R1())
ecc = build("api.example.com", "api.example.com", ek.public_key(), ek, 2, False)
seed("openssl-ecdsa", capture([ecc], ek, "ec"), cuts=(5, 6, 200))
# chain: root -> intermediate -> leaf, root trusted
rootk = ec.generate_private_key(ec.SECP256R1()); intk = ec.generate_private_key(ec.SECP256R1()); lk = ec.generate_private_key(ec.SECP256R1())
root = build("Test Root", "Test Root", rootk.public_key(), rootk, 10, True)
inter = build("Test Intermediate", "Test Root", intk.public_key(), rootk, 11, True)
leaf = build("api.example.com", "Test Intermediate", lk.public_key(), intk, 12, False)
seed("openssl-chain", capture([leaf, inter, root], lk, "chain"), trust=[der(root)], cuts=(1,))
# ServerHello record of the RSA flight, for the hostile ones
sh_len = struct.unpack(">H", rsa_flight[3:5])[0]
sh = rsa_flight[:5 + sh_len]
# expired same-name CAs (test_upstream_chain_search.sh, smaller)
sk = ec.generate_private_key(ec.SECP256R1())
ch = [der(build("api.example.com", "X", lk.public_key(), sk, 1, False))]
for i in range(12):
    ch.append(der(build("X", "X", sk.public_key(), sk, 100 + i, True, na=now - datetime.timedelta(days=1))))
seed("hostile-search", sh + certmsg(ch), cuts=(len(sh) + 2,))

# a long RSA exponent (test_upstream_chain_cost.sh, smaller)
n = secrets.randbits(2048) | (1 << 2047) | 1
e = secrets.randbits(64) | (1 << 63) | 1
bigk = rsa.RSAPublicNumbers(e, n).public_key()
ch = [der(build("api.example.com", "ca 1", lk.public_key(), sk, 1, False)),
      der(build("ca 1", "ca 2", bigk, sk, 2, True))]
seed("hostile-exponent", sh + certmsg(ch), cuts=(4, len(sh) + 300))
# the screen follows a decoy the search skips: a valid "X" CA that may not sign
# certificates (keyUsage without keyCertSign), then the real search through "Z"
decoy_ku = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                         crl_sign=False, encipher_only=False, decipher_only=False)
ch = [der(build("api.example.com", "X", lk.public_key(), sk, 1, False)),
      der(build("X", "Y", sk.public_key(), sk, 2, True, ku=decoy_ku)),
      der(build("X", "Z", sk.public_key(), sk, 3, True))]
for i in range(10):
    ch.append(der(build("Z", "Z", sk.public_key(), sk, 100 + i, True, na=now - datetime.timedelta(days=1))))
seed("hostile-decoy-keyusage", sh + certmsg(ch))
# ... or whose subject is "X" in another string type (IA5String): mbedTLS names differ
ia5 = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "X", _type=x509.name._ASN1Type.IA5String)])
ch = [der(build("api.example.com", "X", lk.public_key(), sk, 1, False)),
      der(build(ia5, "Y", sk.public_key(), sk, 2, True)),
      der(build("X", "Z", sk.public_key(), sk, 3, True))]
for i in range(10):
    ch.append(der(build("Z", "Z", sk.public_key(), sk, 100 + i, True, na=now - datetime.timedelta(days=1))))
seed("hostile-decoy-strtype", sh + certmsg(ch))
# malformed flights mbedTLS refuses, which the screen must pass over without reading
# out of bounds: a certificate entry whose length overruns its message ...
ccs = b"\x14\x03\x03\x00\x01\x01"
lst = b"\xff\xff\x00" + der(leaf)
body = struct.pack(">I", len(lst))[1:] + lst
msg = b"\x0b" + struct.pack(">I", len(body))[1:] + body
seed("malformed-entry-overrun", sh + b"\x16\x03\x03" + struct.pack(">H", len(msg)) + msg + ccs,
     cuts=(len(sh) + 9,))
# ... and a Certificate message split across two records (mbedTLS 2.28 refuses those)
rec = certmsg([der(leaf), der(inter)])[5:]
half = len(rec) // 2
seed("message-across-records",
     sh + b"\x16\x03\x03" + struct.pack(">H", half) + rec[:half] +
     b"\x16\x03\x03" + struct.pack(">H", len(rec) - half) + rec[half:] + ccs, cuts=(len(sh) + 4,))
