#!/usr/bin/env python3
"""A fake upstream for integration tests: HTTP/1.1 (optionally over TLS) on 127.0.0.1.

Every request is logged as one JSON line (method, target, headers with values, body
size and digest, connection id, TLS SNI) to --log, which tests read on the host. The
answer sent back carries header *names* only, never values: the sandbox must not learn
an injected secret from the echo.

Paths:
  /sse?n=N&delay=S[&size=B][&cut=1|&cut=rst|&cut=record]
                        text/event-stream, N events S seconds apart (chunked), each
                        padded with B bytes; with cut=1 the connection ends after the
                        last event without the last chunk (the stream cut short), with
                        cut=rst it is reset there, once the proxy has every byte; with
                        cut=record (TLS) a bad record follows the last event, and the
                        connection ends once the peer has closed it
  /ws[?cut=1]           WebSocket upgrade; echoes text frames back; after the close
                        frames, ends the connection (over TLS: without a close_notify
                        with cut=1)
  /echo?split=N         reflects the request headers WITH values, in two writes
  /echo-token           401 quoting the Authorization credential without its scheme
  /big?bytes=N          N bytes of body (Content-Length)
  /chunked?n=N          N chunks
  /slow?delay=S         waits S seconds before answering
  /slow?go=FILE         waits until FILE exists (at most 30 s) before answering
  /think?delay=S        works S seconds on the answer, watching the connection as Go's
                        net/http or an ASGI server does: if the client's end (EOF)
                        comes first, logs {"event": "client_gone"} and stops
  /status/NNN           answers with that status
  /exact?r=B64[&at=N,..][&close=1|&rst=1]
                        answers exactly the bytes B64 (URL-safe base64) encodes,
                        written in pieces split at offsets N,... 0.1 s apart; then
                        closes the connection with close=1, resets it with rst=1
  /not-modified         304 with a Content-Length (allowed, RFC 9110 8.6) and no body
  /stray[?same=1]       answers "ok" (Content-Length: 3), then sends bytes it should not
                        (0.1 s later, or in the same write)
  /close                answers with Connection: close and no length (read to EOF);
                        over TLS the close has a close_notify, as every clean end does
  /cut                  the same, ended without a close_notify (a truncation on the path)
  /ka-close?after=S[&delay=D][&go=FILE]
                        answers keep-alive (D seconds after the request, or once
                        FILE exists, at most 30 s), then closes the idle connection
                        S seconds later (a server's keep-alive timeout)
  /drop-next            answers; the next request on the same connection is logged
                        and then dropped: the connection closes without an answer
  anything else         200 with a JSON summary of the request; with ?keep=1 the
                        connection stays open whatever the request said (HTTP/1.0 too)
Every accepted connection also logs {"event":"conn"} and, when it ends, the number of
bytes received, so tests can prove that nothing reached the upstream.
"""
import argparse
import base64
import fcntl
import hashlib
import json
import os
import select
import socket
import ssl
import struct
import sys
import termios
import threading
import time
import urllib.parse

LOCK = threading.Lock()
LOG = None
CONN_IDS = iter(range(1, 1 << 62))


def log(rec):
    rec["t"] = time.time()
    line = json.dumps(rec, sort_keys=True)
    with LOCK:
        LOG.write(line + "\n")
        LOG.flush()


class Conn:
    def __init__(self, sock, cid, sni):
        self.sock = sock
        self.cid = cid
        self.sni = sni
        self.buf = b""
        self.received = 0
        self.drop_next = False
        self.close_notify = True  # TLS: end with a close_notify alert (a clean close)

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.received += len(data)
        self.buf += data

    def read_until(self, marker, limit=1 << 20):
        while marker not in self.buf:
            if len(self.buf) > limit:
                raise ValueError("head too large")
            self.fill()
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, data):
        self.sock.sendall(data)


def read_body(c, headers):
    te = [v for k, v in headers if k.lower() == "transfer-encoding"]
    cl = [v for k, v in headers if k.lower() == "content-length"]
    if te:
        body = b""
        while True:
            line = c.read_until(b"\r\n")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                # Trailer fields, then the empty line that ends the message.
                while c.read_until(b"\r\n") != b"\r\n":
                    pass
                return body
            body += c.read_exact(size)
            c.read_exact(2)
    if cl:
        return c.read_exact(int(cl[0]))
    return b""


def respond(c, status, body, ctype="application/json", extra=(), close=False):
    reason = {200: "OK", 101: "Switching Protocols", 400: "Bad Request",
              401: "Unauthorized", 404: "Not Found", 500: "Internal Server Error"}
    head = "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
        status, reason.get(status, "Status"), ctype, len(body))
    for k, v in extra:
        head += "%s: %s\r\n" % (k, v)
    if close:
        head += "Connection: close\r\n"
    c.send(head.encode() + b"\r\n" + body)


