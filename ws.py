import socket, sys, os, time
def frame(t):
    m=os.urandom(4); p=t.encode()
    return bytes([0x81,0x80|len(p)])+m+bytes(b^m[i%4] for i,b in enumerate(p))
s=socket.create_connection(("api.example.com",80),timeout=5)
req=(b"GET /ws HTTP/1.1\r\nHost: api.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
mode=sys.argv[1]
if mode=="same": s.sendall(req+frame("early1"))
else:
    s.sendall(req); s.sendall(frame("early1"))
s.sendall(frame("early2"))
d=b""
try:
    while d.count(b"echo:")<2:
        k=s.recv(65536)
        if not k: break
        d+=k
except Exception as e: d+=("<%s>"%e).encode()
print(mode, d.split(b"\r\n")[0], d.count(b"echo:early1"), d.count(b"echo:early2"))
