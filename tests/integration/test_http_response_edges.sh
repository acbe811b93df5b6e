#!/usr/bin/env bash
# The response side of the HTTP engine: where each answer ends, as the sandbox's
# client must see it, so that no byte of one answer is taken for another's. Each case
# is an exact answer the upstream sends (fake_upstream.py /exact), followed by a second
# request on the same sandbox connection: the sandbox gets the first answer exactly
# up to where it ends (HEAD, 204 and 304 have no body whatever their headers say; 1xx
# answers precede the final one; chunked bodies end after their trailers), bytes past
# that end never reach it, and the next request gets its own answer. An answer the
# proxy cannot frame for certain is a 502, and its message does not tell the agent
# that the request was not sent when it was (an agent retries a POST it believes
# unsent), nor is a reset passed on instead of saying so.
#
#   jail: client.py --nft--> authproxy (in-process) --remap--> fake upstream /exact
. "$(dirname "$0")/lib.sh"

start_upstream up
api_config "sk-resp-$$"

cat > "$T/client.py" <<'PYEOF'
import base64, json, socket, sys, time
H = "api.example.com"
# name, method, exact answer, extra query (at=: split writes, close=1: then close)
CASES = [
    ("head_cl", "HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", ""),
    ("204_cl_body", "GET", b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello", ""),
    ("204_te", "GET", b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", ""),
    ("304_te_body", "GET", b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", ""),
    ("103_then_200", "GET", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", ""),
    ("102_cl_then_200", "GET", b"HTTP/1.1 102 Processing\r\nContent-Length: 3\r\n\r\n"
                               b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", ""),
    ("100_split_200", "GET", b"HTTP/1.1 100 Continue\r\n\r\n"
                             b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", "&at=25"),
    ("chunk_ext_trailer", "GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", "&at=60"),
    ("chunked_then_stray", "GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  b"2\r\nok\r\n0\r\n\r\n"
                                  b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfake", ""),
    ("http10_keepalive", "GET", b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
                                b"Content-Length: 2\r\n\r\nok", ""),
    ("close_delimited", "GET", b"HTTP/1.1 200 OK\r\n\r\nuntil close", "&close=1"),
    ("101_unasked", "GET", b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                           b"Connection: Upgrade\r\n\r\nGARBAGE", ""),
    ("cl_and_te", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                         b"Transfer-Encoding: identity\r\n\r\nok", ""),
    ("dup_cl", "GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", ""),
    ("no_answer", "POST", b"", "&close=1"),
    ("reset_unanswered", "POST", b"", "&rst=1"),
    ("100_then_close", "POST", b"HTTP/1.1 100 Continue\r\n\r\n", "&close=1"),
    ("100_then_reset", "POST", b"HTTP/1.1 100 Continue\r\n\r\n", "&rst=1"),
    ("100_split_then_close", "POST", b"HTTP/1.1 100 Continue\r\n\r\n", "&at=10&close=1"),
]

def run(name, method, raw, extra):
    s = socket.create_connection((H, 80), timeout=5)
    body = b"payload" if method == "POST" else b""
    s.sendall(("%s /exact?r=%s%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n"
               % (method, base64.urlsafe_b64encode(raw).decode(), extra, H, len(body))
               ).encode() + body)
    buf, end = b"", "open"
    deadline = time.monotonic() + 5
    try:
        while time.monotonic() < deadline:
            k = s.recv(65536)
            if not k:
                end = "closed"
                break
            buf += k
            # Every case is answered (or closed): the first bytes may be late on a
            # loaded machine. After them an answer that does not end goes quiet;
            # 0.7 s says so.
            s.settimeout(0.7)
    except socket.timeout:
        pass
    except ConnectionResetError:
        end = "reset"
    second = ""
    if end == "open":
        s.settimeout(5)
        s.sendall(("GET /after HTTP/1.1\r\nHost: %s\r\n\r\n" % H).encode())
        try:
            b2 = s.recv(65536)
            second = b2.split(b"\r\n")[0].decode("latin-1") if b2 else "closed"
        except (OSError, socket.timeout) as e:
            second = type(e).__name__
    s.close()
    print(json.dumps({"case": name, "got": buf.decode("latin-1"), "end": end,
                      "second": second}))
    sys.stdout.flush()

for c in CASES:
    run(*c)
PYEOF

jail --config "$T/config.json" --secrets-dir "$T/secrets" --user nobody -- \
  "$PY" "$T/client.py" > "$T/out.jsonl"
field() { "$PY" -c "
import json, sys
for l in open('$T/out.jsonl'):
    r = json.loads(l)
    if r['case'] == sys.argv[1]:
        print(r[sys.argv[2]])
        break
else:
    print('missing')" "$1" "$2"; }
# same CASE ANSWER: the sandbox got exactly ANSWER (printf escapes), and the next
# request on its connection its own 200.
same() {
  local want
  want=$(printf "$2")
  [ "$(field "$1" got)" = "$want" ] || fail "$1: the sandbox got '$(field "$1" got)'"
  assert_eq "$(field "$1" end)" "open" "$1: the sandbox connection after the answer"
  assert_eq "$(field "$1" second)" "HTTP/1.1 200 OK" "$1: the next request's answer"
}

same head_cl 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n'
same 204_cl_body 'HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n'
same 204_te 'HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n'
same 304_te_body 'HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n'
pass "HEAD, 204 and 304 end at their heads; bytes after them never reach the sandbox"

same 103_then_200 'HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'
same 102_cl_then_200 'HTTP/1.1 102 Processing\r\nContent-Length: 3\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'
same 100_split_200 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'
pass "interim 1xx answers, bodiless whatever they say, precede the final one"

same chunk_ext_trailer 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nX-T: 1\r\n\r\n'
same chunked_then_stray 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n'
same http10_keepalive 'HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok'
assert_eq "$(field close_delimited got)" "$(printf 'HTTP/1.1 200 OK\r\n\r\nuntil close')" \
  "a body delimited by the close"
assert_eq "$(field close_delimited end)" "closed" "the sandbox connection after it"
pass "chunked bodies end after their trailers; a close-delimited one ends the connection"

for c in 101_unasked cl_and_te dup_cl; do
  assert_contains "$(field $c got)" "HTTP/1.1 502 " "$c: answer"
  assert_contains "$(field $c got)" "X-Authproxy-Error: upstream_protocol_error" "$c: reason"
  assert_not_contains "$(field $c got)" "GARBAGE" "$c: bytes of the upstream's answer"
  assert_not_contains "$(field $c got)" "not forwarded" "$c: the message"
  assert_contains "$(field $c got)" "was sent" "$c: the message"
done
pass "answers the proxy cannot frame for certain are a 502 that says the request was sent"

assert_contains "$(field no_answer got)" "HTTP/1.1 502 " "an upstream that closes unanswered"
assert_contains "$(field no_answer got)" "X-Authproxy-Error: upstream_closed" "its reason"
assert_not_contains "$(field no_answer got)" "not forwarded" "its message"
assert_contains "$(field no_answer got)" "was sent" "its message"
assert_eq "$(upq up 'len([r for r in reqs if r["method"] == "POST" and "?r=&close=1" in r["target"]])')" "1" \
  "the POST the upstream received before closing"
pass "a 502 for a request the upstream received does not say it was not sent"

# The same for an upstream that resets the connection instead: a 502 that says why,
# not a reset passed on (a client cannot tell a reset from a request never sent).
assert_contains "$(field reset_unanswered got)" "HTTP/1.1 502 " "an upstream that resets unanswered"
assert_contains "$(field reset_unanswered got)" "X-Authproxy-Error: upstream_reset" "its reason"
assert_contains "$(field reset_unanswered got)" "was sent" "its message"
pass "an upstream reset before the answer is a 502 too"

# After an interim 100 Continue the final answer is still the proxy's to give: an
# upstream that then closes, resets or goes quiet past --idle-timeout gets the
# sandbox the same 502/504 as without the 100 (curl sends Expect: 100-continue with
# every upload over 1 MiB). The 100 used to count as the answer begun: the sandbox
# got the 100 and then a bare FIN or reset, nothing saying what happened; a 100 that
# came in two reads still did.
# (A reset that arrives with the 100 may be reported as an end: libuv takes the
# hangup after a short read for EOF without reading the error, so either reason.)
for c in 100_then_close 100_then_reset 100_split_then_close; do
  got=$(field $c got)
  assert_contains "$got" "$(printf 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 502 ')" "$c: answer"
  assert_contains "$got" "X-Authproxy-Error: upstream_" "$c: reason"
done
assert_contains "$(field 100_then_close got)" "X-Authproxy-Error: upstream_closed" "its reason"
cat > "$T/quiet.py" <<'PYEOF'
import base64, socket
s = socket.create_connection(("api.example.com", 80), timeout=10)
r = base64.urlsafe_b64encode(b"HTTP/1.1 100 Continue\r\n\r\n").decode()
s.sendall(("POST /exact?r=%s HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 5\r\n"
           "Expect: 100-continue\r\n\r\nhello" % r).encode())
buf = b""
try:
    while True:
        k = s.recv(65536)
        if not k:
            break
        buf += k
except OSError as e:
    buf += b"<%s>" % type(e).__name__.encode()
print(buf.decode("latin-1"))
PYEOF
got=$(jail --config "$T/config.json" --secrets-dir "$T/secrets" --user nobody --idle-timeout 1 \
  -- "$PY" "$T/quiet.py")
assert_contains "$got" "$(printf 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 504 ')" "silence after a 100"
assert_contains "$got" "X-Authproxy-Error: upstream_timeout" "its reason"
pass "a 100 Continue, then a close, a reset or silence: a 502 or 504 that says why"