def ws_frames(c):
    while True:
        h = c.read_exact(2)
        op, ln = h[0] & 0x0F, h[1] & 0x7F
        masked = h[1] & 0x80
        if ln == 126:
            ln = struct.unpack("!H", c.read_exact(2))[0]
        elif ln == 127:
            ln = struct.unpack("!Q", c.read_exact(8))[0]
        mask = c.read_exact(4) if masked else b"\0\0\0\0"
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(c.read_exact(ln)))
        if op == 8:
            c.send(b"\x88\x00")
            return
        if op == 1:
            log({"event": "ws_message", "conn": c.cid, "data": data.decode("utf-8", "replace")})
            reply = b"echo:" + data
            c.send(bytes([0x81, len(reply)]) + reply)


def handle(c):
    while True:
        try:
            head = c.read_until(b"\r\n\r\n")
        except EOFError:
            return
        lines = head[:-4].decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers.append((k, v.strip()))
        body = read_body(c, headers)
        url = urllib.parse.urlsplit(target)
        q = dict(urllib.parse.parse_qsl(url.query))
        log({"event": "request", "conn": c.cid, "sni": c.sni, "method": method,
             "target": target, "path": url.path, "version": version,
             "headers": headers, "body_len": len(body),
             "body_sha256": hashlib.sha256(body).hexdigest()})
        if c.drop_next:
            log({"event": "dropped", "conn": c.cid, "path": url.path})
            return
        lower = {k.lower(): v for k, v in headers}
        close = lower.get("connection", "").lower() == "close" or version == "HTTP/1.0"
        if q.get("keep") == "1":
            close = False  # a server that keeps any connection open, HTTP/1.0 too
        p = url.path
        if p == "/sse":
            n, delay = int(q.get("n", "3")), float(q.get("delay", "0.2"))
            pad = "x" * int(q.get("size", "0"))
            c.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                   b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(n):
                ev = ("data: event %d%s\n\n" % (i, pad)).encode()
                c.send(b"%x\r\n%s\r\n" % (len(ev), ev))
                log({"event": "sse_sent", "conn": c.cid, "index": i})
                time.sleep(delay)
            if q.get("cut") in ("1", "rst", "record"):
                if q.get("cut") == "record":
                    # An application-data record that no key decrypts, written under
                    # the TLS layer: the peer's TLS fails there (as at a fatal alert),
                    # after every record before it. Then wait for the peer's end, so
                    # that no reset of ours takes back what its kernel holds.
                    bad = b"\x17\x03\x03\x00\x28" + b"\x00" * 40
                    fd = c.sock.fileno()
                    for _ in range(100):
                        if not bad:
                            break
                        select.select([], [fd], [], 10)
                        try:
                            bad = bad[os.write(fd, bad):]
                        except BlockingIOError:
                            pass
                    c.close_notify = False
                    log({"event": "sse_cut", "conn": c.cid})
                    try:
                        while c.sock.recv(65536):
                            pass
                    except (OSError, ssl.SSLError):
                        pass
                    return
                if q.get("cut") == "rst":
                    # A reset once the peer has every byte (what waits in the send
                    # queue at a reset is lost), without a close_notify; a moment
                    # later, so that the peer has read them (libuv reports a reset
                    # that comes with the last bytes read as an end: a FIN).
                    for _ in range(200):
                        if struct.unpack("i", fcntl.ioctl(c.sock.fileno(), termios.TIOCOUTQ,
                                                          b"\0\0\0\0"))[0] == 0:
                            break
                        time.sleep(0.05)
                    time.sleep(0.2)
                    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                      struct.pack("ii", 1, 0))
                    c.close_notify = False
                log({"event": "sse_cut", "conn": c.cid})
                return
            c.send(b"0\r\n\r\n")
        elif p == "/ws" and lower.get("upgrade", "").lower() == "websocket":
            key = lower.get("sec-websocket-key", "")
            acc = base64.b64encode(hashlib.sha1(
                (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            c.send(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % acc).encode())
            ws_frames(c)
            c.close_notify = q.get("cut") != "1"
            return
        elif p == "/echo":
            # Reflects the request headers with their values (a debug endpoint, the
            # kind that would leak an injected credential), sent in two writes split
            # at ?split=N so a value can straddle them.
            body = (json.dumps({"headers": headers}) + "\n").encode()
            n = int(q.get("split", str(len(body) // 2)))
            c.send(("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    "Content-Length: %d\r\n\r\n" % len(body)).encode() + body[:n])
            time.sleep(0.05)
            c.send(body[n:])
        elif p == "/echo-token":
            # An error page that quotes the credential it refuses, without its
            # scheme ("Bearer "), as many APIs do.
            auth = [v for k, v in headers if k.lower() == "authorization"]
            cred = auth[0].split(" ", 1)[-1] if auth else ""
            respond(c, 401, (json.dumps({"error": "invalid token: %s" % cred}) + "\n").encode())
        elif p == "/big":
            respond(c, 200, b"x" * int(q.get("bytes", "1048576")), "application/octet-stream")
        elif p == "/chunked":
            c.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n")
            for i in range(int(q.get("n", "3"))):
                part = b"chunk %d\n" % i
                c.send(b"%x\r\n%s\r\n" % (len(part), part))
            c.send(b"0\r\n\r\n")
        elif p == "/slow":
            time.sleep(float(q.get("delay", "1" if "go" not in q else "0")))
            for _ in range(600 if "go" in q else 0):
                if os.path.exists(q["go"]):
                    break
                time.sleep(0.05)
            respond(c, 200, b'{"slow":true}\n')
        elif p == "/think":
            end = time.time() + float(q.get("delay", "1"))
            gone = False
            while not gone and time.time() < end:
                ready, _, _ = select.select([c.sock], [], [], min(0.05, max(0.0, end - time.time())))
                if ready:
                    try:
                        c.fill()
                    except (EOFError, OSError):
                        gone = True
            if gone:
                log({"event": "client_gone", "conn": c.cid, "path": p})
                return
            respond(c, 200, b'{"thought":true}\n')
        elif p == "/not-modified":
            # RFC 9110 8.6: a 304 may carry the Content-Length of the representation
            # it stands for; no body follows.
            c.send(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n"
                   b"Content-Length: 1234\r\n\r\n")
        elif p == "/stray":
            # Out of step: bytes past the Content-Length, in a later segment, or in
            # the same one with ?same=1.
            if q.get("same") == "1":
                c.send(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\nstray bytes")
            else:
                respond(c, 200, b"ok\n")
                time.sleep(0.1)
                c.send(b"stray bytes")
        elif p == "/exact":
            # Exactly the bytes of ?r= (URL-safe base64), in writes split at ?at=N,
            # M,... (0.1 s apart); then the connection closes with ?close=1.
            raw = base64.urlsafe_b64decode(q.get("r", ""))
            cuts = [0] + [int(x) for x in q.get("at", "").split(",") if x] + [len(raw)]
            for i in range(len(cuts) - 1):
                if i > 0:
                    time.sleep(0.1)
                c.send(raw[cuts[i]:cuts[i + 1]])
            if q.get("rst") == "1":
                # A reset instead of a FIN: close with SO_LINGER at 0.
                c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if q.get("close") == "1":
                return
        elif p.startswith("/status/"):
            respond(c, int(p.split("/")[2]), b'{"status":true}\n')
        elif p == "/ka-close":
            time.sleep(float(q.get("delay", "0")))
            for _ in range(600 if "go" in q else 0):
                if os.path.exists(q["go"]):
                    break
                time.sleep(0.05)
            respond(c, 200, b'{"ka_close":true}\n')
            time.sleep(float(q.get("after", "0.3")))
            log({"event": "idle_close", "conn": c.cid})
            return
        elif p == "/drop-next":
            c.drop_next = True
            respond(c, 200, b'{"drop_next":true}\n')
        elif p == "/close":
            c.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
                   b"until close\n")
            return
        elif p == "/cut":
            # The same, ended by a bare FIN (over TLS: no close_notify), as an attacker
            # on the path would end it.
            c.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
                   b"until close\n")
            c.close_notify = False
            return
        else:
            summary = {"ok": True, "method": method, "path": url.path, "conn": c.cid,
                       "header_names": [k for k, _ in headers], "body_len": len(body)}
            respond(c, 200, (json.dumps(summary) + "\n").encode(), close=close)
        if close:
            return


def serve_conn(sock, ctx):
    cid = next(CONN_IDS)
    try:
        if ctx is not None:
            sock.settimeout(10)
            sock = ctx.wrap_socket(sock, server_side=True)
        sock.settimeout(60)
        c = Conn(sock, cid, SNI.get(id(sock)))
        log({"event": "conn", "conn": cid, "tls": ctx is not None, "sni": c.sni,
             "resumed": bool(ctx is not None and sock.session_reused)})
        try:
            handle(c)
        except (EOFError, ConnectionError, ValueError, socket.timeout, ssl.SSLError) as e:
            log({"event": "conn_error", "conn": cid, "error": type(e).__name__})
        log({"event": "conn_end", "conn": cid, "bytes_received": c.received})
        if ctx is not None and c.close_notify:
            # Send the close_notify and return: waiting for the peer's would hold
            # this thread until the proxy closes.
            sock.setblocking(False)
            try:
                sock.unwrap()
            except (ssl.SSLError, OSError):
                pass
    except (ssl.SSLError, ConnectionError, socket.timeout, OSError) as e:
        log({"event": "tls_error", "conn": cid, "error": str(e)})
    finally:
        try:
            sock.close()
        except OSError:
            pass


SNI = {}


def main():
    global LOG
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--bind", default="127.0.0.1")
    a = ap.parse_args()
    LOG = open(a.log, "a")
    ctx = None
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        ctx.set_alpn_protocols(["http/1.1"])

        def sni_cb(sslsock, name, _ctx):
            SNI[id(sslsock)] = name
        ctx.sni_callback = sni_cb
    fam = socket.AF_INET6 if ":" in a.bind else socket.AF_INET
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.bind, 0))
    ls.listen(512)
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % ls.getsockname()[1])
    os.rename(tmp, a.port_file)
    while True:
        s, _ = ls.accept()
        threading.Thread(target=serve_conn, args=(s, ctx), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
