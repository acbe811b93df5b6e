#!/usr/bin/env python3
"""Regenerates the DNS query fixtures in this directory.

Real resolvers send their queries to a UDP listener that saves each datagram and
answers REFUSED, so the client gives up quickly:
  - node (c-ares, dns.Resolver) on 127.0.0.1 and an ephemeral port;
  - glibc (getent ahosts, A and AAAA; plain and with "options edns0") inside a throw-away network and mount
    namespace (unshare -mn) where /etc/resolv.conf points at 127.0.0.1:53; this
    part needs root and is skipped without it;
  - a hand-encoded query with a mixed-case name and EDNS, sent with python's socket,
    as a resolver using 0x20 case randomization would.

Usage: python3 capture.py [OUTDIR]
"""
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading

OUT = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("--") \
    else os.path.dirname(os.path.abspath(__file__))


def serve(sock, names, stop):
    """Saves each datagram as the next name in names; answers REFUSED."""
    sock.settimeout(0.2)
    i = 0
    while i < len(names) and not stop.is_set():
        try:
            data, peer = sock.recvfrom(4096)
        except socket.timeout:
            continue
        with open(os.path.join(OUT, names[i]), "wb") as f:
            f.write(data)
        print("%-24s %4d bytes" % (names[i], len(data)))
        i += 1
        reply = bytearray(data[:12])
        reply[2] = 0x80 | (data[2] & 0x79)
        reply[3] = 0x80 | 5
        reply[4:12] = b"\0" * 8
        sock.sendto(bytes(reply), peer)


def capture(names, client, port=0):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    stop = threading.Event()
    t = threading.Thread(target=serve, args=(sock, names, stop))
    t.start()
    client(sock.getsockname()[1])
    t.join(5)
    stop.set()
    t.join()
    sock.close()


def node_client(port):
    js = ("const {Resolver} = require('dns'); const r = new Resolver({tries: 1});"
          "r.setServers(['127.0.0.1:%d']);"
          "r.resolve4('registry.npmjs.org', () => process.exit(0));" % port)
    subprocess.run(["node", "-e", js], timeout=10)


def hand_client(port):
    # id 0xbeef, RD, one question, one OPT (udp 4096, a DNS cookie option).
    name = b"".join(bytes([len(l)]) + l for l in [b"ApI", b"GiThUb", b"cOm"]) + b"\0"
    msg = struct.pack(">HHHHHH", 0xbeef, 0x0100, 1, 0, 0, 1) + name + struct.pack(">HH", 1, 1)
    cookie = struct.pack(">HH", 10, 8) + bytes(range(8))
    msg += b"\0" + struct.pack(">HHIH", 41, 4096, 0, len(cookie)) + cookie
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.sendto(msg, ("127.0.0.1", port))
    s.recv(512)
    s.close()


def glibc_capture(prefix, options):
    """Runs this script again inside a private net+mount namespace as the glibc part."""
    if os.geteuid() != 0:
        print("not root: glibc queries not captured")
        return
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
        f.write("nameserver 127.0.0.1\noptions attempts:1 timeout:2 %s\n" % options)
        conf = f.name
    try:
        subprocess.run(["unshare", "-mn", "sh", "-c",
                        "ip link set lo up && mount --bind %s /etc/resolv.conf && "
                        "exec %s %s %s --glibc %s" % (conf, sys.executable,
                                                     os.path.abspath(__file__), OUT, prefix)],
                       check=True, timeout=30)
    finally:
        os.unlink(conf)


if "--glibc" in sys.argv:
    prefix = sys.argv[sys.argv.index("--glibc") + 1]
    capture([prefix + "_a.bin", prefix + "_aaaa.bin"],
            lambda port: subprocess.run(["getent", "ahosts", "pypi.org"], timeout=10,
                                        stdout=subprocess.DEVNULL),
            port=53)
    sys.exit(0)

capture(["node_a.bin"], node_client)
capture(["hand_edns_cookie.bin"], hand_client)
glibc_capture("glibc", "")
glibc_capture("glibc_edns", "edns0 trust-ad")
