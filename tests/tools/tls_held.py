#!/usr/bin/env python3
"""A TLS 1.2 upstream whose first flight waits for the test: tls_held.py DIR CERT KEY N.

Listens on 127.0.0.1 (its port in DIR/up.port), takes one connection and reads its
ClientHello, then creates DIR/hello. Its first flight (ServerHello .. ServerHelloDone)
goes out in N pieces: piece K once DIR/go.K exists, after which it creates DIR/sent.K.
Then it finishes the handshake, reads a request and answers 200 "ok". The test stops
the proxy (SIGSTOP) around each piece, to make its event loop late on purpose.
A peer that goes away ends it quietly; what happened is on stderr.
"""
import os
import socket
import ssl
import sys
import time


def wait_file(path, secs=30):
    for _ in range(int(secs / 0.05)):
        if os.path.exists(path):
            return
        time.sleep(0.05)
    sys.exit("tls_held: timed out waiting for %s" % path)


def touch(path):
    open(path, "w").close()


def pump(c, inc, out):
    """Sends what the TLS object wrote; reads more for it. False at the peer's end."""
    data = out.read()
    if data:
        c.sendall(data)
    got = c.recv(65536)
    if not got:
        return False
    inc.write(got)
    return True


def main():
    d, cert, key, pieces = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(8)
    with open(d + "/up.port.tmp", "w") as f:
        f.write("%d\n" % ls.getsockname()[1])
    os.rename(d + "/up.port.tmp", d + "/up.port")
    c, _ = ls.accept()
    c.settimeout(30)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out, server_side=True)
    flight = b""
    while not flight:                   # the whole ClientHello, and the answer to it
        got = c.recv(65536)
        if not got:
            sys.exit("tls_held: the proxy closed before its ClientHello")
        inc.write(got)
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        flight = out.read()
    touch(d + "/hello")
    cuts = [len(flight) * k // pieces for k in range(pieces + 1)]
    try:
        for k in range(pieces):
            wait_file("%s/go.%d" % (d, k + 1))
            c.sendall(flight[cuts[k]:cuts[k + 1]])
            touch("%s/sent.%d" % (d, k + 1))
        print("tls_held: a flight of %d bytes sent in %d pieces" % (len(flight), pieces),
              file=sys.stderr)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if not pump(c, inc, out):
                    sys.exit("tls_held: the proxy closed in the handshake")
        request = b""
        while b"\r\n\r\n" not in request:
            try:
                request += tls.read(65536)
            except ssl.SSLWantReadError:
                if not pump(c, inc, out):
                    sys.exit("tls_held: the proxy closed before its request")
        tls.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        c.sendall(out.read())
        print("tls_held: answered 200", file=sys.stderr)
    except (OSError, ssl.SSLError) as e:
        sys.exit("tls_held: %s" % e)
    c.close()


if __name__ == "__main__":
    main()
