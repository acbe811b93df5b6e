#!/usr/bin/env python3
"""Differential fuzzer of the proxy's HTTP relaying over real sockets (not a ctest test).

A raw-socket upstream on 127.0.0.1 (plain HTTP, and TLS certified by a throwaway CA) is
reached through `authproxy jail` by dns.remap; a rule injects a secret header into
both. Every case is generated from (seed, case number) alone, so the client inside the
jail, the upstream and the checker agree on it without talking:

  - the client opens a connection, sends 1-4 requests (Content-Length, chunked with
    random chunk sizes, extensions and trailers, no body, Expect: 100-continue),
    pipelined or one by one, in random splits with small random delays, and a stale
    copy of the injected header that must be replaced;
  - the upstream answers each with 1xx interims (100, 103) and a final response
    framed by Content-Length, chunked (random chunks, extensions, trailers) or the
    connection's end, or none (HEAD, 204, 304), in random splits with delays, and may
    cut one (FIN or reset) at a random byte, or close before reading a request body;
  - checked: the bytes the client receives equal the bytes the upstream sent (the
    proxy passes responses through); a cut answer is a prefix followed by the
    connection's end (or the proxy's own 502 when no byte of the final response had
    been sent), never completed; what the upstream receives is the client's request
    with the injected header added exactly once (the sandbox's copy gone) and only
    hop-by-hop fields (Connection, Keep-Alive, Proxy-*) changed, body byte-identical.

The upstream keeps connections alive across cases, so the proxy's pool moves them
from one case's client connection to the next. --concurrent K runs K client
connections at once (each its share of the cases, in order), and adds (from a random
stream of their own: a seed's other draws stay as they were) what could leave a
pooled connection out of step: every final answer echoes its request's id
(X-Fuzz-Id: CASE.INDEX; checked: each client gets exactly its own answers, in order),
HEAD, 204 and 304 answers with a Content-Length or Transfer-Encoding and no body, 102
and 103 interims, an answer before the request body ends on a connection the upstream
keeps alive (the client sends the body only after reading it), HTTP/1.0 keep-alive
answers, a coding other than chunked framed by the end, clients idle past the
proxy's up_release_ms between requests, and an upstream that closes a kept-alive
connection while idle after a random moment (FIN, reset, TLS close_notify), racing
its reuse. Outcomes that race allows: a request the upstream never received, that may
not be repeated (not GET, HEAD, OPTIONS without a body), answered by the proxy's 502
upstream_closed/upstream_reset and the connection's end; and the tail of the last
answer lost when the idle close was a reset (the upstream's kernel throws away what
it has not sent yet, such as a tail Nagle held back). The summary counts the shapes run and the upstream's idle closes, requests
on kept-alive connections and those whose previous request there was another case's;
a failing case prints what its upstream connections saw. --proxy-log FILE keeps the
proxy's debug log.

Usage (root, from a build tree):
  tests/tools/relay_fuzz.py [--authproxy build/proxy/authproxy] [--seed S]
      [--seconds 600] [--batch 200] [--start 0] [--only N] [--verbose] [--multi-ext] [--big]
      [--concurrent K] [--proxy-log FILE]
Prints one line per failing case (`FAIL case=N kind=... detail`) and a summary;
`--only N --seed S --verbose` replays one case and prints its spec and bytes.
"""
import argparse
import hashlib
import json
import os
import random
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

PLAIN_HOST = "p.fuzz.example"
TLS_HOST = "t.fuzz.example"
INJ_NAME = "X-Fuzz-Key"
CLIENT_PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
# llhttp 8.1 (Debian bookworm) refuses an unquoted extension value followed by another
# extension (";a=1;b=2", valid by RFC 9112 7.1.1; ";a;b=2" and ';a="x";b=2' pass), in
# requests (400 invalid_chunked_body) and responses (502 or a cut) alike: --multi-ext
# adds that shape.
BIG = False  # --big: answers of 0.3-3 MB, cut more often, slow readers more often
# --concurrent K: K client connections run cases at once (the upstream pool moves
# connections between them), and the shapes that could leave a pooled connection out
# of step are added (POOL): every final answer echoes its request's id (X-Fuzz-Id),
# 204 with a Content-Length, 304 with Transfer-Encoding, 102 interims, answers before
# the request body ends on a connection the upstream keeps alive, and an upstream that
# closes a kept-alive connection while idle at random moments (FIN, reset, TLS
# close_notify: the race with its reuse). The extra draws come from their own random
# stream, so a seed's cases without --concurrent are unchanged.
POOL = False
EXTS = [b";a=b", b";x", b';q="v v"', b";a=1"]
HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization",
       "http2-settings", "upgrade"}


# ---------------------------------------------------------------- case generation

ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789 \r\n{}\":,"
TO_ALPHABET = bytes(ALPHABET[i % len(ALPHABET)] for i in range(256))


def rbytes(r, n):
    return r.randbytes(n).translate(TO_ALPHABET)


def rsize(r):
    k = r.random()
    if k < 0.2:
        return 0
    if k < 0.7:
        return r.randint(1, 100)
    if k < 0.95:
        return r.randint(100, 5000)
    if k < 0.99:
        return r.randint(5000, 70000)
    return r.randint(300000, 3000000)


def chunk_sizes(r, n):
    sizes = []
    while n > 0:
        s = min(n, r.choice([1, 2, 7, 16, 100, 1000, 4096, 20000, r.randint(1, n)]))
        sizes.append(s)
        n -= s
    return sizes


