#!/usr/bin/env python3
"""An upstream that receives uploads, for integration tests: HTTP/1.1 (optionally over
TLS) on 127.0.0.1. Bodies are streamed and hashed, never held whole, so a test can send
large ones. Every request is logged as one JSON line to --log (method, path, body
length and sha256, how the request ended, what it was answered).

An `Expect: 100-continue` request is answered `100 Continue` before its body is read,
except where a path below answers without reading it.

Paths:
  /sink[?rate=B][&continue=0]
                        reads the body (Content-Length or chunked), B bytes a second
                        at most (default: as fast as it comes), then answers 200 with
                        {"len": N, "sha256": HEX}; with continue=0 an Expect:
                        100-continue is never answered (a server whose application
                        reads the body, which sends the 100, only once it is ready)
  /reject?status=NNN[&close=1][&drain=S]
                        answers NNN at once, without reading the body (a bad key, a
                        file too large), with Connection: close if close=1; then, as
                        nginx's lingering close, reads and discards what comes for S
                        seconds (default 5) or until the peer's end, and closes
  /die?after=N[&how=fin|rst]
                        reads N bytes of the body, then closes the connection without
                        answering (its unread bytes make that a reset too), resets it
                        (rst), or only half-closes it (half: a FIN, reading on)
"""
import argparse
import hashlib
import json
import os
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse

LOCK = threading.Lock()
LOG = None
IDS = iter(range(1, 1 << 62))


def log(rec):
    rec["t"] = time.time()
    line = json.dumps(rec, sort_keys=True)
    with LOCK:
        LOG.write(line + "\n")
        LOG.flush()


class Conn:
    def __init__(self, sock, cid):
        self.sock = sock
        self.cid = cid
        self.buf = b""
        self.rate = 0
        self.start = 0.0
        self.got = 0

    def fill(self, n=65536):
        if self.rate:
            # Paced: never further ahead than the rate allows.
            n = min(n, 16384)
            ahead = self.got / self.rate - (time.time() - self.start)
            if ahead > 0:
                time.sleep(ahead)
        data = self.sock.recv(n)
        if not data:
            raise EOFError
        self.got += len(data)
        self.buf += data

    def line(self, limit=65536):
        while b"\n" not in self.buf:
            if len(self.buf) > limit:
                raise ValueError("line too long")
            self.fill()
        i = self.buf.index(b"\n") + 1
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def head(self):
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise ValueError("head too large")
            self.fill()
        i = self.buf.index(b"\r\n\r\n") + 4
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def body_bytes(self, n, sink, limit=None):
        """Feeds n body bytes to sink (stopping after limit bytes); returns the count."""
        done = 0
        while done < n and (limit is None or done < limit):
            if not self.buf:
                self.fill()
            take = min(len(self.buf), n - done)
            if limit is not None:
                take = min(take, limit - done)
            sink(self.buf[:take])
            self.buf = self.buf[take:]
            done += take
        return done


def read_body(c, headers, sink, limit=None):
    """Reads a request body into sink; returns (bytes, complete)."""
    te = [v for k, v in headers if k.lower() == "transfer-encoding"]
    cl = [v for k, v in headers if k.lower() == "content-length"]
    total = 0
    if te:
        while True:
            size = int(c.line().split(b";")[0].strip(), 16)
            if size == 0:
                while c.line() != b"\r\n":
                    pass
                return total, True
            got = c.body_bytes(size, sink, None if limit is None else limit - total)
            total += got
            if got < size:
                return total, False
            while len(c.buf) < 2:
                c.fill()
            c.buf = c.buf[2:]
    if cl:
        n = int(cl[0])
        got = c.body_bytes(n, sink, limit)
        return got, got == n
    return 0, True


def answer(c, status, body, close=False):
    head = "HTTP/1.1 %d Status\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
        status, len(body))
    if close:
        head += "Connection: close\r\n"
    c.sock.sendall(head.encode() + b"\r\n" + body)


def handle(c):
    while True:
        try:
            head = c.head()
        except EOFError:
            return
        lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = []
        for ln in lines[1:]:
            k, v = ln.split(":", 1)
            headers.append((k, v.strip()))
        lower = {k.lower(): v for k, v in headers}
        url = urllib.parse.urlsplit(target)
        q = dict(urllib.parse.parse_qsl(url.query))
        expect = lower.get("expect", "").lower() == "100-continue"
        rec = {"event": "request", "conn": c.cid, "method": method, "path": url.path,
               "expect": expect, "content_length": lower.get("content-length"),
               "chunked": "transfer-encoding" in lower}
        if url.path == "/reject":
            status = int(q.get("status", "401"))
            close = q.get("close") == "1"
            answer(c, status, b'{"error":"rejected"}\n', close)
            rec.update(status=status, answered_unread=True)
            log(rec)
            end = time.time() + float(q.get("drain", "5"))
            c.sock.settimeout(0.2)
            drained = 0
            while time.time() < end:
                try:
                    d = c.sock.recv(65536)
                except (socket.timeout, ssl.SSLWantReadError):
                    continue
                except OSError:
                    break
                if not d:
                    break
                drained += len(d)
            log({"event": "drained", "conn": c.cid, "bytes": drained})
            return
        if expect and q.get("continue") != "0":
            c.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        if url.path == "/die":
            n, _ = read_body(c, headers, lambda b: None, int(q.get("after", "0")))
            rec.update(body_len=n, died=q.get("how", "fin"))
            log(rec)
            if q.get("how") == "rst":
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif q.get("how") == "half":
                # A bare FIN (no answer, no close_notify), reading on: what is left
                # then reaches a reader, not a reset.
                c.sock.shutdown(socket.SHUT_WR)
                c.sock.settimeout(5)
                try:
                    while c.sock.recv(65536):
                        pass
                except OSError:
                    pass
            return
        h = hashlib.sha256()
        c.rate = int(q.get("rate", "0"))
        c.start = time.time()
        c.got = len(c.buf)
        try:
            n, complete = read_body(c, headers, h.update)
        except EOFError:
            rec.update(body_complete=False, cut=True)
            log(rec)
            return
        c.rate = 0
        rec.update(body_len=n, body_sha256=h.hexdigest(), body_complete=complete, status=200)
        log(rec)
        answer(c, 200, (json.dumps({"len": n, "sha256": h.hexdigest()}) + "\n").encode(),
               lower.get("connection", "").lower() == "close")


def serve_conn(sock, ctx):
    cid = next(IDS)
    log({"event": "conn", "conn": cid})
    try:
        if ctx is not None:
            sock = ctx.wrap_socket(sock, server_side=True)
        c = Conn(sock, cid)
        handle(c)
    except (OSError, ssl.SSLError, EOFError, ValueError) as e:
        log({"event": "error", "conn": cid, "error": repr(e)})
    finally:
        try:
            sock.close()
        except OSError:
            pass
        log({"event": "closed", "conn": cid})


def main():
    global LOG
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--rcvbuf", type=int, default=0,
                    help="SO_RCVBUF of its connections: a small one keeps what a slow "
                         "reader has not read yet in the sender's queue")
    a = ap.parse_args()
    LOG = open(a.log, "a")
    ctx = None
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if a.rcvbuf:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, a.rcvbuf)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(srv.getsockname()[1]))
    os.rename(a.port_file + ".tmp", a.port_file)
    while True:
        s, _ = srv.accept()
        threading.Thread(target=serve_conn, args=(s, ctx), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
