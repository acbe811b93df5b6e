#!/usr/bin/env python3
"""Regenerates the ClientHello fixtures in this directory.

Each client below is pointed at a listener on 127.0.0.1 that records the bytes the
client sends first (the TLS records carrying its ClientHello), then hangs up. The
clients are the real programs installed on the build machine (curl, openssl
s_client, python's ssl module, node's tls module), so the fixtures change when they
are upgraded; the unit tests only assert properties every version keeps.

Usage: python3 capture.py [OUTDIR]   (default: this directory)
"""
import os
import socket
import subprocess
import sys
import time

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))

PY_CLIENT = r"""
import socket, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
alpn = sys.argv[3].split(",") if sys.argv[3] else None
if alpn:
    ctx.set_alpn_protocols(alpn)
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
try:
    ctx.wrap_socket(s, server_hostname=sys.argv[2] or None)
except Exception:
    pass
"""

NODE_CLIENT = r"""
const tls = require('tls');
const s = tls.connect({host: '127.0.0.1', port: +process.argv[1],
  servername: process.argv[2], ALPNProtocols: ['h2', 'http/1.1'],
  rejectUnauthorized: false});
s.on('error', () => process.exit(0));
setTimeout(() => process.exit(0), 5000);
"""

CLIENTS = {
    "curl.bin": ["curl", "-sk", "--max-time", "5", "--resolve",
                 "example.com:{port}:127.0.0.1", "https://example.com:{port}/"],
    "curl_http11.bin": ["curl", "-sk", "--http1.1", "--max-time", "5", "--resolve",
                        "api.github.com:{port}:127.0.0.1", "https://api.github.com:{port}/"],
    "openssl.bin": ["openssl", "s_client", "-connect", "127.0.0.1:{port}",
                    "-servername", "api.openai.com", "-alpn", "h2,http/1.1"],
    "openssl_tls12.bin": ["openssl", "s_client", "-tls1_2", "-connect", "127.0.0.1:{port}",
                          "-servername", "pypi.org"],
    "openssl_nosni.bin": ["openssl", "s_client", "-noservername",
                          "-connect", "127.0.0.1:{port}"],
    "openssl_ipsni.bin": ["openssl", "s_client", "-connect", "127.0.0.1:{port}",
                          "-servername", "192.0.2.7"],
    # -max_send_frag 512 makes OpenSSL split its (padded, long ALPN list) hello over
    # two records: a real fragmented hello.
    "openssl_frag.bin": ["openssl", "s_client", "-connect", "127.0.0.1:{port}",
                         "-servername", "fragmented.example.org", "-max_send_frag", "512",
                         "-alpn", ",".join(["h2", "http/1.1"] + ["proto-%02d-padding-padding" % i
                                                                for i in range(20)])],
    "python.bin": [sys.executable, "-c", PY_CLIENT, "{port}", "files.pythonhosted.org",
                   "http/1.1"],
    "python_nosni.bin": [sys.executable, "-c", PY_CLIENT, "{port}", "", ""],
    "node.bin": ["node", "-e", NODE_CLIENT, "--", "{port}", "registry.npmjs.org"],
}


def hello_complete(data):
    """True once the records in data hold a whole handshake message."""
    pos, hs = 0, b""
    while pos + 5 <= len(data):
        rlen = int.from_bytes(data[pos + 3:pos + 5], "big")
        if pos + 5 + rlen > len(data):
            return False
        hs += data[pos + 5:pos + 5 + rlen]
        pos += 5 + rlen
        if len(hs) >= 4 and len(hs) >= 4 + int.from_bytes(hs[1:4], "big"):
            return True
    return False


def capture(name, argv):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(10)
    port = srv.getsockname()[1]
    argv = [a.replace("{port}", str(port)) for a in argv]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    conn, _ = srv.accept()
    conn.settimeout(1)
    data = b""
    deadline = time.time() + 10
    while not hello_complete(data) and time.time() < deadline:
        try:
            chunk = conn.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        data += chunk
    conn.close()
    srv.close()
    proc.kill()
    proc.wait()
    if not hello_complete(data):
        raise SystemExit("%s: no complete ClientHello captured" % name)
    # Keep only the records of the hello (a client may already have sent more).
    pos, hs = 0, 0
    while True:
        rlen = int.from_bytes(data[pos + 3:pos + 5], "big")
        hs += rlen
        pos += 5 + rlen
        if hs >= 4 + int.from_bytes(data[6:9], "big"):
            break
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data[:pos])
    print("%-22s %5d bytes  %s" % (name, pos, os.path.basename(argv[0])))


for fname, cmd in CLIENTS.items():
    capture(fname, cmd)