def chunked(r, body, trailers_ok=True):
    out = b""
    pos = 0
    for s in chunk_sizes(r, len(body)):
        size = ("%x" % s) if r.random() < 0.7 else ("%X" % s)
        if r.random() < 0.1:
            size = "0" * r.randint(1, 3) + size
        ext = b""
        if r.random() < 0.2:
            ext = r.choice(EXTS)
        out += size.encode() + ext + b"\r\n" + body[pos:pos + s] + b"\r\n"
        pos += s
    last = b"0"
    if r.random() < 0.2:
        last += b";end=1"
    out += last + b"\r\n"
    if trailers_ok and r.random() < 0.3:
        for i in range(r.randint(1, 3)):
            out += b"X-Trailer-%d: v%d\r\n" % (i, r.randint(0, 999))
    return out + b"\r\n"


def splits(r, data):
    """Pieces to write, with a delay before each."""
    if len(data) == 0:
        return []
    mode = r.random()
    if mode < 0.4:
        return [(0, data)]
    cuts = sorted(set(r.randint(1, len(data)) for _ in range(r.randint(1, 6))))
    out, prev = [], 0
    for c in cuts + [len(data)]:
        if c > prev:
            out.append((r.choice([0, 0, 0.001, 0.003, 0.01]), data[prev:c]))
            prev = c
    return out


def secret_of(seed):
    return "inj-" + hashlib.sha256(str(seed).encode()).hexdigest()[:12]


def mask(seed, data):
    sec = secret_of(seed).encode()
    return data.replace(sec, b"*" * len(sec))


