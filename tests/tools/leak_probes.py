#!/usr/bin/env python3
"""Every way out of a network namespace that does not go through a TCP connection to
the proxy, each carrying MARKER-NAME- in its payload (see witness.py): UDP (plain,
QUIC-shaped, broadcast, multicast), DNS to an outside resolver address (UDP and TCP,
answered by the sandbox's responder when captured), ICMP and ICMPv6 echo, raw IPv4
with a hand-built header, raw sockets of an unassigned protocol, raw IPv6 UDP, an
ICMPv6 neighbor solicitation with an extra option, a bare Ethernet frame, and UDP
to loopback addresses from a socket bound to the uplink (SO_BINDTODEVICE). Plus
TCP to the peer, to show the redirect. IPv4, IPv6 and IPv6 link-local (PEER_LL on
IFNAME). Prints one JSON line per probe: whether it could be sent, and for DNS
probes what came back.

Usage: leak_probes.py TOOLS_DIR MARKER PEER4 PEER6 PEER_LL IFNAME [NAME,...]
"""
import os
import socket
import struct
import sys

sys.path.insert(0, sys.argv[1])
import advlib  # noqa: E402

MARKER, P4, P6, PEER_LL, IFNAME = sys.argv[2:7]
ONLY = sys.argv[7].split(",") if len(sys.argv) > 7 else None
IFINDEX = socket.if_nametoindex(IFNAME)


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def tag(name):
    return ("%s-%s-" % (MARKER, name)).encode()


def sockaddr(a, port):
    if a == "ll":
        return socket.AF_INET6, (PEER_LL, port, 0, IFINDEX)
    if ":" in a:
        return socket.AF_INET6, (a, port, 0, 0)
    return socket.AF_INET, (a, port)


def tcp(name, a, port=7000):
    fam, sa = sockaddr(a, port)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(sa)
        # A NUL first: not a token a request line could start with, so the proxy
        # decides at once instead of waiting for more of a possible HTTP method.
        s.sendall(b"\0" + tag(name))
        return {"reply": len(s.recv(10))}
    finally:
        s.close()


def udp(name, a, port, payload=None, wait=False):
    fam, sa = sockaddr(a, port)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    if fam == socket.AF_INET6 and a.startswith("ff"):
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, IFINDEX)
        sa = (a, port, 0, IFINDEX)
    s.settimeout(0.5)
    try:
        s.sendto(payload if payload is not None else tag(name), sa)
        if not wait:
            return {}
        try:
            rcode, addrs = advlib.dns_answer_summary(s.recv(4096))
            return {"rcode": rcode, "addrs": addrs}
        except socket.timeout:
            return {"rcode": "none"}
    finally:
        s.close()


def udp_bound(name, a, port=7000):
    # A socket bound to the uplink (SO_BINDTODEVICE, unprivileged since Linux 5.7)
    # sending to a local address: the local route is on another device (lo), so the
    # packet is routed out of the uplink, destination and all.
    fam = socket.AF_INET6 if ":" in a else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, IFNAME.encode())
        s.sendto(tag(name), (a, port))
        return {}
    finally:
        s.close()


def dns_name(name):
    return tag(name).decode() + "x.example.com"


def tcp_dns(name, a):
    q = advlib.dns_query(dns_name(name))
    fam, sa = sockaddr(a, 53)
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect(sa)
        s.sendall(struct.pack("!H", len(q)) + q)
        n = struct.unpack("!H", s.recv(2))[0]
        msg = b""
        while len(msg) < n:
            msg += s.recv(n - len(msg))
        rcode, addrs = advlib.dns_answer_summary(msg)
        return {"rcode": rcode, "addrs": addrs}
    finally:
        s.close()


def quic(name, a):
    # A QUIC v1 long-header Initial: the shape a blocking rule for "UDP 443" must drop.
    return udp(name, a, 443, b"\xc3\x00\x00\x00\x01\x08" + os.urandom(8) + b"\x00" +
               tag(name) + bytes(1100))


def icmp(name, a):
    fam, sa = sockaddr(a, 0)
    if fam == socket.AF_INET6:
        r = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        r.sendto(struct.pack("!BBHHH", 128, 0, 0, 7, 1) + tag(name), sa)
    else:
        r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        m = struct.pack("!BBHHH", 8, 0, 0, 7, 1) + tag(name)
        r.sendto(m[:2] + struct.pack("!H", csum(m)) + m[4:], sa)
    return {}


