#!/usr/bin/env python3
"""Sniffs every frame that arrives on an interface (AF_PACKET, all protocols) and
logs, as JSON lines, the frames carrying a marker: a test's probes put the marker in
every payload, so whatever leaks past the sandbox's rules is caught whatever its
protocol (TCP, UDP, ICMP, raw IP, neighbor discovery, bare Ethernet).

Usage: witness.py IFNAME MARKER LOG   ({"ready": true} is logged first)
"""
import json
import socket
import sys

ETH_P_ALL = 3


def main():
    ifname, marker, path = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((ifname, 0))
    log = open(path, "a", buffering=1)
    log.write(json.dumps({"ready": True}) + "\n")
    while True:
        frame, addr = s.recvfrom(65535)
        if addr[2] == socket.PACKET_OUTGOING or marker not in frame:
            continue
        ethertype = int.from_bytes(frame[12:14], "big")
        proto = {0x0800: frame[23:24], 0x86DD: frame[20:21]}.get(ethertype, b"")
        i = frame.index(marker)
        log.write(json.dumps({"ethertype": "0x%04x" % ethertype,
                              "proto": proto[0] if proto else None,
                              "tag": frame[i:i + 64].decode("latin-1")}) + "\n")


if __name__ == "__main__":
    main()
