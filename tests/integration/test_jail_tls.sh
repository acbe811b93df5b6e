#!/usr/bin/env bash
# HTTPS through `authproxy jail`: interception with the sandbox CA (curl, python,
# node), verified upstream TLS, tunnels, per-request path rules, SNI/Host agreement,
# streaming (SSE, WebSocket), denied TLS destinations answered in TLS.
#
#   jail netns                               host netns
#   +-------------------------------+        +-------------------------------------+
#   | clients trust the sandbox CA  | -nft-> | authproxy: TLS server (sandbox CA)   |
#   | via the bind-mounted bundle   |        |   -> TLS client, verified against   |
#   +-------------------------------+        |      --upstream-ca -> fake upstreams |
#                                            +-------------------------------------+
. "$(dirname "$0")/lib.sh"

make_ca "$T/ca" api.example.com tunnel.example.com stream.example.com
make_ca "$T/ca2" untrusted.example.com
start_upstream tls "$T/ca/server.pem" "$T/ca/server.key"
start_upstream bad "$T/ca2/server.pem" "$T/ca2/server.key"
mkdir -p "$T/secrets"
printf 'sk-tls-%s\n' "$$" > "$T/secrets/KEY"
SECRET="sk-tls-$$"

cat > "$T/config.json" <<EOF
{
  "rules": [
    { "name": "api", "match_hosts": ["api.example.com", "stream.example.com"],
      "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] },
    { "name": "admin-only", "match_hosts": ["api.example.com"], "match_paths": ["/admin/*"],
      "headers": [ { "name": "X-Admin", "type": "plaintext", "value": "1" } ] },
    { "name": "wrong", "match_hosts": ["wrongname.example.com", "untrusted.example.com"],
      "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] }
  ],
  "egress": { "default": "allow", "deny": ["denied.example.com"] },
  "dns": { "remap": {
    "api.example.com": "127.0.0.1:$tls_PORT",
    "stream.example.com": "127.0.0.1:$tls_PORT",
    "tunnel.example.com": "127.0.0.1:$tls_PORT",
    "wrongname.example.com": "127.0.0.1:$tls_PORT",
    "untrusted.example.com": "127.0.0.1:$bad_PORT"
  } }
}
EOF

run() {
  jail --config "$T/config.json" --secrets-dir "$T/secrets" --upstream-ca "$T/ca/ca.pem" \
    --user nobody -- "$@"
}

# curl: intercepted, injected, trusted through the bind-mounted bundle.
out=$(run curl -sS https://api.example.com/v1/models)
assert_contains "$out" '"ok": true' "curl through interception"
assert_not_contains "$out" "$SECRET" "secret reached the sandbox"
assert_eq "$(upq tls 'hdr(reqs[-1], "Authorization")')" "$(jlist "Bearer $SECRET")" "curl: injected"
assert_eq "$(upq tls 'reqs[-1]["sni"]')" "api.example.com" "upstream SNI is the name"
pass "curl: intercepted and injected"

# Under search domains tried first (a Kubernetes pod's resolver), the connection's DNS
# name is api.example.com.default.svc.cluster.local: the SNI, the client's own name,
# is the destination, intercepted and injected for.
out=$(run env LOCALDOMAIN="default.svc.cluster.local svc.cluster.local" RES_OPTIONS=ndots:5 \
  curl -sS https://api.example.com/search)
assert_contains "$out" '"path": "/search"' "curl under search domains"
assert_eq "$(upq tls 'hdr(reqs[-1], "Authorization")')" "$(jlist "Bearer $SECRET")" \
  "injected under search domains"
pass "a name resolved through search domains yields to the SNI the client sends"

# python3 urllib with its default context (SSL_CERT_FILE / the system bundle).
out=$(run "$PY" -c '
import urllib.request
print(urllib.request.urlopen("https://api.example.com/py").read().decode())')
assert_contains "$out" '"path": "/py"' "python through interception"
assert_eq "$(upq tls 'hdr(reqs[-1], "Authorization")')" "$(jlist "Bearer $SECRET")" "python: injected"
pass "python urllib: intercepted and injected"

# node's https module (NODE_EXTRA_CA_CERTS).
if command -v node >/dev/null 2>&1; then
  out=$(run node -e '
require("https").get("https://api.example.com/node", r => {
  let b = ""; r.on("data", d => b += d); r.on("end", () => console.log(r.statusCode, b));
}).on("error", e => { console.log("error", e.message); process.exit(1); });')
  assert_contains "$out" "200" "node through interception"
  assert_eq "$(upq tls 'hdr(reqs[-1], "Authorization")')" "$(jlist "Bearer $SECRET")" "node: injected"
  pass "node https: intercepted and injected"
else
  echo "note: node not installed; node client not exercised"
fi

# Path rules per request on one keep-alive TLS connection.
: > "$T/tls.jsonl"
run curl -sS -o /dev/null -o /dev/null https://api.example.com/admin/x https://api.example.com/user
assert_eq "$(upq tls 'len(set(r["conn"] for r in reqs))')" "1" "one keep-alive connection"
assert_eq "$(upq tls 'hdr(reqs[0], "X-Admin")')" "$(jlist "1")" "path rule hit"
assert_eq "$(upq tls 'hdr(reqs[1], "X-Admin")')" "[]" "path rule miss"
pass "path rules per request inside TLS"

# A destination without rules is tunnelled: the sandbox verifies the upstream's own
# certificate end to end, and nothing is injected.
: > "$T/tls.jsonl"
out=$(run curl -sS --cacert "$T/ca/ca.pem" -H 'Authorization: Bearer own' https://tunnel.example.com/t)
assert_contains "$out" '"ok": true' "tunnel"
assert_eq "$(upq tls 'hdr(reqs[-1], "Authorization")')" "$(jlist "Bearer own")" "tunnel untouched"
pass "tunnel with the upstream's own certificate"

# Upstream certificate for another name, or from an untrusted CA: 502, nothing sent.
for host in wrongname.example.com untrusted.example.com; do
  : > "$T/tls.jsonl"; : > "$T/bad.jsonl"
  out=$(run curl -sS -D - "https://$host/secret" || true)
  assert_contains "$out" "502" "$host: status"
  assert_contains "$out" "upstream_tls_failed" "$host: reason"
  assert_eq "$(upq tls 'len(reqs)')" "0" "$host: request reached an unverified upstream"
  assert_eq "$(upq bad 'len(reqs)')" "0" "$host: request reached an untrusted upstream"
done
pass "unverified upstreams get nothing"

# Host must agree with the SNI.
: > "$T/tls.jsonl"
out=$(run curl -sS -D - -H 'Host: tunnel.example.com' https://api.example.com/ || true)
assert_contains "$out" "403" "host/sni mismatch status"
assert_contains "$out" "host_mismatch" "host/sni mismatch reason"
assert_eq "$(upq tls 'len(reqs)')" "0" "mismatch forwarded"
pass "SNI/Host mismatch denied"

# A denied TLS destination gets a readable 403 inside TLS.
out=$(run curl -sS -D - https://denied.example.com/ || true)
assert_contains "$out" "403" "denied TLS status"
assert_contains "$out" "X-Authproxy-Error: egress_deny" "denied TLS header"
pass "denied TLS destination answered with 403 JSON"

# Server-Sent Events arrive as they are sent, not when the stream ends.
: > "$T/tls.jsonl"
out=$(run "$PY" -c '
import time, urllib.request
r = urllib.request.urlopen("https://stream.example.com/sse?n=4&delay=0.4")
first = None
for line in r:
    if line.startswith(b"data:") and first is None:
        first = time.time()
print("%.3f" % first)')
last_sent=$(upq tls '[e["t"] for e in events if e.get("event") == "sse_sent"][-1]')
"$PY" -c "import sys; sys.exit(0 if $out < $last_sent else 1)" ||
  fail "first SSE event ($out) arrived only after the last was sent ($last_sent)"
pass "Server-Sent Events stream incrementally"

# WebSocket through interception: injected on the upgrade, then frames both ways, then
# the close frames; the upstream then ends its TLS with a close_notify, or (?cut=1)
# without one, and the sandbox's ends the same way (a strict client tells them apart).
: > "$T/tls.jsonl"
out=$(run "$PY" -c '
import base64, os, socket, ssl
ctx = ssl.create_default_context()
ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
def frame(op, msg):
    mask = os.urandom(4)
    return bytes([0x80 | op, 0x80 | len(msg)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg))
for path in ("/ws", "/ws?cut=1"):
    s = ctx.wrap_socket(socket.create_connection(("stream.example.com", 443)),
                        server_hostname="stream.example.com", suppress_ragged_eofs=False)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: stream.example.com\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
               % (path, key)).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    head, rest = buf.split(b"\r\n\r\n", 1)
    s.sendall(frame(1, b"hello"))
    while len(rest) < 2 or len(rest) < 2 + rest[1]:
        rest += s.recv(4096)
    echo = rest[2:2 + rest[1]].decode()
    s.sendall(frame(8, b""))
    end = "clean"
    try:
        while s.recv(4096):
            pass
    except (ConnectionError, ssl.SSLError):
        end = "error"
    print(path, head.split(b"\r\n")[0].decode(), echo, end)')
assert_eq "$out" "/ws HTTP/1.1 101 Switching Protocols echo:hello clean
/ws?cut=1 HTTP/1.1 101 Switching Protocols echo:hello error" "websocket: upgrade, frames, end"
assert_eq "$(upq tls 'hdr(reqs[-1], "Authorization")')" "$(jlist "Bearer $SECRET")" "ws: injected"
pass "WebSocket through interception, its end passed on as the upstream made it"

# Session resumption on both sides: a reconnecting client resumes with the proxy's
# ticket, and the proxy resumes its own session with the upstream (/close: the
# upstream closes each connection, so the second one is not served from the pool).
: > "$T/tls.jsonl"
out=$(run "$PY" -c '
import socket, ssl
ctx = ssl.create_default_context()
sess = None
for i in range(2):
    s = ctx.wrap_socket(socket.create_connection(("api.example.com", 443)),
                        server_hostname="api.example.com", session=sess)
    s.sendall(b"GET /close HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")
    while s.recv(65536):
        pass
    print("reused" if s.session_reused else "full")
    sess = s.session
    s.close()')
assert_eq "$(echo $out)" "full reused" "sandbox-side resumption"
assert_eq "$(upq tls '[e["resumed"] for e in events if e["event"] == "conn"]')" "[false, true]" \
  "upstream-side resumption"
pass "TLS sessions resume on both sides"

# A body delimited by the upstream's close, ended by a bare FIN (no close_notify, which
# anyone on the path can send): the sandbox's TLS ends the same way, without the
# close_notify that would vouch for the whole body, so a strict client sees what it
# would see from the upstream directly. With a close_notify (/close) it ends cleanly.
out=$(run "$PY" -c '
import socket, ssl
ctx = ssl.create_default_context()
# Strict about the end, as OpenSSL 3 C clients (curl) are by default; Debian'"'"'s Python
# sets OP_IGNORE_UNEXPECTED_EOF, which takes any end for a clean one.
ctx.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
for path in ("/close", "/cut"):
    s = ctx.wrap_socket(socket.create_connection(("api.example.com", 443)),
                        server_hostname="api.example.com", suppress_ragged_eofs=False)
    s.sendall(b"GET %s HTTP/1.1\r\nHost: api.example.com\r\n\r\n" % path.encode())
    data, end = b"", "clean"
    try:
        while True:
            k = s.recv(65536)
            if not k:
                break
            data += k
    except (ConnectionError, ssl.SSLError):
        end = "error"
    print(path, end, b"until close" in data if end == "clean" else "")')
assert_eq "$(echo $out)" "/close clean True /cut error" "ends of close-delimited bodies"
pass "a close-delimited body cut without close_notify is not passed on as whole"

# ALPN: interception speaks HTTP/1.1. A client offering h2 and http/1.1 (curl, most
# HTTP libraries) gets http/1.1; one offering only h2 (gRPC) fails the handshake with
# the no_application_protocol alert, and the log and audit record say why.
cat > "$T/alpn.py" <<'PYEOF'
import socket, ssl, sys
ctx = ssl.create_default_context()
ctx.set_alpn_protocols(sys.argv[1].split(","))
try:
    s = ctx.wrap_socket(socket.create_connection(("api.example.com", 443), timeout=10),
                        server_hostname="api.example.com")
except ssl.SSLError as e:
    print("failed:", "no_application_protocol" if "NO_APPLICATION_PROTOCOL" in
          str(e).upper().replace(" ", "_") else e)
    sys.exit(0)
s.sendall(b"GET /alpn HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")
print(s.selected_alpn_protocol(), s.recv(4096).split(b"\r\n")[0].decode())
PYEOF
chmod 644 "$T/alpn.py"
out=$(jail --config "$T/config.json" --secrets-dir "$T/secrets" --upstream-ca "$T/ca/ca.pem" \
  --log "$T/alpn-audit.jsonl" --user nobody -- sh -c \
  "'$PY' '$T/alpn.py' h2,http/1.1; '$PY' '$T/alpn.py' h2" 2> "$T/alpn.log")
assert_eq "$out" "http/1.1 HTTP/1.1 200 OK
failed: no_application_protocol" "ALPN h2,http/1.1 then h2 alone"
assert_contains "$(cat "$T/alpn.log")" \
  "the client of api.example.com offers h2 but not http/1.1 in ALPN" "the jail's log"
assert_eq "$("$PY" -c '
import json, sys
print([r.get("reason") for r in map(json.loads, open(sys.argv[1])) if r["event"] == "conn"][-1])' \
  "$T/alpn-audit.jsonl")" "sandbox_alpn_not_http11" "the h2-only connection's audited reason"
pass "ALPN: http/1.1 chosen beside h2; an h2-only client refused with a reason"
