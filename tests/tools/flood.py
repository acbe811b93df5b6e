#!/usr/bin/env python3
"""Holds many connections from inside a sandbox, to exhaust what the proxy may hold.

  flood.py conns N READY          N TCP connections to api.example.com:80, each with a
                                   whole request the fake upstream answers only after
                                   100 s (each holds two of the daemon's descriptors)
  flood.py dns N READY [SERVER]   N DNS over TCP connections to SERVER (127.0.0.53),
                                   one query answered on each; prints how many were
                                   answered

Connections that fail or are closed by the proxy are dropped and not retried. READY is
created once all N were tried; the process then holds what it has for 120 s (the
test kills it sooner). Connections end with a reset when it is killed.
"""
import socket
import struct
import sys
import time

LINGER_RST = struct.pack("ii", 1, 0)


def query(qid, name):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", 1, 1)
    return struct.pack(">H", len(q)) + q


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        got = s.recv(n - len(b))
        if not got:
            raise ConnectionError("closed")
        b += got
    return b


def main():
    kind, n, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    socks, answered = [], 0
    if kind == "conns":
        addr = (socket.gethostbyname("api.example.com"), 80)
    else:
        addr = (sys.argv[4] if len(sys.argv) > 4 else "127.0.0.53", 53)
    for i in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        s.settimeout(10)
        try:
            s.connect(addr)
            if kind == "conns":
                s.send(b"GET /slow?delay=100 HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
            else:
                s.sendall(query(i, "q%d.flood.example" % i))
                length = struct.unpack(">H", recv_exact(s, 2))[0]
                recv_exact(s, length)
                answered += 1
        except OSError:
            s.close()
            continue
        socks.append(s)
    if kind == "dns":
        print(answered, flush=True)
    open(ready, "w").close()
    time.sleep(120)


main()
