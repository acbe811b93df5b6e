#!/usr/bin/env python3
"""A fake recursive resolver that stands in for the host's DNS in adversarial tests:
every query it receives (UDP or TCP) is logged as one JSON line, so a test can prove
which names the proxy resolved, and that names the sandbox asked about never left
the host.

Answers: a name matching --answer SUFFIX=IP entries (the name itself or a name
under it) gets an A record for each IPv4 address listed for the first suffix it
matches and an AAAA record for each IPv6 one, in the order given, and NODATA for
other types (or a type with none listed); anything else gets NXDOMAIN.

--delay S holds every UDP answer S seconds (each on its own thread, so queries asked
together are answered together): a resolver slower than the proxy's connect timeout.

--silent SUFFIX never answers a UDP query for SUFFIX or a name under it (it is still
logged): an authoritative server that drops queries, which holds the asker's
getaddrinfo for the whole of its resolv.conf timeout.

Usage: fake_resolver.py --bind 127.0.0.1 --log FILE --ready FILE [--answer S=IP]...
                        [--delay S] [--silent SUFFIX]...
"""
import argparse
import json
import socket
import struct
import threading
import time

LOCK = threading.Lock()


def parse_question(msg):
    """(id, name, qtype, end offset of the question) or None."""
    if len(msg) < 12:
        return None
    qid, _flags, qd = struct.unpack("!HHH", msg[:6])
    if qd != 1:
        return None
    off, labels = 12, []
    while True:
        if off >= len(msg):
            return None
        n = msg[off]
        off += 1
        if n == 0:
            break
        if n & 0xC0:
            return None
        labels.append(msg[off:off + n].decode("latin-1"))
        off += n
    if off + 4 > len(msg):
        return None
    qtype = struct.unpack("!H", msg[off:off + 2])[0]
    return qid, ".".join(labels), qtype, off + 4


def answer(msg, answers):
    q = parse_question(msg)
    if q is None:
        return None, None
    qid, name, qtype, end = q
    lname = name.lower()
    match = None
    for suffix, _ip in answers:
        if lname == suffix or lname.endswith("." + suffix):
            match = suffix
            break
    question = msg[12:end]
    if match is None:
        return q, struct.pack("!HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question
    rrs = []
    for suffix, ip in answers:
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        if suffix != match or qtype != (28 if family == socket.AF_INET6 else 1):
            continue
        data = socket.inet_pton(family, ip)
        rrs.append(b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 5, len(data)) + data)
    head = struct.pack("!HHHHHH", qid, 0x8180, 1, len(rrs), 0, 0)
    return q, head + question + b"".join(rrs)


def log(f, transport, q):
    rec = {"t": time.time(), "transport": transport}
    if q is None:
        rec["malformed"] = True
    else:
        rec["name"] = q[1]
        rec["qtype"] = q[2]
    with LOCK:
        f.write(json.dumps(rec) + "\n")
        f.flush()


def under(name, suffixes):
    lname = name.lower()
    return any(lname == s or lname.endswith("." + s) for s in suffixes)


def serve_udp(sock, f, answers, delay, silent):
    def send_later(out, peer):
        time.sleep(delay)
        sock.sendto(out, peer)

    while True:
        msg, peer = sock.recvfrom(4096)
        q, out = answer(msg, answers)
        log(f, "udp", q)
        if out is None or (q is not None and under(q[1], silent)):
            continue
        if delay > 0:
            threading.Thread(target=send_later, args=(out, peer), daemon=True).start()
        else:
            sock.sendto(out, peer)


def serve_tcp_conn(c, f, answers):
    c.settimeout(10)
    try:
        while True:
            hdr = c.recv(2)
            if len(hdr) < 2:
                return
            n = struct.unpack("!H", hdr)[0]
            msg = b""
            while len(msg) < n:
                part = c.recv(n - len(msg))
                if not part:
                    return
                msg += part
            q, out = answer(msg, answers)
            log(f, "tcp", q)
            if out is not None:
                c.sendall(struct.pack("!H", len(out)) + out)
    except OSError:
        pass
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--log", required=True)
    ap.add_argument("--ready", required=True)
    ap.add_argument("--answer", action="append", default=[])
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--silent", action="append", default=[])
    a = ap.parse_args()
    silent = [x.lower().rstrip(".") for x in a.silent]
    answers = []
    for spec in a.answer:
        suffix, ip = spec.split("=", 1)
        answers.append((suffix.lower().rstrip("."), ip))
    f = open(a.log, "a")
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((a.bind, 53))
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((a.bind, 53))
    t.listen(64)
    threading.Thread(target=serve_udp, args=(u, f, answers, a.delay, silent), daemon=True).start()
    with open(a.ready, "w") as r:
        r.write("ready\n")
    while True:
        c, _ = t.accept()
        threading.Thread(target=serve_tcp_conn, args=(c, f, answers), daemon=True).start()


if __name__ == "__main__":
    main()
