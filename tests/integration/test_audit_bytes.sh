#!/usr/bin/env bash
# A connection record's bytes_up and bytes_down are the bytes that crossed the sandbox's
# side: what the sandbox sent, and what it received, TLS records included. bytes_down
# used to count what the upstream sent the proxy instead: nothing for an answer the
# proxy gives itself (a 403 denial, a 502), nor for its TLS handshake with the sandbox,
# and the upstream's TLS handshake and records for an intercepted connection.
# A request record's are the sandbox's too: on plain HTTP its requests' bytes add up
# to its connection's. They used to be the head as rewritten for the upstream (the
# injected headers in it) and 0 for a request the proxy answered itself.
#
#   jail --log: client (counts every byte on its socket) --> authproxy
#     --> deny.example.com: 403 from the proxy (plain HTTP)
#     --> plain.example.com: plain HTTP, 2 requests, headers injected --> plain upstream
#     --> api.example.com: intercepted, 2 requests (one a 1 MiB download) --> TLS upstream
#     --> dead.example.com: intercepted, upstream refuses the connection: 502 in TLS
#     --> tun.example.com: tunnelled to the TLS upstream
. "$(dirname "$0")/lib.sh"

make_ca "$T/ca" api.example.com tun.example.com
start_upstream tls "$T/ca/server.pem" "$T/ca/server.key"
start_upstream plain
cat > "$T/config.json" <<EOF2
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com", "dead.example.com", "plain.example.com"],
    "headers": [ { "name": "Authorization", "type": "plaintext", "value": "Bearer x" } ] } ],
  "egress": { "deny": ["deny.example.com"] },
  "dns": { "remap": { "api.example.com": "127.0.0.1:$tls_PORT", "tun.example.com": "127.0.0.1:$tls_PORT",
                      "dead.example.com": "127.0.0.1:1", "plain.example.com": "127.0.0.1:$plain_PORT" } } }
EOF2

jail --config "$T/config.json" --upstream-ca "$T/ca/ca.pem" --user nobody \
  --log "$T/audit.jsonl" -- "$PY" - "$T/ca/ca.pem" > "$T/client.out" 2> "$T/client.log" <<'PYEOF' ||
import json, socket, ssl, sys

class Conn:
    """A connection that counts the bytes crossing its socket, TLS or not."""
    def __init__(self, host, port, cafile=None, tls=False):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sent = self.got = 0
        self.tls = None
        if tls:
            ctx = ssl.create_default_context(cafile=cafile)
            self.inb, self.outb = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = ctx.wrap_bio(self.inb, self.outb, server_hostname=host)
            self.pump(self.tls.do_handshake)
    def flush(self):
        d = self.outb.read()
        self.sock.sendall(d)
        self.sent += len(d)
    def pump(self, fn, *a):
        while True:
            try:
                r = fn(*a)
                self.flush()
                return r
            except ssl.SSLWantReadError:
                self.flush()
                d = self.sock.recv(65536)
                self.got += len(d)
                self.inb.write(d) if d else self.inb.write_eof()
    def ask(self, path, host, body=b""):
        req = b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s" % (
            b"POST" if body else b"GET", path.encode(), host.encode(), len(body), body)
        if self.tls:
            self.pump(self.tls.write, req)
        else:
            self.sock.sendall(req)
            self.sent += len(req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += self.read()
        head, _, body = buf.partition(b"\r\n\r\n")
        n = int([l.split(b":")[1] for l in head.split(b"\r\n")
                 if l.lower().startswith(b"content-length:")][0])
        while len(body) < n:
            body += self.read()
        return int(head.split(b" ")[1]), len(body)
    def read(self):
        if self.tls:
            return self.pump(self.tls.read, 65536)
        d = self.sock.recv(65536)
        self.got += len(d)
        return d
    def end(self):
        # Half-closed; every byte the proxy sends until it closes is counted.
        self.sock.shutdown(socket.SHUT_WR)
        while True:
            d = self.sock.recv(65536)
            if not d:
                break
            self.got += len(d)
        self.sock.close()
        return [self.sent, self.got]

out = []
c = Conn("deny.example.com", 80)
out.append(["deny", c.ask("/", "deny.example.com")] + c.end())
c = Conn("plain.example.com", 80)
out.append(["plain", [c.ask("/up", "plain.example.com", b"u" * 5000), c.ask("/b", "plain.example.com")]] + c.end())
c = Conn("api.example.com", 443, tls=True)
out.append(["intercept", [c.ask("/a", "api.example.com"), c.ask("/big?bytes=1048576", "api.example.com")]] + c.end())
c = Conn("dead.example.com", 443, tls=True)
out.append(["dead", c.ask("/", "dead.example.com")] + c.end())
c = Conn("tun.example.com", 443, cafile=sys.argv[1], tls=True)
out.append(["tunnel", c.ask("/t", "tun.example.com")] + c.end())
print(json.dumps(out))
PYEOF
  fail "the client failed: $(cat "$T/client.log")"

assert_eq "$("$PY" -c 'import json, sys; print([r[1] for r in json.load(open(sys.argv[1]))])' \
  "$T/client.out" | sed -E 's/\[(200|403|502), [0-9]+\]/\1/g')" "[403, [200, 200], [200, 200], 502, 200]" \
  "answers the client got"
# Per connection, in order: "name: action up down" from the log and from the client.
"$PY" - "$T/audit.jsonl" "$T/client.out" > "$T/compare.txt" <<'PYEOF'
import json, sys
conns = sorted((json.loads(l) for l in open(sys.argv[1]) if '"event":"conn"' in l),
               key=lambda r: r["conn"])
sent = json.load(open(sys.argv[2]))
print(json.dumps([[r["name"], r.get("action"), r["bytes_up"], r["bytes_down"]] for r in conns]))
print(json.dumps([[r["name"], r.get("action"), s[2], s[3]] for r, s in zip(conns, sent)]))
PYEOF
assert_eq "$(sed -n 1p "$T/compare.txt")" "$(sed -n 2p "$T/compare.txt")" \
  "bytes in the connection records against the bytes the sandbox sent and received"
pass "bytes_up and bytes_down are the sandbox's bytes: proxy's answers, TLS and tunnels alike"

# Plain HTTP: each connection's requests add up to it, the proxy's 403 included.
assert_eq "$("$PY" - "$T/audit.jsonl" <<'PYEOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
for c in recs:
    if c["event"] == "conn" and c["protocol"] == "http":
        reqs = [r for r in recs if r["event"] == "request" and r["conn"] == c["conn"]]
        print(c["name"], len(reqs), [c["bytes_up"], c["bytes_down"]] ==
              [sum(r["bytes_up"] for r in reqs), sum(r["bytes_down"] for r in reqs)])
PYEOF
)" "deny.example.com 1 True
plain.example.com 2 True" "plain HTTP connections: their requests' bytes add up to theirs"
pass "a request's bytes are the sandbox's"
