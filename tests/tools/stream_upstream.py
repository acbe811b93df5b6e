#!/usr/bin/env python3
"""An upstream for backpressure tests (HTTP/1.1, optionally TLS, on 127.0.0.1) that
streams large bodies without holding them in memory, and can refuse to read:

  GET /download?bytes=N   answers N bytes of 'x' (Content-Length), written in 64 KiB
                          pieces; progress is logged every 4 MiB, so a test sees
                          when the writes stall.
  POST /upload            reads the head, then reads nothing more until the file
                          --go exists; then reads the Content-Length body, logs its
                          size and SHA-256, and answers 200.

Every event is a JSON line in --log ({"event": ..., ...}).
"""
import argparse
import hashlib
import json
import os
import socket
import ssl
import threading
import time
import urllib.parse

LOCK = threading.Lock()


def log(f, **rec):
    rec["t"] = time.time()
    with LOCK:
        f.write(json.dumps(rec) + "\n")
        f.flush()


def read_head(sock):
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise EOFError
        buf += data
        if len(buf) > 65536:
            raise ValueError("head too large")
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    return method, target, headers, rest


def serve(sock, a, f):
    try:
        method, target, headers, rest = read_head(sock)
        url = urllib.parse.urlsplit(target)
        q = dict(urllib.parse.parse_qsl(url.query))
        log(f, event="request", method=method, path=url.path)
        if url.path == "/download":
            n = int(q.get("bytes", "0"))
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % n)
            piece = b"x" * 65536
            sent = 0
            while sent < n:
                k = min(len(piece), n - sent)
                sock.sendall(piece[:k])
                sent += k
                if sent % (4 << 20) == 0 or sent == n:
                    log(f, event="progress", sent=sent)
            log(f, event="download_done", sent=sent)
        elif url.path == "/upload":
            n = int(headers.get("content-length", "0"))
            log(f, event="upload_waiting")
            while not os.path.exists(a.go):
                time.sleep(0.05)
            h = hashlib.sha256(rest)
            got = len(rest)
            buf = bytearray(1 << 20)
            view = memoryview(buf)
            while got < n:
                k = sock.recv_into(view, min(len(buf), n - got))
                if k == 0:
                    break
                h.update(view[:k])
                got += k
            log(f, event="upload_done", bytes=got, sha256=h.hexdigest())
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
        else:
            sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    except (EOFError, ValueError, OSError, ssl.SSLError) as e:
        log(f, event="error", error=type(e).__name__)
    finally:
        try:
            sock.close()
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--go", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    a = ap.parse_args()
    f = open(a.log, "a")
    ctx = None
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    with open(a.port_file + ".tmp", "w") as p:
        p.write("%d\n" % ls.getsockname()[1])
    os.rename(a.port_file + ".tmp", a.port_file)
    while True:
        s, _ = ls.accept()
        if ctx is not None:
            try:
                s = ctx.wrap_socket(s, server_side=True)
            except (ssl.SSLError, OSError):
                s.close()
                continue
        threading.Thread(target=serve, args=(s, a, f), daemon=True).start()


if __name__ == "__main__":
    main()
