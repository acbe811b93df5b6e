#!/usr/bin/env python3
"""A stand-in for the host's nscd (glibc's name service cache daemon): glibc asks it
for every getaddrinfo, whatever /etc/nsswitch.conf and /etc/resolv.conf say, over the
Unix socket /var/run/nscd/socket, and a real nscd resolves the name with the host's
resolver. Each request is logged as a JSON line ({"type": N, "key": NAME}); a host
lookup (GETAI) is answered with the address given, so a client that used it shows it.

Usage: fake_nscd.py SOCKET LOG ADDRESS   ({"ready": true} is logged first)
"""
import json
import os
import socket
import struct
import sys

NSCD_VERSION = 2
GETAI = 14


def read_all(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def main():
    path, log_path, addr = sys.argv[1], sys.argv[2], sys.argv[3]
    packed = socket.inet_aton(addr)
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o666)
    srv.listen(16)
    log = open(log_path, "a", buffering=1)
    log.write(json.dumps({"ready": True}) + "\n")
    while True:
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(5)
            try:
                head = read_all(conn, 12)
                if head is None:
                    continue
                version, rtype, key_len = struct.unpack("=iii", head)
                key = read_all(conn, key_len) if 0 <= key_len <= 1024 else None
                if version != NSCD_VERSION or key is None:
                    continue
                log.write(json.dumps({"type": rtype,
                                      "key": key.rstrip(b"\0").decode("latin-1")}) + "\n")
                if rtype != GETAI:
                    continue  # no shared mapping: the client asks over the socket
                # ai_response_header: version, found, naddrs, addrslen, canonlen, error;
                # then the addresses, one family byte each, no canonical name.
                conn.sendall(struct.pack("=iiiiii", NSCD_VERSION, 1, 1, 4, 0, 0) +
                             packed + bytes([socket.AF_INET]))
            except OSError:
                pass


if __name__ == "__main__":
    main()
