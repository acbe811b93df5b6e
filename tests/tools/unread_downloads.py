#!/usr/bin/env python3
"""unread_downloads.py N BYTES SENT GO: N plain-HTTP connections to api.example.com
(port 80, through the sandbox's capture), each asking the fake upstream for BYTES
(/big?bytes=BYTES) with a small receive buffer and left unread; creates the file
SENT once all are sent, waits (at most 60 s) for the file GO, then reads every
answer to its end and prints the total body bytes. The queue budget tests use it to
make the proxy hold what a sandbox does not read."""
import os, socket, sys, time
n, size, sent, go = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
addr = socket.gethostbyname("api.example.com")
socks = []
for i in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(30)
    s.connect((addr, 80))
    s.sendall(b"GET /big?bytes=%d HTTP/1.1\r\nHost: api.example.com\r\n"
              b"Connection: close\r\n\r\n" % size)
    socks.append(s)
open(sent, "w").close()
for _ in range(1200):
    if os.path.exists(go):
        break
    time.sleep(0.05)
total = 0
for s in socks:
    data = bytearray()
    while True:
        b = s.recv(1 << 20)
        if not b:
            break
        data += b
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:80]
    total += len(body)
print(total)
