#!/usr/bin/env python3
"""A fake credential callback for tests: HTTP/1.1 (optionally over TLS) on 127.0.0.1
or on a unix socket.

Every call (a complete request) is logged as one JSON line to --log: its number, the
method, path, headers (with values: the callback's own authentication is checked by
the tests), the raw body, the parsed body, and the mode it was answered with. Every
accepted connection logs {"event": "conn"}, and a failed TLS handshake
{"event": "tls_error"}, so a test can tell "never called" from "called and failed".

The answer depends on the mode, chosen per run (--mode), per destination host in the
request body (--host-mode HOST=MODE, repeatable), or by a JSON file re-read on every
call (--mode-file: {"default": MODE, "hosts": {HOST: MODE}}), in that order of
precedence: mode file, host mode, run mode.

Modes:
  ok               200 {"headers": {"Authorization": "Bearer cb-<n>"}}, n = call number
  slow             as ok after --delay seconds
  gate             as ok once the file --gate DIR / HOST exists (at most 30 s)
  status:NNN       that status with an ok-looking body (which must not be used)
  not_json         200 with a body that is not JSON
  no_headers       200 {"token": "..."}
  headers_array    200 {"headers": [["Authorization", "..."]]}
  bad_header_name  200 {"headers": {"Bad Name": "..."}}
  hop_header       200 {"headers": {"Transfer-Encoding": "chunked"}}
  crlf_value       200 {"headers": {"Authorization": "Bearer x\r\nX-Injected: 1"}}
  huge_body        200 with a valid answer padded beyond 64 KiB
  many_headers     200 with 64 headers (the most an answer may have): X-Cb-0 .. X-Cb-62,
                   then Authorization "Bearer cb-<n>"
  hang             reads the request and never answers (until the client leaves)
  close            reads the request and closes without answering
  eof_framed       200 ok, with no Content-Length: the answer ends where the connection
                   does (over TLS, with close_notify, then the close)
  eof_framed_cut   as eof_framed, but over TLS the close comes without close_notify,
                   as a truncating attacker's would
"""
import argparse
import json
import os
import socket
import ssl
import sys
import threading
import time

LOCK = threading.Lock()
LOG = None
CALLS = 0
ARGS = None
HOST_MODES = {}


def log(rec):
    rec["t"] = time.time()
    line = json.dumps(rec, sort_keys=True)
    with LOCK:
        LOG.write(line + "\n")
        LOG.flush()


def next_call():
    global CALLS
    with LOCK:
        CALLS += 1
        return CALLS


def pick_mode(host):
    if ARGS.mode_file and os.path.exists(ARGS.mode_file):
        try:
            with open(ARGS.mode_file) as f:
                spec = json.load(f)
            hosts = spec.get("hosts", {})
            if host in hosts:
                return hosts[host]
            if "default" in spec:
                return spec["default"]
        except (OSError, ValueError):
            pass
    if host in HOST_MODES:
        return HOST_MODES[host]
    return ARGS.mode


