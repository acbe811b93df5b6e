#!/usr/bin/env bash
# A client that gives up on a request before its answer comes closes its connection:
# the OpenAI and Anthropic SDKs on their request timeout (`timeout`, 10 minutes by
# default, then a retry) or an AbortController's abort; Node's fetch destroys the
# socket, a bare FIN without a close_notify. Directly, the API server sees that end
# and a server that watches for it (Go's net/http, an ASGI server) stops working on
# the answer. Through the proxy it used to see nothing: the upstream request ran on
# until it answered, into a closed connection (up to --idle-timeout later), and each
# retry of a timed-out call added one more; the audit said 200. The proxy now passes
# the sandbox's end on to the upstream, and the request's record says it was cut by
# the sandbox. (A client that only half-closes still gets its answer:
# test_half_close.sh.)
#
#   jail netns                                   host netns
#   +-----------------------------------+        +-----------------------------------+
#   | python: POST /think?delay=60 over  | -nft-> | authproxy (intercepts, injects)   |
#   | TLS, then close() once the upstream|        |   -> fake upstream /think: works   |
#   | has it (no close_notify)           |        |   60 s unless the client goes away |
#   +-----------------------------------+        +-----------------------------------+
. "$(dirname "$0")/lib.sh"

make_ca "$T/ca" api.example.com
start_upstream tls "$T/ca/server.pem" "$T/ca/server.key"
mkdir -p "$T/secrets"
printf 'sk-abort-%s\n' "$$" > "$T/secrets/KEY"
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$tls_PORT" } } }
EOF

# The client closes once the upstream has logged the request (the log is readable in
# the jail), then stays until the test is done, so that the jail's end does not close
# the connections for it.
jail --config "$T/config.json" --secrets-dir "$T/secrets" --upstream-ca "$T/ca/ca.pem" \
  --log "$T/audit.jsonl" --user nobody -- "$PY" -c '
import os, socket, ssl, sys, time
t = sys.argv[1]
s = ssl.create_default_context().wrap_socket(socket.create_connection(("api.example.com", 443)),
                                             server_hostname="api.example.com")
body = b"{\"model\": \"m\", \"messages\": []}"
s.sendall(b"POST /think?delay=60 HTTP/1.1\r\nHost: api.example.com\r\n"
          b"Content-Type: application/json\r\nAuthorization: Bearer dummy\r\n"
          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
for _ in range(400):
    if b"/think" in open(t + "/tls.jsonl", "rb").read():
        break
    time.sleep(0.05)
s.close()  # as Node destroys a socket: no close_notify
for _ in range(600):
    if os.path.exists(t + "/stop"):
        break
    time.sleep(0.05)
' "$T" > "$T/client.log" 2>&1 &
JAIL=$!
PIDS+=($JAIL)

wait_for "grep -q '\"/think' '$T/tls.jsonl'" 20
assert_eq "$(upq tls '[hdr(r, "Authorization") for r in reqs]')" \
  "[[\"Bearer sk-abort-$$\"]]" "the request went out with the credential"
wait_for "grep -q client_gone '$T/tls.jsonl'" 20
pass "the upstream learns that the client went away"

: > "$T/stop"
wait "$JAIL"
rec=$("$PY" -c '
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r.get("event") == "request" and r.get("path") == "/think":
        print(r["action"], r.get("reason"), r.get("status"))' "$T/audit.jsonl")
assert_eq "$rec" "forward sandbox_closed None" "the request's audit record"
pass "the audit record says the sandbox closed before the answer"
