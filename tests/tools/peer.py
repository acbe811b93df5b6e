#!/usr/bin/env python3
"""A witness on the far side of a sandbox's uplink: listens on TCP and UDP (and logs
ICMP echo requests seen on a raw socket), writing one line per thing that arrived.
Tests assert that nothing did.

Usage: peer.py ADDR PORT LOG   (ADDR may be IPv4 or IPv6; "ready" is logged first)
"""
import os
import select
import socket
import sys

addr, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
log = open(path, "a", buffering=1)

t = socket.socket(fam, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((addr, port))
t.listen(16)
u = socket.socket(fam, socket.SOCK_DGRAM)
u.bind((addr, port))
socks = [t, u]
try:
    if fam == socket.AF_INET:
        icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    else:
        icmp = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    socks.append(icmp)
except PermissionError:
    icmp = None
log.write("ready\n")
while True:
    r, _, _ = select.select(socks, [], [], 60)
    if not r:
        continue
    for s in r:
        if s is t:
            c, a = t.accept()
            log.write("tcp %s\n" % (a[0],))
            c.close()
        elif s is u:
            data, a = u.recvfrom(65536)
            log.write("udp %s %d\n" % (a[0], len(data)))
        else:
            data, a = s.recvfrom(65536)
            # ICMPv4 raw sockets include the IP header; echo request is type 8 / 128.
            off = (data[0] & 0x0F) * 4 if fam == socket.AF_INET else 0
            if len(data) > off and data[off] in (8, 128):
                log.write("icmp-echo %s\n" % (a[0],))