def read_request(sock):
    """Returns (method, path, headers, body) or None at EOF before a request."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            return None
        buf += data
        if len(buf) > 1 << 20:
            raise ValueError("request head too large")
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        k, v = line.split(":", 1)
        headers.append([k, v.strip()])
    length = 0
    for k, v in headers:
        if k.lower() == "content-length":
            length = int(v)
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            raise EOFError("body cut short")
        rest += data
    return method, path, headers, rest[:length]


def answer(sock, status, body, reason="Status"):
    head = ("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\nConnection: close\r\n\r\n" % (status, reason, len(body)))
    sock.sendall(head.encode() + body)


def ok_body(n):
    return json.dumps({"headers": {"Authorization": "Bearer cb-%d" % n}}).encode()


def serve(sock, cid):
    req = read_request(sock)
    if req is None:
        return
    method, path, headers, body = req
    n = next_call()
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    host = parsed.get("host") if isinstance(parsed, dict) else None
    mode = pick_mode(host)
    log({"event": "call", "n": n, "conn": cid, "method": method, "path": path,
         "headers": headers, "body": body.decode("latin-1"), "json": parsed,
         "host": host, "mode": mode})
    if mode == "ok":
        answer(sock, 200, ok_body(n), "OK")
    elif mode == "slow":
        time.sleep(ARGS.delay)
        answer(sock, 200, ok_body(n), "OK")
    elif mode == "gate":
        # Answers once the test opens this host's gate (creates GATE_DIR/HOST), at most
        # 30 s later.
        gate = os.path.join(ARGS.gate or "/nonexistent", host or "none")
        for _ in range(600):
            if os.path.exists(gate):
                break
            time.sleep(0.05)
        answer(sock, 200, ok_body(n), "OK")
    elif mode.startswith("status:"):
        answer(sock, int(mode.split(":", 1)[1]), ok_body(n))
    elif mode == "not_json":
        answer(sock, 200, b"Authorization: Bearer not-json", "OK")
    elif mode == "no_headers":
        answer(sock, 200, json.dumps({"token": "cb-%d" % n}).encode(), "OK")
    elif mode == "headers_array":
        answer(sock, 200, json.dumps({"headers": [["Authorization", "Bearer cb-%d" % n]]})
               .encode(), "OK")
    elif mode == "bad_header_name":
        answer(sock, 200, json.dumps({"headers": {"Bad Name": "cb-%d" % n}}).encode(), "OK")
    elif mode == "hop_header":
        answer(sock, 200, json.dumps({"headers": {"Transfer-Encoding": "chunked"}}).encode(),
               "OK")
    elif mode == "crlf_value":
        answer(sock, 200, json.dumps({"headers": {
            "Authorization": "Bearer cb-%d\r\nX-Injected: 1" % n}}).encode(), "OK")
    elif mode == "huge_body":
        answer(sock, 200, json.dumps({"headers": {"Authorization": "Bearer cb-%d" % n},
                                      "pad": "x" * (70 << 10)}).encode(), "OK")
    elif mode == "many_headers":
        hdrs = {"X-Cb-%d" % i: "v%d" % i for i in range(63)}
        hdrs["Authorization"] = "Bearer cb-%d" % n
        answer(sock, 200, json.dumps({"headers": hdrs}).encode(), "OK")
    elif mode == "hang":
        # Wait for the client to give up; never answer.
        sock.settimeout(120)
        try:
            while sock.recv(4096):
                pass
        except (OSError, socket.timeout):
            pass
    elif mode == "close":
        pass
    elif mode in ("eof_framed", "eof_framed_cut"):
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\n\r\n" + ok_body(n))
        if isinstance(sock, ssl.SSLSocket) and mode == "eof_framed":
            sock.unwrap()  # close_notify; close() alone does not send it
    else:
        answer(sock, 500, b'{"error": "unknown mode"}')


def serve_conn(sock, ctx, cid):
    try:
        if ctx is not None:
            sock.settimeout(10)
            try:
                sock = ctx.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError) as e:
                log({"event": "tls_error", "conn": cid, "error": str(e)})
                return
        sock.settimeout(60)
        log({"event": "conn", "conn": cid, "tls": ctx is not None})
        serve(sock, cid)
    except (EOFError, ConnectionError, ValueError, socket.timeout, ssl.SSLError,
            OSError) as e:
        log({"event": "conn_error", "conn": cid, "error": type(e).__name__})
    finally:
        try:
            sock.close()
        except OSError:
            pass


def main():
    global LOG, ARGS
    ap = argparse.ArgumentParser()
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--port-file", help="listen on 127.0.0.1, write the port here")
    where.add_argument("--unix", help="listen on this unix socket path")
    ap.add_argument("--log", required=True)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--mode", default="ok")
    ap.add_argument("--host-mode", action="append", default=[], metavar="HOST=MODE")
    ap.add_argument("--mode-file")
    ap.add_argument("--delay", type=float, default=2.0)
    ap.add_argument("--gate", help="gate mode answers once the file GATE/HOST exists")
    ARGS = ap.parse_args()
    for spec in ARGS.host_mode:
        host, mode = spec.split("=", 1)
        HOST_MODES[host] = mode
    LOG = open(ARGS.log, "a")
    ctx = None
    if ARGS.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ARGS.cert, ARGS.key)
    if ARGS.unix:
        # Bound under a temporary name and renamed once listening, so the path
        # appears only when connections to it succeed (tests poll for it).
        tmp = ARGS.unix + ".tmp"
        for p in (tmp, ARGS.unix):
            if os.path.exists(p):
                os.unlink(p)
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ls.bind(tmp)
        os.chmod(tmp, 0o666)
    else:
        fam = socket.AF_INET6 if ":" in ARGS.bind else socket.AF_INET
        ls = socket.socket(fam, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((ARGS.bind, 0))
    ls.listen(512)
    if ARGS.unix:
        os.rename(ARGS.unix + ".tmp", ARGS.unix)
    if ARGS.port_file:
        tmp = ARGS.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % ls.getsockname()[1])
        os.rename(tmp, ARGS.port_file)
    cid = 0
    while True:
        s, _ = ls.accept()
        cid += 1
        threading.Thread(target=serve_conn, args=(s, ctx, cid), daemon=True).start()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
