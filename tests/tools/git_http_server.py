#!/usr/bin/env python3
"""A smart-HTTP git server for integration tests: `git http-backend` run as CGI behind
HTTP/1.1 (optionally TLS) on 127.0.0.1, as GitHub serves git.

Each request is logged as one JSON line (method, path, query, headers with values,
body bytes, status) to --log. Answers are streamed with chunked encoding, request
bodies may be chunked (git's large pushes) or gzip-encoded (git's fetch negotiation).

Options:
  --root DIR        repositories, served at /NAME (receive-pack enabled)
  --auth VALUE      required Authorization value; otherwise 401 with
                    WWW-Authenticate: Basic, whose body quotes what was received
  --delay S         silence for S seconds before answering a POST git-upload-pack
                    (a server generating a pack before its first byte)
  --redirect FROM=TO  a path starting with FROM is answered 301 to TO + the rest
  --login PREFIX    a path starting with PREFIX is answered 302 to a login page whose
                    query quotes the Authorization received, percent-encoded (as a
                    server's "sign in again" redirect carries what it refused), and
                    whose body quotes it as it came
"""
import argparse
import json
import os
import socketserver
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler

LOCK = threading.Lock()
ARGS = None
LOG = None


def log(rec):
    rec["t"] = time.time()
    with LOCK:
        LOG.write(json.dumps(rec, sort_keys=True) + "\n")
        LOG.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        sys.stderr.write("git-http: " + (fmt % a) + "\n")

    def read_body(self, out):
        n = 0
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return n
                out.write(self.rfile.read(size))
                self.rfile.readline(16)
                n += size
        left = int(self.headers.get("Content-Length", "0"))
        while left > 0:
            b = self.rfile.read(min(left, 1 << 20))
            if not b:
                break
            out.write(b)
            left -= len(b)
            n += len(b)
        return n

    def send_simple(self, status, body, extra=()):
        self.send_response(status)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        rec = {"event": "request", "method": self.command, "path": path,
               "query": url.query, "headers": [[k, v] for k, v in self.headers.items()],
               "chunked": "chunked" in self.headers.get("Transfer-Encoding", "").lower()}
        with tempfile.TemporaryFile() as body:
            rec["body_bytes"] = self.read_body(body)
            body.seek(0)
            for src, dst in ARGS.redirect:
                if path.startswith(src):
                    loc = dst + path[len(src):] + ("?" + url.query if url.query else "")
                    rec["status"] = 301
                    log(rec)
                    self.send_simple(301, b"moved\n", [("Location", loc)])
                    return
            if ARGS.login and path.startswith(ARGS.login):
                got = self.headers.get("Authorization", "")
                rec["status"] = 302
                log(rec)
                self.send_simple(302, ("refused: %s\n" % got).encode(),
                                 [("Location", "/login?auth=" + urllib.parse.quote(got, safe=""))])
                return
            if ARGS.auth is not None and self.headers.get("Authorization") != ARGS.auth:
                got = self.headers.get("Authorization", "")
                rec["status"] = 401
                log(rec)
                self.send_simple(401, ("bad credentials: %s\n" % got).encode(),
                                 [("WWW-Authenticate", 'Basic realm="git"')])
                return
            if self.command == "POST" and path.endswith("/git-upload-pack") and ARGS.delay:
                time.sleep(ARGS.delay)
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": ARGS.root, "GIT_HTTP_EXPORT_ALL": "1",
                "GIT_CONFIG_NOSYSTEM": "1", "HOME": ARGS.root,
                "REQUEST_METHOD": self.command, "PATH_INFO": path,
                "QUERY_STRING": url.query, "REMOTE_USER": "agent",
                "REMOTE_ADDR": "127.0.0.1", "CONTENT_LENGTH": str(rec["body_bytes"]),
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            }
            if self.headers.get("Content-Encoding"):
                env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
            if self.headers.get("Git-Protocol"):
                env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
            proc = subprocess.Popen(["git", "http-backend"], stdin=body,
                                    stdout=subprocess.PIPE, env=env)
            status, hdrs = 200, []
            while True:
                line = proc.stdout.readline().decode("latin-1").rstrip("\r\n")
                if not line:
                    break
                k, _, v = line.partition(":")
                if k.lower() == "status":
                    status = int(v.split()[0])
                else:
                    hdrs.append((k, v.strip()))
            rec["status"] = status
            self.send_response(status)
            for k, v in hdrs:
                self.send_header(k, v)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while True:
                b = proc.stdout.read1(1 << 16)
                if not b:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(b), b))
            self.wfile.write(b"0\r\n\r\n")
            proc.wait()
            log(rec)

    do_GET = do_POST = handle_any


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True
    ctx = None

    def get_request(self):
        # The TLS handshake runs in the connection's thread (at its first read), so a
        # client slow to shake hands holds up no other.
        sock, addr = self.socket.accept()
        if self.ctx is not None:
            sock = self.ctx.wrap_socket(sock, server_side=True,
                                        do_handshake_on_connect=False)
        return sock, addr


def main():
    global ARGS, LOG
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--auth")
    ap.add_argument("--login")
    ap.add_argument("--delay", type=float, default=0)
    ap.add_argument("--redirect", action="append", default=[],
                    type=lambda s: tuple(s.split("=", 1)))
    ARGS = ap.parse_args()
    LOG = open(ARGS.log, "a")
    srv = Server(("127.0.0.1", 0), Handler)
    if ARGS.cert:
        srv.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        srv.ctx.load_cert_chain(ARGS.cert, ARGS.key)
    tmp = ARGS.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, ARGS.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