def gen_case(seed, n):
    r = random.Random("%s:%d" % (seed, n))
    sec = secret_of(seed).encode()
    case = {"n": n, "tls": r.random() < 0.4, "pipelined": r.random() < 0.3,
            "client_seed": r.random(), "up_seed": r.random(), "reqs": [], "resps": []}
    case["half_close"] = not case["tls"] and r.random() < 0.1
    case["slow"] = r.random() < (0.5 if BIG else 0.1)  # the client reads late, in small pieces
    host = TLS_HOST if case["tls"] else PLAIN_HOST
    nreq = r.choice([1, 1, 2, 3, 4])
    stopped = False
    r2 = random.Random("%s:%d:pool" % (seed, n))  # POOL's draws
    for i in range(nreq):
        method = r.choice(["GET", "GET", "POST", "POST", "PUT", "HEAD", "DELETE", "OPTIONS"])
        body_kind = "none"
        if method in ("POST", "PUT"):
            body_kind = r.choice(["cl", "chunked", "cl0"])
        elif r.random() < 0.1:
            body_kind = "cl"
        body = rbytes(r, rsize(r)) if body_kind in ("cl", "chunked") else b""
        target = "/f/%d/%d%s" % (n, i, r.choice(["", "?a=1", "?q=x%20y&b=", "/deep/path"]))
        hdrs = [("Host", host)]
        for k in range(r.randint(0, 4)):
            hdrs.append(("X-H%d" % k, "v%d" % r.randint(0, 10**6)))
        if r.random() < 0.3:
            hdrs.append((INJ_NAME, "sandbox-copy"))
        if r.random() < 0.2:
            hdrs.append(("Keep-Alive", "timeout=5"))
        if r.random() < 0.2:
            hdrs.append(("Connection", "keep-alive"))
        if r.random() < 0.15:
            hdrs.append(("TE", "trailers"))
        expect = body_kind in ("cl", "chunked") and not case["pipelined"] and r.random() < 0.3
        if expect:
            hdrs.append(("Expect", "100-continue"))
        if body_kind == "cl" or body_kind == "cl0":
            hdrs.append(("Content-Length", str(len(body))))
            wire_body = body
        elif body_kind == "chunked":
            hdrs.append(("Transfer-Encoding", "chunked"))
            wire_body = chunked(r, body)
        else:
            wire_body = b""
        last = i == nreq - 1
        if last and r.random() < 0.2:
            hdrs.append(("Connection", "close"))
        r.shuffle(hdrs)
        head = "%s %s HTTP/1.1\r\n" % (method, target)
        head += "".join("%s: %s\r\n" % kv for kv in hdrs) + "\r\n"
        case["reqs"].append({"method": method, "target": target, "hdrs": hdrs,
                             "head": head.encode(), "body": wire_body, "expect": expect})
        if stopped:
            continue  # behind a closing answer: sent only when pipelined
        # The answer.
        interims = []
        if expect:
            interims.append(b"HTTP/1.1 100 Continue\r\n\r\n")
        for _ in range(r.choice([0, 0, 0, 1, 2])):
            interims.append(r.choice([b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
                                      b"HTTP/1.1 100 Continue\r\n\r\n"]))
        if POOL and r2.random() < 0.15:
            for _ in range(r2.randint(1, 3)):
                interims.append(r2.choice([
                    b"HTTP/1.1 102 Processing\r\n\r\n",
                    b"HTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload\r\n"
                    b"Link: </b.css>; rel=preload\r\nContent-Length: 12\r\n\r\n"]))
        status = r.choice([200, 200, 200, 201, 404, 500, 204, 304])
        if method == "HEAD":
            status = r.choice([200, 200, 404, 304])
        rbody = rbytes(r, r.randint(300000, 3000000) if BIG else rsize(r))
        if r.random() < 0.15:
            # An upstream echoing the injected value: masked with '*' of its length.
            for _ in range(r.randint(1, 2)):
                at = r.randint(0, len(rbody))
                rbody = rbody[:at] + sec + rbody[at:]
            if r.random() < 0.3:
                rbody += sec[:r.randint(1, len(sec) - 1)]
        framing = r.choice(["cl", "cl", "chunked", "chunked", "close"])
        if framing == "close" and not last:
            framing = "cl"
        rh = [("Content-Type", "application/octet-stream")]
        for k in range(r.randint(0, 3)):
            rh.append(("X-R%d" % k, "w%d" % r.randint(0, 10**6)))
        bodyless = method == "HEAD" or status in (204, 304)
        if framing == "cl":
            if not (status == 204 or (status == 304 and r.random() < 0.5)):
                rh.append(("Content-Length", str(len(rbody))))
            elif POOL and r2.random() < 0.6:
                # No body whatever it says (RFC 9112 6.3); a proxy that waited for one
                # would take the next answer on this connection for it.
                rh.append(("Content-Length", str(len(rbody) or 17)))
        elif framing == "chunked":
            if status not in (204, 304):
                rh.append(("Transfer-Encoding", "chunked"))
            elif POOL and r2.random() < 0.6:
                rh.append(("Transfer-Encoding", "chunked"))
        else:
            rh.append(("Connection", "close"))
            if POOL and not bodyless and r2.random() < 0.3:
                # A coding without chunked last: framed by the end (RFC 9112 6.3).
                rh.append(("Transfer-Encoding", "gzip"))
        if bodyless:
            wire = b""
            if framing == "close":
                framing = "cl"  # a close-delimited bodyless answer is just a close
        elif framing == "cl":
            wire = rbody
        elif framing == "chunked":
            wire = chunked(r, rbody)
        else:
            wire = rbody
        if framing != "close" and last and r.random() < 0.1:
            rh.append(("Connection", "close"))
        version = "HTTP/1.1"
        if framing == "cl" and r.random() < 0.05:
            version = "HTTP/1.0"  # no keep-alive: the proxy must close after it
        early = body_kind in ("cl", "chunked") and not expect and not case["pipelined"] \
            and len(wire_body) > 0 and r.random() < 0.08
        if early:
            rh.append(("Connection", "close"))
        # POOL: the answer comes before the request body ends, and the upstream keeps
        # the connection alive (it reads the rest of the body, then waits for the next
        # request). The client sends the body only after reading the answer, so the
        # proxy has forwarded part of it at most: it must end the sandbox's connection
        # and never pool that upstream one. With Expect: 100-continue, a final answer
        # instead of the 100.
        early_ka = POOL and not early and framing != "close" and body_kind in ("cl", "chunked") and \
            not case["pipelined"] and len(wire_body) > 0 and r2.random() < 0.1
        if early_ka and expect:
            interims.pop(0)
        # POOL: an HTTP/1.0 answer that keeps the connection alive.
        ka10 = POOL and version == "HTTP/1.0" and not early and not early_ka and \
            ("Connection", "close") not in rh and r2.random() < 0.5
        if ka10:
            rh.append(("Connection", "keep-alive"))
        if POOL:
            rh.append(("X-Fuzz-Id", "%d.%d" % (n, i)))
        if r.random() < 0.08:
            rh.append(("X-Echo", sec.decode()))
        final = ("%s %d X\r\n" % (version, status)).encode()
        final += "".join("%s: %s\r\n" % kv for kv in rh).encode() + b"\r\n" + wire
        resp = {"interims": interims, "final": final, "status": status,
                "framing": framing, "early": early or early_ka, "early_ka": early_ka,
                "stray": framing != "close" and not case["pipelined"] and r.random() < 0.05,
                "closes": framing == "close" or ("Connection", "close") in rh or (version == "HTTP/1.0" and not ka10)
                or early_ka,
                "cut": None, "cut_mode": r.choice(["fin", "rst"])}
        whole = b"".join(interims) + final
        k = r.random()
        if early or early_ka:
            pass
        elif k < (0.4 if BIG else 0.12):
            # Cut within the answer; a close-delimited one only within its head.
            limit = len(whole) - len(wire) if framing == "close" else len(whole)
            resp["cut"] = r.randrange(0, max(1, limit))
            if framing == "close" and resp["cut"] >= limit:
                resp["cut"] = None
        elif k < 0.15 and wire_body and not expect:
            resp["cut"] = -1  # closes before reading the request body
        case["resps"].append(resp)
        if resp["cut"] is not None or resp["closes"] or ("Connection", "close") in hdrs:
            stopped = True
    return case


def resp_bytes(resp):
    whole = b"".join(resp["interims"]) + resp["final"]
    if resp["cut"] is None:
        return whole
    if resp["cut"] < 0:
        return b""
    return whole[:resp["cut"]]


# ---------------------------------------------------------------- upstream

