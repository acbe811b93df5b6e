#!/usr/bin/env bash
# A client that stops sending an upload's body in the middle (a program blocked on
# the disk or pipe it streams from, a stopped process) for longer than --idle-timeout
# has its request ended by the proxy. It used to get a bare reset, which curl reports
# as "Send failure: Connection reset by peer" and Python as an SSL EOF: nothing said
# that the proxy gave up, or why. It now gets a 408 whose X-Authproxy-Error says
# idle_timeout (the audit record too), as a head that stops arriving gets 408
# head_timeout.
#
#   jail netns                                   host netns
#   python: POST with Content-Length  -nft->     authproxy jail --idle-timeout 1
#   200000, sends 100000 bytes, then             (intercepts, injects)
#   only reads                                     -> upload upstream /sink
. "$(dirname "$0")/lib.sh"

start_upload_upstream
api_config "sk-stall-$$"

# stalled HEAD BODY: the status line and X-Authproxy-Error the client read after
# sending HEAD and BODY and nothing more, or the error it met.
stalled() {
  jail --config "$T/config.json" --secrets-dir "$T/secrets" --upstream-ca "$T/ca/ca.pem" \
    --idle-timeout 1 --log "$T/audit.jsonl" --user nobody -- "$PY" -c '
import socket, ssl, sys
s = ssl.create_default_context().wrap_socket(socket.create_connection(("api.example.com", 443)),
                                             server_hostname="api.example.com")
s.sendall(sys.argv[1].encode().replace(b"|", b"\r\n"))
s.sendall(b"x" * int(sys.argv[2]))
s.settimeout(20)
got = b""
try:
    while True:
        d = s.recv(65536)
        if not d:
            break
        got += d
except (OSError, ssl.SSLError) as e:
    got += b"<%s>" % type(e).__name__.encode()
head = got.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
print(head[0], [h for h in head[1:] if h.lower().startswith("x-authproxy-error")])
' "$1" "$2"
}

out=$(stalled "POST /sink HTTP/1.1|Host: api.example.com|Content-Length: 200000||" 100000)
assert_contains "$out" "HTTP/1.1 408 " "the answer to a body that stopped coming"
assert_contains "$out" "X-Authproxy-Error: idle_timeout" "its reason"
assert_contains "$(grep '"event":"request"' "$T/audit.jsonl")" '"reason":"idle_timeout","rule":"api","status":408' \
  "the request's record"
pass "an upload whose body stops arriving for --idle-timeout is answered 408 idle_timeout"

# A client that asked for a 100 Continue (curl, an SDK uploading a file) waits for it
# before it sends the body; an upstream whose application has not taken the request
# yet has sent none. Nothing has stopped arriving from the client: the upstream is the
# one that did not answer, a 504 upstream_timeout, not a 408 that blames the client.
out=$(stalled "POST /sink?continue=0 HTTP/1.1|Host: api.example.com|Content-Length: 1000|Expect: 100-continue||" 0)
assert_contains "$out" "HTTP/1.1 504 " "the answer to a request waiting for 100 Continue"
assert_contains "$out" "X-Authproxy-Error: upstream_timeout" "its reason"
pass "a request waiting for the upstream's 100 Continue is answered 504 upstream_timeout"
