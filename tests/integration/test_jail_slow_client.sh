#!/usr/bin/env bash
# A client slow to send its first bytes on ports 80 and 443 is still intercepted.
# A connection that sends nothing for 500 ms is taken for a protocol where the server
# speaks first and relayed as opaque bytes; on the ports of HTTP and HTTPS that
# judged a busy client (curl with 50 transfers at once sent some ClientHellos 0.6 s
# after connecting) to be one, and tunnelled its requests to a host whose rule injects
# a credential: past the interception, without the credential (the upstream answers
# 401), or, over TLS, with the upstream's certificate instead of the sandbox CA's.
# There the first bytes are now awaited as on an idle connection.
#
#   jail: client (connect, 1 s of silence, request) -> authproxy -> fake upstreams
. "$(dirname "$0")/lib.sh"

make_ca "$T/ca" api.example.com
start_upstream tls "$T/ca/server.pem" "$T/ca/server.key"
start_upstream plain
mkdir -p "$T/secrets"
printf 'sk-slow-%s\n' "$$" > "$T/secrets/KEY"
cat > "$T/config.json" <<EOF2
{ "rules": [ { "name": "api", "allow_plain_http": true,
    "match_hosts": ["api.example.com", "plain.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$tls_PORT",
                      "plain.example.com": "127.0.0.1:$plain_PORT" } } }
EOF2

out=$(jail --config "$T/config.json" --secrets-dir "$T/secrets" --upstream-ca "$T/ca/ca.pem" \
  --user nobody -- "$PY" -c '
import socket, ssl, time
dests = (("api.example.com", 443), ("plain.example.com", 80))
socks = [socket.create_connection(d, timeout=10) for d in dests]
time.sleep(1)  # twice the 500 ms after which silence means "the server speaks first"
for (host, port), s in zip(dests, socks):
    try:
        if port == 443:
            s = ssl.create_default_context().wrap_socket(s, server_hostname=host)
        s.sendall(b"GET /slow HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host.encode())
        print(port, s.recv(4096).split(b"\r\n")[0].decode())
    except (OSError, ssl.SSLError) as e:
        print(port, "failed:", e)' 2> "$T/jail.log")
assert_eq "$out" "443 HTTP/1.1 200 OK
80 HTTP/1.1 200 OK" "answers to the slow clients"
assert_eq "$(upq tls 'hdr(reqs[-1], "Authorization")')" "$(jlist "Bearer sk-slow-$$")" \
  "injected for the slow TLS client"
assert_eq "$(upq plain 'hdr(reqs[-1], "Authorization")')" "$(jlist "Bearer sk-slow-$$")" \
  "injected for the slow plain HTTP client"
pass "silent for 1 s on 443 and 80, then intercepted and injected"