class Upstream:
    def __init__(self, seed, cert=None, key=None):
        self.seed = seed
        self.cache = {}
        self.lock = threading.Lock()
        self.got = {}  # (case, idx) -> list of raw requests received
        # POOL coverage: idle closes by mode, requests that came on a connection that
        # had answered before, and those whose previous request there was another
        # case's (another client connection's: the pool moved it).
        self.stats = {"conns": 0, "idle-fin": 0, "idle-rst": 0, "idle-notify": 0,
                      "on-kept-conn": 0, "cross-case": 0}
        self.ctx = None
        if cert:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(cert, key)
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(128)
        self.port = self.ls.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()

    def case(self, n):
        with self.lock:
            if n not in self.cache:
                self.cache[n] = gen_case(self.seed, n)
                if len(self.cache) > 2000:
                    self.cache.pop(next(iter(self.cache)))
            return self.cache[n]

    def accept(self):
        while True:
            s, _ = self.ls.accept()
            threading.Thread(target=self.serve, args=(s,), daemon=True).start()

    def count(self, key):
        with self.lock:
            self.stats[key] += 1

    def serve(self, raw):
        s = raw
        cr = random.Random()  # this connection's idle closes: not part of any case
        prev_case = None
        t0 = time.time()
        trace = []  # what happened on this connection, shared by its requests' records

        def note(what):
            trace.append("%.3f %s" % (time.time() - t0, what))
        try:
            raw.settimeout(30)
            if self.ctx:
                s = self.ctx.wrap_socket(raw, server_side=True)
            self.count("conns")
            buf = b""
            while True:
                if POOL and prev_case is not None and not buf and cr.random() < 0.25:
                    # Kept alive, idle: close it after a random moment unless a request
                    # begins first; the proxy may be reusing it right then.
                    s.settimeout(cr.choice([0.0002, 0.001, 0.002, 0.005, 0.01, 0.03, 0.1]))
                    try:
                        k = s.recv(65536)
                    except (socket.timeout, ssl.SSLWantReadError):
                        mode = cr.choice(["fin", "rst", "clean"] if self.ctx else ["fin", "rst"])
                        self.count({"fin": "idle-fin", "rst": "idle-rst",
                                    "clean": "idle-notify"}[mode])
                        note("idle close " + mode)
                        if mode == "rst":
                            # A reset throws away what this kernel has not sent yet
                            # (a tail Nagle held back): the last answer's may be lost
                            # (rst_lost).
                            last_rec["rst_after"] = True
                        self.end(raw, s, mode)
                        return
                    s.settimeout(30)
                    if not k:
                        return
                    buf += k
                buf, head = read_until(s, buf, b"\r\n\r\n")
                if head is None:
                    return
                line = head.split(b"\r\n", 1)[0].decode("latin-1")
                target = line.split(" ")[1]
                parts = target.split("?")[0].split("/")
                n, idx = int(parts[2]), int(parts[3])
                case = self.case(n)
                if prev_case is not None:
                    self.count("on-kept-conn")
                    if prev_case != n:
                        self.count("cross-case")
                prev_case = n
                rec = {"head": head, "body": b"", "trace": trace}
                last_rec = rec
                note("request %d.%d" % (n, idx))
                with self.lock:
                    self.got.setdefault((n, idx), []).append(rec)
                if idx >= len(case["resps"]):
                    return  # a request sent after a closing answer: never forwarded
                req, resp = case["reqs"][idx], case["resps"][idx]
                r = random.Random("%s:%d:%d:up" % (self.seed, n, idx))
                if resp["cut"] == -1:
                    self.end(raw, s, resp["cut_mode"])
                    return
                hl = {k.lower(): v for k, v in parse_fields(head)}
                if resp["early_ka"]:
                    # Answers before reading the body, then reads it and goes on.
                    note("wrote %d" % self.write(s, r, b"".join(resp["interims"]) + resp["final"]))
                    if "content-length" in hl:
                        want = int(hl["content-length"])
                        while len(buf) < want:
                            k = s.recv(65536)
                            if not k:
                                rec["body"] = None
                                return
                            buf += k
                        rec["body"], buf = buf[:want], buf[want:]
                    else:
                        rec["body"], buf = read_chunked(s, buf)
                        if rec["body"] is None:
                            return
                    continue
                if resp["early"]:
                    # Answers before reading the body, then reads what comes.
                    rec["body"] = None
                    note("wrote %d" % self.write(s, r, b"".join(resp["interims"]) + resp["final"]))
                    s.settimeout(3)
                    try:
                        while s.recv(65536):
                            pass
                    except OSError:
                        pass
                    self.end(raw, s, "clean")
                    return
                interims = list(resp["interims"])
                if req["expect"] and interims:
                    cont = interims.pop(0)
                    if resp["cut"] is not None and resp["cut"] < len(cont):
                        rec["body"] = None  # not read
                        note("wrote %d" % self.write(s, r, cont[:resp["cut"]]))
                        self.end(raw, s, resp["cut_mode"])
                        return
                    note("wrote %d" % self.write(s, r, cont))
                if "content-length" in hl:
                    want = int(hl["content-length"])
                    while len(buf) < want:
                        k = s.recv(65536)
                        if not k:
                            rec["body"] = buf
                            return
                        buf += k
                    rec["body"], buf = buf[:want], buf[want:]
                elif hl.get("transfer-encoding", "").lower() == "chunked":
                    body, buf = read_chunked(s, buf)
                    rec["body"] = body
                    if body is None:
                        return
                whole = b"".join(interims) + resp["final"]
                if resp["cut"] is not None:
                    already = len(b"".join(resp["interims"])) - len(b"".join(interims))
                    whole = whole[:max(0, resp["cut"] - already)]
                # Bytes past a whole answer, in its last write (later ones would race
                # the next request, as they would without a proxy): the proxy must
                # drop them and this connection.
                stray = b"XYZ\r\n" if resp["stray"] and resp["cut"] is None and \
                    not resp["closes"] and resp["framing"] != "close" else b""
                note("wrote %d" % self.write(s, r, whole, stray))
                if resp["cut"] is not None:
                    self.end(raw, s, resp["cut_mode"])
                    return
                if resp["framing"] == "close":
                    self.end(raw, s, "clean")
                    return
                if resp["closes"]:
                    self.end(raw, s, "clean")
                    return
        except (OSError, ValueError, IndexError) as e:
            note("error %r" % e)
        finally:
            note("end")
            try:
                s.close()
            except OSError:
                pass

    def write(self, s, r, data, tail=b""):
        pieces = splits(r, data)
        for i, (delay, piece) in enumerate(pieces):
            if delay:
                time.sleep(delay)
            s.sendall(piece + (tail if i == len(pieces) - 1 else b""))
        return len(data)

    def end(self, raw, s, mode):
        if mode == "rst":
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()
            return
        if mode == "clean" and isinstance(s, ssl.SSLSocket):
            try:
                s = s.unwrap()
            except (OSError, ValueError):
                pass
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        time.sleep(0.05)
        s.close()
        raw.close()


