"""Shared pieces for the tests' clients (mostly tests/adversarial/): hand-built
TLS ClientHellos and DNS queries, raw exchanges that report what the proxy did
(answered, closed, reset) instead of raising, and waiting for a test's go-ahead file. Runs inside a sandbox, so it uses the
standard library only.

Import it with:  sys.path.insert(0, TOOLS_DIR); import advlib
"""
import json
import os
import socket
import struct
import sys
import time


def client_hello(sni=None, alpn=(b"http/1.1",)):
    """A minimal TLS 1.2 ClientHello record offering ECDHE-ECDSA-AES128-GCM; sni is a
    str (or bytes, sent as is), None for no server_name extension."""
    exts = b""
    if sni is not None:
        name = sni.encode("latin-1") if isinstance(sni, str) else sni
        entry = struct.pack("!BH", 0, len(name)) + name
        body = struct.pack("!H", len(entry)) + entry
        exts += struct.pack("!HH", 0, len(body)) + body
    groups = struct.pack("!HH", 2, 23)                        # secp256r1
    exts += struct.pack("!HH", 10, len(groups)) + groups
    exts += struct.pack("!HHB", 11, 2, 1) + b"\x00"           # uncompressed points
    sigs = struct.pack("!HH", 2, 0x0403)                       # ecdsa_secp256r1_sha256
    exts += struct.pack("!HH", 13, len(sigs)) + sigs
    if alpn:
        lst = b"".join(struct.pack("!B", len(p)) + p for p in alpn)
        body = struct.pack("!H", len(lst)) + lst
        exts += struct.pack("!HH", 16, len(body)) + body
    suites = struct.pack("!HH", 2, 0xC02B)
    hello = (b"\x03\x03" + os.urandom(32) + b"\x00" + suites + b"\x01\x00" +
             struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + struct.pack("!I", len(hello))[1:] + hello
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


def dns_name(name):
    """Wire form of a dotted name; labels are not length-checked (tests send bad ones
    on purpose). A label longer than 63 bytes is encoded with its length byte as is,
    which sets the reserved label-type bits."""
    out = b""
    for label in name.rstrip(".").split(".") if name not in ("", ".") else []:
        raw = label.encode("latin-1")
        out += bytes([len(raw) & 0xFF]) + raw
    return out + b"\x00"


def dns_query(name, qtype=1, qid=None, wire_name=None):
    """A standard query with RD set for one question of class IN."""
    qid = qid if qid is not None else int.from_bytes(os.urandom(2), "big")
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    return q + (wire_name if wire_name is not None else dns_name(name)) + struct.pack("!HH", qtype, 1)


def dns_answer_summary(msg):
    """(rcode, [A addresses]) of an answer to one of our queries; ancount entries of
    type A are read after skipping the question."""
    if len(msg) < 12:
        return ("short", [])
    rcode = msg[3] & 0x0F
    qd, an = struct.unpack("!HH", msg[4:8])
    off = 12

    def skip_name(o):
        while o < len(msg):
            n = msg[o]
            if n == 0:
                return o + 1
            if n & 0xC0 == 0xC0:
                return o + 2
            o += 1 + n
        return o
    for _ in range(qd):
        off = skip_name(off) + 4
    addrs = []
    for _ in range(an):
        off = skip_name(off)
        if off + 10 > len(msg):
            break
        rtype, _cls, _ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        off += 10
        if rtype == 1 and rdlen == 4:
            addrs.append(socket.inet_ntoa(msg[off:off + 4]))
        off += rdlen
    return (rcode, addrs)


def exchange(addr, port, data, timeout=10, family=None, read_all=True, pre_wait=0.0,
             first_only=False):
    """Connects, optionally waits, sends data, reads until EOF (or one head when
    read_all is False, or the first bytes when first_only) and reports {"connect": ..., "status": first line, "body",
    "end": closed|reset|timeout|open, "reason": X-Authproxy-Error}."""
    fam = family or (socket.AF_INET6 if ":" in addr else socket.AF_INET)
    res = {"connect": "ok", "status": "", "end": "open", "reason": "", "bytes": 0}
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((addr, port))
    except ConnectionRefusedError:
        res["connect"] = "refused"
        return res
    except ConnectionResetError:
        # Accepted and reset before connect() returned.
        res["end"] = "reset"
        return res
    except (socket.timeout, OSError) as e:
        res["connect"] = type(e).__name__
        return res
    buf = b""
    try:
        if pre_wait:
            time.sleep(pre_wait)
        if data:
            s.sendall(data)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                res["end"] = "closed"
                break
            buf += chunk
            if (not read_all and b"\r\n\r\n" in buf) or first_only:
                break
    except ConnectionResetError:
        res["end"] = "reset"
    except BrokenPipeError:
        res["end"] = "reset"
    except socket.timeout:
        res["end"] = "timeout"
    finally:
        s.close()
    res["bytes"] = len(buf)
    if buf:
        res["status"] = buf.split(b"\r\n", 1)[0].decode("latin-1")
        for line in buf.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
            if line.lower().startswith(b"x-authproxy-error:"):
                res["reason"] = line.split(b":", 1)[1].strip().decode("latin-1")
        res["body"] = buf.split(b"\r\n\r\n", 1)[-1][:400].decode("latin-1")
    return res


def read_response(s, buf=b""):
    """Reads one HTTP response with a Content-Length from socket s, buf holding bytes
    of it already read: (status line, body, the bytes after it). ("closed", b"", b"")
    when the connection ends before a whole head."""
    while b"\r\n\r\n" not in buf:
        k = s.recv(65536)
        if not k:
            return ("closed", b"", b"")
        buf += k
    head, rest = buf.split(b"\r\n\r\n", 1)
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, v = line.split(b":", 1)
        if k.strip().lower() == b"content-length":
            n = int(v)
    while len(rest) < n:
        k = s.recv(65536)
        if not k:
            break
        rest += k
    return (head.split(b"\r\n")[0].decode(), rest[:n], rest[n:])


def wait_file(path, secs=120):
    """Waits until the file at path exists, for at most secs seconds: how a test steps
    a client through its phases."""
    for _ in range(int(secs * 20)):
        if os.path.exists(path):
            return
        time.sleep(0.05)
    raise SystemExit("timed out waiting for " + path)


def emit(case, **fields):
    """Prints one JSON result line for a case and flushes."""
    rec = {"case": case}
    rec.update(fields)
    print(json.dumps(rec, sort_keys=True))
    sys.stdout.flush()