def raw4_hdrincl(name, a):
    r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    data = tag(name)
    u = struct.pack("!HHHH", 40000, 7000, 8 + len(data), 0) + data
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(u), 1, 0, 64, 17, 0,
                     socket.inet_aton("0.0.0.0"), socket.inet_aton(a))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    r.sendto(ip + u, (a, 0))
    return {}


def raw_proto(name, a, proto=253):
    fam, sa = sockaddr(a, 0)
    socket.socket(fam, socket.SOCK_RAW, proto).sendto(tag(name), sa)
    return {}


def raw6_udp(name, a):
    data = tag(name)
    r = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_UDP)
    r.sendto(struct.pack("!HHHH", 40000, 7000, 8 + len(data), 0) + data, (a, 0, 0, 0))
    return {}


def nd_ns(name):
    # A neighbor solicitation for the peer with hop limit 255 (the shape the rules let
    # through for neighbor discovery), carrying the marker in an unknown option.
    r = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    r.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
    data = tag(name)
    data += b"\0" * (-(len(data) + 2) % 8)
    opt = struct.pack("!BB", 200, (len(data) + 2) // 8) + data
    msg = struct.pack("!BBHI", 135, 0, 0, 0) + socket.inet_pton(socket.AF_INET6, PEER_LL) + opt
    r.sendto(msg, (PEER_LL, 0, 0, IFINDEX))
    return {}


def af_packet(name):
    # A bare Ethernet frame: packet sockets are below netfilter's IP hooks.
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((IFNAME, 0))
    s.send(b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + tag(name) + bytes(40))
    return {}


PROBES = [
    ("tcp4", lambda n: tcp(n, P4)),
    ("tcp6", lambda n: tcp(n, P6)),
    ("tcp6_ll", lambda n: tcp(n, "ll")),
    ("udp4", lambda n: udp(n, P4, 7000)),
    ("udp6", lambda n: udp(n, P6, 7000)),
    ("udp6_ll", lambda n: udp(n, "ll", 7000)),
    ("quic4", lambda n: quic(n, P4)),
    ("quic6", lambda n: quic(n, P6)),
    ("udp4_53_dns", lambda n: udp(n, P4, 53, advlib.dns_query(dns_name(n)), wait=True)),
    ("udp6_53_dns", lambda n: udp(n, P6, 53, advlib.dns_query(dns_name(n)), wait=True)),
    ("udp6_ll_53_dns", lambda n: udp(n, "ll", 53, advlib.dns_query(dns_name(n)), wait=True)),
    ("udp4_53_junk", lambda n: udp(n, P4, 53, wait=True)),
    ("tcp4_53_dns", lambda n: tcp_dns(n, P4)),
    ("tcp6_53_dns", lambda n: tcp_dns(n, P6)),
    ("icmp4", lambda n: icmp(n, P4)),
    ("icmp6", lambda n: icmp(n, P6)),
    ("icmp6_ll", lambda n: icmp(n, "ll")),
    ("raw4_hdrincl", lambda n: raw4_hdrincl(n, P4)),
    ("raw4_proto253", lambda n: raw_proto(n, P4)),
    ("raw6_udp", lambda n: raw6_udp(n, P6)),
    ("raw6_proto253", lambda n: raw_proto(n, P6)),
    ("bcast4", lambda n: udp(n, "255.255.255.255", 7000)),
    ("mcast4", lambda n: udp(n, "224.0.0.251", 5353)),
    ("mcast6", lambda n: udp(n, "ff02::1", 7000)),
    ("udp4_lo_bound", lambda n: udp_bound(n, "127.0.0.1")),
    ("udp4_lo2_bound", lambda n: udp_bound(n, "127.1.2.3")),
    ("udp6_lo_bound", lambda n: udp_bound(n, "::1")),
    ("nd_ns", nd_ns),
    ("af_packet", af_packet),
]


def main():
    for name, fn in PROBES:
        if ONLY and name not in ONLY:
            continue
        try:
            res = fn(name)
            advlib.emit(name, sent="ok", **res)
        except Exception as e:  # every failure is a result here
            advlib.emit(name, sent="%s: %s" % (type(e).__name__, e))


if __name__ == "__main__":
    main()