def read_until(s, buf, marker):
    while marker not in buf:
        k = s.recv(65536)
        if not k:
            return buf, None
        buf += k
    i = buf.index(marker) + len(marker)
    return buf[i:], buf[:i]


def read_chunked(s, buf):
    body = b""
    while True:
        buf, line = read_until(s, buf, b"\r\n")
        if line is None:
            return None, buf
        body += line
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            while True:
                buf, tl = read_until(s, buf, b"\r\n")
                if tl is None:
                    return None, buf
                body += tl
                if tl == b"\r\n":
                    return body, buf
        while len(buf) < size + 2:
            k = s.recv(65536)
            if not k:
                return None, buf
            buf += k
        body += buf[:size + 2]
        buf = buf[size + 2:]


def parse_fields(head):
    out = []
    for line in head.split(b"\r\n")[1:]:
        if not line:
            continue
        k, v = line.split(b":", 1)
        out.append((k.decode("latin-1"), v.strip().decode("latin-1")))
    return out


# ---------------------------------------------------------------- client (in the jail)

def client_case(seed, n):
    case = gen_case(seed, n)
    r = random.Random("%s:%d:client" % (seed, n))
    rp = random.Random("%s:%d:client-pool" % (seed, n))
    host = TLS_HOST if case["tls"] else PLAIN_HOST
    got = b""
    end = "open"
    t0 = time.time()
    try:
        s = socket.create_connection((host, 443 if case["tls"] else 80), timeout=10)
        if case["tls"]:
            s = ssl.create_default_context().wrap_socket(s, server_hostname=host)
    except OSError as e:
        return {"case": n, "error": "connect: %r" % e}
    s.settimeout(5)

    def send(data):
        for delay, piece in splits(r, data):
            if delay:
                time.sleep(delay)
            s.sendall(piece)

    base = 0  # where the answer being read begins in got

    def read_to(total):
        nonlocal got, end
        if case["slow"]:
            time.sleep(0.2)
        while len(got) < total and end == "open":
            if POOL and got[base:].startswith(b"HTTP/1.1 50") and \
                    b"X-Authproxy-Error" in got[base:].split(b"\r\n\r\n", 1)[0]:
                # The proxy's own answer in place of the upstream's (a kept-alive
                # connection the upstream closed as a request went out): it closes.
                total = len(got) + (1 << 20)
            try:
                k = s.recv(4096 if case["slow"] else 65536)
            except socket.timeout:
                end = "timeout"
                return
            except (ConnectionResetError, ssl.SSLError, OSError) as e:
                end = "reset:%s" % type(e).__name__
                return
            if not k:
                end = "eof"
                return
            got += k

    expected = b""
    try:
        nsend = len(case["resps"])
        if case["pipelined"]:
            # Requests behind a closing answer go too: the proxy must not forward them.
            send(b"".join(q["head"] + q["body"] for q in case["reqs"]))
            if case["half_close"]:
                s.shutdown(socket.SHUT_WR)
        for i, (q, resp) in enumerate(zip(case["reqs"], case["resps"])):
            base = len(expected)
            if resp["early_ka"]:
                # The answer first, then the body, which the proxy may refuse.
                send(q["head"])
                expected += resp_bytes(resp)
                read_to(len(expected))
                try:
                    send(q["body"])
                except OSError:
                    pass
                break
            if not case["pipelined"]:
                if POOL and i > 0 and rp.random() < 0.03:
                    # Idle past up_release_ms (2 s): the proxy parks this connection's
                    # upstream, and the next request takes one from the pool.
                    time.sleep(2.2)
                send(q["head"])
                if q["expect"] and resp["cut"] != -1:
                    cont = resp["interims"][0]
                    read_to(len(expected) + min(len(cont), resp["cut"] if resp["cut"] is not None else len(cont)))
                try:
                    send(q["body"])
                except OSError:
                    if not resp["early"]:
                        raise
                if case["half_close"] and i == nsend - 1:
                    s.shutdown(socket.SHUT_WR)
            expected += resp_bytes(resp)
            if resp["cut"] is not None:
                break
            read_to(len(expected))
            if end != "open":
                break
    except (OSError, ssl.SSLError) as e:
        if end == "open":
            if POOL:
                # What arrived before the error still tells what the proxy did.
                read_to(len(got) + (1 << 20))
                end = "send-error:%s/%s" % (type(e).__name__, end)
            else:
                end = "send-error:%s" % type(e).__name__
    last = case["resps"][-1]
    must_end = last["cut"] is not None or last["closes"] or case["half_close"] or \
        ("Connection", "close") in case["reqs"][len(case["resps"]) - 1]["hdrs"]
    if must_end and end == "open":
        read_to(len(expected) + (1 << 20))
    elif end == "open":
        # Nothing more may arrive.
        s.settimeout(0.05)
        try:
            k = s.recv(65536)
            got += k
            end = "eof" if not k else "open"
        except socket.timeout:
            pass
        except (OSError, ssl.SSLError) as e:
            end = "reset:%s" % type(e).__name__
    try:
        s.close()
    except OSError:
        pass
    return {"case": n, "got": got.decode("latin-1"), "end": end,
            "secs": round(time.time() - t0, 3)}


