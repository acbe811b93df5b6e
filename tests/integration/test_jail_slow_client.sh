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
# On other ports silence still means "the server speaks first", but where a rule
# injects headers the relay is a probe: if the client speaks before the server, the
# upstream (sent nothing) is closed and the client's bytes are judged after all. A
# slow client of an API on 8080 or 8443 used to be relayed without its credentials;
# a protocol where the server does speak first is relayed as before.
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

# The other ports: slow clients of a rule's host, and a protocol where the server
# speaks first at that host (a greeting, then an echo).
start_tcp_server greeter --banner '220 greeter ready\r\n'
sed -e 's/"plain.example.com"\]/"plain.example.com", "smtp.example.com"]/' \
  -e "s/\"plain.example.com\": \"127.0.0.1:$plain_PORT\"/&, \"smtp.example.com\": \"127.0.0.1:$greeter_PORT\"/" \
  "$T/config.json" > "$T/config-ports.json"
grep -q smtp.example.com.*127.0.0.1 "$T/config-ports.json" || fail "config-ports.json: $(cat "$T/config-ports.json")"
out=$(jail --config "$T/config-ports.json" --log "$T/audit-ports.jsonl" --secrets-dir "$T/secrets" --upstream-ca "$T/ca/ca.pem" \
  --user nobody -- "$PY" -c '
import socket, ssl, time
dests = (("api.example.com", 8443), ("plain.example.com", 8080), ("smtp.example.com", 2525))
socks = [socket.create_connection(d, timeout=10) for d in dests]
time.sleep(1)  # twice the 500 ms after which silence means "the server speaks first"
for (host, port), s in zip(dests, socks):
    try:
        if port == 2525:
            greeting = s.recv(4096)
            s.sendall(b"QUIT\r\n")
            print(port, greeting.decode().strip(), "/", s.recv(4096).decode().strip())
            continue
        if port == 8443:
            s = ssl.create_default_context().wrap_socket(s, server_hostname=host)
        s.sendall(b"GET /slow-%d HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
                  % (port, host.encode(), port))
        print(port, s.recv(4096).split(b"\r\n")[0].decode())
    except (OSError, ssl.SSLError) as e:
        print(port, "failed:", e)' 2> "$T/jail-ports.log")
assert_eq "$out" "8443 HTTP/1.1 200 OK
8080 HTTP/1.1 200 OK
2525 220 greeter ready / QUIT" "answers on the other ports"
assert_eq "$(upq tls 'next(hdr(r, "Authorization") for r in reqs if r["path"] == "/slow-8443")')" \
  "$(jlist "Bearer sk-slow-$$")" "injected for the slow TLS client on 8443"
assert_eq "$(upq plain 'next(hdr(r, "Authorization") for r in reqs if r["path"] == "/slow-8080")')" \
  "$(jlist "Bearer sk-slow-$$")" "injected for the slow plain HTTP client on 8080"
# Each connection has one record, with what was done with it in the end.
assert_eq "$("$PY" -c '
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
print(" ".join(sorted("%s:%s" % (r["dst"].rsplit(":", 1)[1], r["action"]) for r in recs if r.get("event") == "conn")))' \
  "$T/audit-ports.jsonl")" "2525:tunnel 8080:intercept 8443:intercept" "the connections' records"
pass "silent for 1 s on 8443 and 8080 at a rule's host: intercepted; a greeting server there still relayed"

# A probe reads the sandbox's side as a relay does, in reads of up to 256 KiB; the
# bytes it resniffs must fit what sniffing takes (64 KiB, a ClientHello's bound). A
# slow client whose request and body came in one write larger than that was reset
# (sniff_too_large) instead of being intercepted.
out=$(jail --config "$T/config-ports.json" --secrets-dir "$T/secrets" --upstream-ca "$T/ca/ca.pem" \
  --user nobody -- "$PY" -c '
import socket, time
s = socket.create_connection(("plain.example.com", 8080), timeout=10)
time.sleep(1)  # twice the 500 ms after which silence means "the server speaks first"
body = b"x" * 200000
try:
    s.sendall(b"POST /slow-big HTTP/1.1\r\nHost: plain.example.com:8080\r\nContent-Length: %d\r\n"
              b"Connection: close\r\n\r\n%s" % (len(body), body))
    print(s.recv(4096).split(b"\r\n")[0].decode())
except OSError as e:
    print("failed:", e)' 2> "$T/jail-big.log")
assert_eq "$out" "HTTP/1.1 200 OK" "the slow client's 200 KB request in one write"
assert_eq "$(upq plain 'next("%s %d" % (json.dumps(hdr(r, "Authorization")), r["body_len"]) for r in reqs if r["path"] == "/slow-big")')" \
  "$(jlist "Bearer sk-slow-$$") 200000" "the slow client's large request upstream"
pass "a slow client's request larger than 64 KiB in one write is intercepted"

# Where request-level egress policy applies (with injected headers or without), an
# opaque relay is refused, since its requests cannot be held to the policy: a slow
# client there was reset (uninspectable_protocol) 500 ms after its connect. The relay
# is a probe there too, and a server that speaks first is refused.
sed -e 's/"dns":/"egress": { "deny": [ { "hosts": ["api.example.com", "plain.example.com", "ro.example.com", "smtp.example.com"], "methods": ["DELETE"] } ] },\n  "dns":/' \
  -e "s/\"smtp.example.com\": /\"ro.example.com\": \"127.0.0.1:$plain_PORT\", &/" \
  "$T/config-ports.json" > "$T/config-policy.json"
grep -q ro.example.com.*127.0.0.1 "$T/config-policy.json" || fail "config-policy.json: $(cat "$T/config-policy.json")"
out=$(jail --config "$T/config-policy.json" --log "$T/audit-policy.jsonl" --secrets-dir "$T/secrets" \
  --upstream-ca "$T/ca/ca.pem" --user nobody -- "$PY" -c '
import socket, ssl, time
dests = (("api.example.com", 8443), ("plain.example.com", 8080), ("ro.example.com", 8080),
         ("smtp.example.com", 2525))
socks = [socket.create_connection(d, timeout=10) for d in dests]
time.sleep(1)  # twice the 500 ms after which silence means "the server speaks first"
for (host, port), s in zip(dests, socks):
    try:
        if port == 2525:
            print(port, "greeting:", s.recv(4096))
            continue
        if port == 8443:
            s = ssl.create_default_context().wrap_socket(s, server_hostname=host)
        s.sendall(b"GET /policy-%s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
                  % (host.split(".")[0].encode(), host.encode(), port))
        # The whole answer, up to the close by the proxy: unread, it would end the
        # connection with a reset, audited as an error of the sandbox.
        answer = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            answer += d
        print(port, answer.split(b"\r\n")[0].decode())
    except (OSError, ssl.SSLError) as e:
        print(port, "failed:", type(e).__name__)' 2> "$T/jail-policy.log")
assert_eq "$out" "8443 HTTP/1.1 200 OK
8080 HTTP/1.1 200 OK
8080 HTTP/1.1 200 OK
2525 failed: ConnectionResetError" "answers where request-level policy applies"
assert_eq "$(upq plain 'next(json.dumps(hdr(r, "Authorization")) for r in reqs if r["path"] == "/policy-plain")')" \
  "$(jlist "Bearer sk-slow-$$")" "injected for the slow client at a host with request-level policy"
assert_eq "$("$PY" -c '
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
print(" ".join(sorted("%s:%s:%s" % (r["name"].split(".")[0], r["action"], r.get("reason", "-"))
                      for r in recs if r.get("event") == "conn")))' "$T/audit-policy.jsonl")" \
  "api:intercept:- plain:intercept:- ro:intercept:- smtp:deny:uninspectable_protocol" \
  "the connections' records"
pass "slow clients where request-level policy applies are intercepted; a server speaking first is refused"