def run_client(seed, start, count, concurrent=1):
    if concurrent <= 1:
        for n in range(start, start + count):
            print(json.dumps(client_case(seed, n)), flush=True)
        return
    # K connections at once, each running its share of the cases in order.
    lock = threading.Lock()

    def worker(w):
        for n in range(start + w, start + count, concurrent):
            try:
                res = client_case(seed, n)
            except Exception as e:  # a client bug must not hide the other cases
                res = {"case": n, "error": "client: %r" % e}
            with lock:
                print(json.dumps(res), flush=True)

    ts = [threading.Thread(target=worker, args=(w,)) for w in range(concurrent)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


# ---------------------------------------------------------------- checking

def retryable(q):
    """What the proxy sends again when a reused upstream connection ends unanswered."""
    return q["method"] in ("GET", "HEAD", "OPTIONS") and len(q["body"]) == 0 and \
        not any(k.lower() == "transfer-encoding" for k, _ in q["hdrs"])


def raced_at(case, got, up_got, sec):
    """POOL: the index of the request that met a kept-alive upstream connection as the
    upstream closed it idle, if that explains got: the answers before it, then the
    proxy's 502 (upstream_closed or upstream_reset), from a request the upstream never
    received and that the proxy may not send again. Else None."""
    pre = b""
    for i, resp in enumerate(case["resps"]):
        rest = got[len(pre):]
        if got.startswith(pre) and rest.startswith(b"HTTP/1.1 502 ") and \
                re.search(rb"X-Authproxy-Error: upstream_(closed|reset)\r\n",
                          rest.split(b"\r\n\r\n", 1)[0]) and \
                not any(up_got.get((case["n"], j)) for j in range(i, len(case["reqs"]))) and \
                not retryable(case["reqs"][i]):
            return i
        pre += resp_bytes(resp).replace(sec, b"*" * len(sec))
    return None


def rst_lost(case, got, up_got, sec):
    """POOL: the index of the answer whose tail a reset the upstream sent right after
    it (an idle close) may have destroyed unread, if that explains got: a prefix of
    the answers up to it, or its whole interims and then the proxy's own 502 (no byte
    of the final answer had come). Else None."""
    pre = b""
    for i, resp in enumerate(case["resps"]):
        whole = pre + resp_bytes(resp).replace(sec, b"*" * len(sec))
        bounds = [pre + b"".join(resp["interims"][:k]) for k in range(len(resp["interims"]) + 1)]
        if any(rec.get("rst_after") for rec in up_got.get((case["n"], i), [])) and \
                got.startswith(pre) and \
                (whole.startswith(got) or
                 any(got.startswith(b) and re.match(
                     rb"HTTP/1\.1 502 [^\r]*\r\n(?:[^\r]+\r\n)*X-Authproxy-Error: upstream_(reset|closed)\r\n",
                     got[len(b):]) for b in bounds)) and \
                not any(up_got.get((case["n"], j)) for j in range(i + 1, len(case["reqs"]))):
            return i
        pre = whole
    return None


def check(case, res, up_got, secret):
    """Returns a list of (kind, detail)."""
    out = []
    if "error" in res:
        return [("client-error", res["error"])]
    got = res["got"].encode("latin-1")
    sec = secret.encode()
    expected = b"".join(x.replace(sec, b"*" * len(sec)) for x in map(resp_bytes, case["resps"]))
    last = case["resps"][-1]
    if sec in got:
        out.append(("secret-leak", "the injected value reached the client unmasked"))
    if POOL:
        ids = re.findall(rb"\r\nX-Fuzz-Id: (\d+)\.(\d+)\r\n", got)
        want = [(b"%d" % case["n"], b"%d" % i) for i in range(len(case["resps"]))]
        if any(x[0] != b"%d" % case["n"] for x in ids) or ids != want[:len(ids)]:
            out.append(("misrouted", "answers with ids %r, want %r" % (ids, want)))
        if got != expected and res["end"] not in ("open", "timeout"):
            i = raced_at(case, got, up_got, sec)
            if i is not None:
                # Allowed; the requests before it are checked below.
                res["raced"] = i
                case = dict(case, resps=case["resps"][:i], reqs=case["reqs"][:i])
                last = None
            else:
                i = rst_lost(case, got, up_got, sec)
                if i is not None:
                    res["rst_lost"] = i
                    case = dict(case, resps=case["resps"][:i + 1], reqs=case["reqs"][:i + 1])
                    last = None
    if last is None:
        pass
    elif last["cut"] is None:
        if got != expected:
            out.append(("body-mismatch", diff(got, expected)))
        req_close = ("Connection", "close") in case["reqs"][len(case["resps"]) - 1]["hdrs"]
        if (last["closes"] or req_close or case["half_close"]) and \
                (res["end"] == "open" or (POOL and res["end"] == "timeout")):
            out.append(("not-closed", "connection left open after a closing answer"))
        if not (last["closes"] or req_close or case["half_close"]) and res["end"] not in ("open",):
            out.append(("closed-early", res["end"]))
    else:
        bounds = [len(b"".join(last["interims"][:i])) for i in range(len(last["interims"]) + 1)]
        boundary = last["cut"] == -1 or last["cut"] in bounds
        # The scrubber holds back bytes that may begin the secret until it knows;
        # a cut answer drops them (the sandbox never sees a partial secret).
        for k in range(1, len(secret)):
            if expected.endswith(secret[:k].encode()) and got.startswith(expected[:-k]) and \
                    not got.startswith(expected):
                expected = expected[:-k]
                break
        if last["cut_mode"] == "rst" and expected.startswith(got):
            pass  # a reset loses what the proxy had not read yet
        elif last["cut_mode"] == "rst" and \
                re.match(rb"(?s)(.*?)HTTP/1\.1 50\d .*X-Authproxy-Error", got) and \
                expected.startswith(re.match(rb"(?s)(.*?)HTTP/1\.1 50\d ", got).group(1)):
            pass
        elif not got.startswith(expected):
            out.append(("cut-mismatch", diff(got, expected)))
        else:
            rest = got[len(expected):]
            # Allowed: the proxy's own 5xx when no byte of the final answer went out.
            if rest and not (boundary and rest.startswith(b"HTTP/1.1 50") and
                             b"X-Authproxy-Error" in rest):
                out.append(("cut-completed", "extra after cut: %r" % rest[:200]))
        if res["end"] in ("open", "timeout"):
            out.append(("cut-not-ended", res["end"]))
    # Upstream side.
    for i in range(len(case["resps"]), len(case["reqs"])):
        if up_got.get((case["n"], i)):
            out.append(("forwarded-after-close", "request %d went upstream after a closing answer" % i))
    for i, resp in enumerate(case["resps"]):
        q = case["reqs"][i]
        recs = up_got.get((case["n"], i), [])
        if not recs:
            if not (case["resps"][i - 1]["cut"] is not None if i else False):
                out.append(("req-missing", "request %d never reached the upstream" % i))
            continue
        for rec in recs:
            head = rec["head"]
            line = head.split(b"\r\n", 1)[0]
            if line != ("%s %s HTTP/1.1" % (q["method"], q["target"])).encode():
                out.append(("req-line", repr(line)))
            fields = parse_fields(head)
            inj = [v for k, v in fields if k.lower() == INJ_NAME.lower()]
            if inj != [secret]:
                out.append(("injection", "request %d: %s values %r" % (i, INJ_NAME, inj)))
            want = sorted((k.lower(), v) for k, v in q["hdrs"]
                          if k.lower() not in HOP and k.lower() != INJ_NAME.lower())
            have = sorted((k.lower(), v) for k, v in fields
                          if k.lower() not in HOP and k.lower() != INJ_NAME.lower())
            if want != have:
                out.append(("req-headers", "request %d: sent %r got %r" % (i, want, have)))
            if resp["cut"] != -1 and rec["body"] is not None and rec["body"] != q["body"]:
                out.append(("req-body", "request %d: %s" % (i, diff(rec["body"], q["body"]))))
    return out


def shapes(case, res, cover):
    """POOL coverage: the shapes the cases carried (answers sent whole)."""
    def add(k):
        cover[k] = cover.get(k, 0) + 1
    for q, resp in zip(case["reqs"], case["resps"]):
        head = resp["final"].split(b"\r\n\r\n", 1)[0]
        if resp["cut"] is not None:
            continue
        if q["method"] == "HEAD" and b"Content-Length" in head:
            add("head+cl")
        if q["method"] == "HEAD" and b"Transfer-Encoding" in head:
            add("head+te")
        if resp["status"] == 204 and b"Content-Length" in head:
            add("204+cl")
        if resp["status"] == 304 and b"Content-Length" in head:
            add("304+cl")
        if resp["status"] in (204, 304) and b"Transfer-Encoding" in head:
            add("204/304+te")
        if any(b" 102 " in x for x in resp["interims"]):
            add("102")
        if resp["interims"]:
            add("1xx")
        if resp["early_ka"]:
            add("early-keepalive")
        if resp["early"] and not resp["early_ka"]:
            add("early-close")
        if resp["framing"] == "close":
            add("close-framed")
        if b"Transfer-Encoding: gzip" in head:
            add("te-gzip-close-framed")
        if head.startswith(b"HTTP/1.0") and b"Connection: keep-alive" in head:
            add("http10-keepalive")
    if res.get("secs", 0) > 2 and not case["pipelined"]:
        add("idle-past-release")
    if "raced" in res:
        add("raced-502")
    if "rst_lost" in res:
        add("idle-reset-lost-tail")


def diff(got, want):
    i = 0
    while i < min(len(got), len(want)) and got[i] == want[i]:
        i += 1
    return "len got %d want %d, first difference at %d: got %r want %r" % (
        len(got), len(want), i, got[i:i + 60], want[i:i + 60])


# ---------------------------------------------------------------- driver

def drive(args):
    tmp = tempfile.mkdtemp(prefix="relay-fuzz.")
    os.chmod(tmp, 0o755)
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj",
                        "/CN=relay fuzz CA", "-keyout", tmp + "/ca.key", "-out", tmp + "/ca.pem",
                        "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
                        "keyUsage=critical,keyCertSign"], check=True, capture_output=True)
        subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-subj", "/CN=" + TLS_HOST, "-keyout", tmp + "/s.key",
                        "-out", tmp + "/s.csr"], check=True, capture_output=True)
        with open(tmp + "/ext.cnf", "w") as f:
            f.write("subjectAltName=DNS:%s,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n" % TLS_HOST)
        subprocess.run(["openssl", "x509", "-req", "-in", tmp + "/s.csr", "-CA", tmp + "/ca.pem",
                        "-CAkey", tmp + "/ca.key", "-CAcreateserial", "-days", "2", "-extfile",
                        tmp + "/ext.cnf", "-out", tmp + "/s.pem"], check=True, capture_output=True)
        plain = Upstream(args.seed)
        tls = Upstream(args.seed, tmp + "/s.pem", tmp + "/s.key")
        secret = secret_of(args.seed)
        os.mkdir(tmp + "/secrets", 0o700)
        with open(tmp + "/secrets/KEY", "w") as f:
            f.write(secret + "\n")
        cfg = {"rules": [{"name": "fuzz", "allow_plain_http": True,
                          "match_hosts": [PLAIN_HOST, TLS_HOST],
                          "headers": [{"name": INJ_NAME, "type": "workspace_secret",
                                       "value": "{KEY}"}]}],
               "dns": {"remap": {PLAIN_HOST: "127.0.0.1:%d" % plain.port,
                                 TLS_HOST: "127.0.0.1:%d" % tls.port}}}
        with open(tmp + "/config.json", "w") as f:
            json.dump(cfg, f)
        shutil.copy(__file__, tmp + "/relay_fuzz.py")
        os.chmod(tmp + "/relay_fuzz.py", 0o755)
        deadline = time.time() + args.seconds
        start = args.start
        total = 0
        failures = 0
        kinds = {}
        slow = []
        cover = {}
        while time.time() < deadline:
            count = 1 if args.only is not None else args.batch
            if args.only is not None:
                start = args.only
            p = subprocess.run([args.authproxy, "jail", "--config", tmp + "/config.json",
                                "--secrets-dir", tmp + "/secrets", "--upstream-ca",
                                tmp + "/ca.pem", "--user", "nobody"] +
                               (["-v", "-v"] if args.proxy_log else []) + ["--",
                                CLIENT_PY, tmp + "/relay_fuzz.py", "--client",
                                "--seed", str(args.seed), "--start", str(start),
                                "--batch", str(count), "--concurrent", str(args.concurrent)] + (["--multi-ext"] if args.multi_ext else []) + (["--big"] if args.big else []),
                               capture_output=True, text=True, timeout=max(120, count * 20))
            results = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
            if args.proxy_log:
                with open(args.proxy_log, "a") as f:
                    f.write("==== batch %d\n%s" % (start, p.stderr))
            if "Sanitizer" in p.stderr or "runtime error" in p.stderr:
                failures += 1
                kinds["sanitizer"] = kinds.get("sanitizer", 0) + 1
                print("FAIL batch=%d.. kind=sanitizer %s" % (start, p.stderr[-4000:]), flush=True)
            if len(results) < count:
                print("jail ended early (rc %d): %s" % (p.returncode, p.stderr[-2000:]))
            time.sleep(0.3)  # the upstream threads record the last cuts
            for res in results:
                case = gen_case(args.seed, res["case"])
                up_got = dict(plain.got)
                up_got.update(tls.got)
                problems = check(case, res, up_got, secret)
                total += 1
                if POOL:
                    shapes(case, res, cover)
                if res.get("secs", 0) > 2:
                    slow.append((res["case"], res["secs"]))
                if problems:
                    failures += 1
                for kind, detail in problems:
                    kinds[kind] = kinds.get(kind, 0) + 1
                    print("FAIL case=%d seed=%s tls=%s kind=%s %s" % (
                        res["case"], args.seed, case["tls"], kind, detail[:400]), flush=True)
                if problems and POOL:
                    print("  client: end %s, %d bytes, last %r" % (
                        res.get("end"), len(res.get("got", "")), res.get("got", "")[-150:]))
                    seen = set()
                    for i in range(len(case["reqs"])):
                        for rec in up_got.get((case["n"], i), []):
                            if id(rec["trace"]) not in seen:
                                seen.add(id(rec["trace"]))
                                print("  upstream connection: %s" % "; ".join(rec["trace"][-12:]))
                if args.verbose:
                    print(json.dumps({"case": {k: v for k, v in case.items()},
                                      "result": res}, default=lambda b: b.decode("latin-1"),
                                     indent=1))
            if args.only is not None:
                break
            start += count
            print("progress: %d cases, %d failing, %s; slower than 2 s: %s" % (
                total, failures, kinds, slow[-5:]), flush=True)
            if POOL:
                print("  shapes: %s\n  upstream plain %s tls %s" % (
                    cover, plain.stats, tls.stats), flush=True)
        print("done: %d cases (seed %s, %d..%d), %d failing: %s" % (
            total, args.seed, args.start, start, failures, kinds))
        return 1 if failures else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--authproxy", default="build/proxy/authproxy")
    ap.add_argument("--seed", default="1")
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--only", type=int)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--client", action="store_true")
    ap.add_argument("--multi-ext", action="store_true")
    ap.add_argument("--big", action="store_true")
    ap.add_argument("--concurrent", type=int, default=1)
    ap.add_argument("--proxy-log", help="append the proxy's debug log (-v -v) to this file")
    args = ap.parse_args()
    if args.concurrent > 1:
        global POOL
        POOL = True
    if args.multi_ext:
        EXTS.append(b";a=1;b=2")
    if args.big:
        global BIG
        BIG = True
    if args.client:
        run_client(args.seed, args.start, args.batch, args.concurrent)
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
