#!/usr/bin/env bash
# An upstream connection kept alive between requests is only used again while the
# upstream has said nothing since its last answer. A server that ends its keep-alive
# connection (its idle timeout) sends a FIN the proxy may not have read yet when the
# next request comes: that connection is dead, and a POST sent down it is lost (a
# POST is never sent twice, so the sandbox got a 502). Bytes waiting there are no
# answer to a request not yet sent either. Either way the connection is dropped and
# the request dialed anew.
#
# The loop is made late on purpose, deterministically: the proxy is stopped (SIGSTOP)
# while the upstream answers the first request and closes, and resumed afterwards,
# so that the answer and the FIN wait in its socket together. The sandbox pipelined
# its POST behind the first request, so the POST is taken up as soon as the answer
# has been read, before the FIN.
#
#   jail: client.py --nft--> authproxy (in-process) --remap--> fake upstream
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

start_upstream up
api_config "sk-stale-$$"
W="$T/w"
mkdir -m 1777 "$W"

cat > "$T/client.py" <<'PYEOF'
import json, os, socket, sys
sys.path.insert(0, sys.argv[2])
import advlib

with open(os.path.join(sys.argv[1], "ppid"), "w") as f:
    f.write("%d\n" % os.getppid())
out = {}
s = socket.create_connection(("api.example.com", 80), timeout=20)
try:
    go = os.path.join(sys.argv[1], "go").encode()
    s.sendall(b"GET /ka-close?after=0&go=" + go + b" HTTP/1.1\r\nHost: api.example.com\r\n\r\n"
              b"POST /post HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 7\r\n"
              b"Connection: close\r\n\r\npayload")
    out["first"], _, rest = advlib.read_response(s)
    out["post"], body, rest = advlib.read_response(s, rest)
    out["post_body"] = body.decode("latin-1")
except (ConnectionError, socket.timeout) as e:
    out["error"] = type(e).__name__
print(json.dumps(out))
PYEOF

jail --config "$T/config.json" --secrets-dir "$T/secrets" --user nobody -- \
  "$PY" "$T/client.py" "$W" "$TOOLS" > "$T/out.json" &
client=$!
PIDS+=($client)
wait_for "[ -s '$W/ppid' ]" 20
proxy=$(cat "$W/ppid")
# The first request reached the upstream, which answers it once $W/go exists: stop
# the proxy, let the upstream answer and close, and resume the proxy. (The upstream
# used to answer 1 s after the request, and a stop that came later on a loaded
# machine let the proxy read the answer alone, before the FIN.)
wait_for "[ \"\$(upq up 'len(reqs)')\" = 1 ]" 20
kill -STOP "$proxy"
CLEANUP_HOOKS+=("kill -CONT $proxy 2>/dev/null")
: > "$W/go"
wait_for "[ \"\$(upq up 'len([e for e in events if e[\"event\"] == \"conn_end\"])')\" = 1 ]" 20
sleep 0.3 # the FIN has crossed loopback long before this
kill -CONT "$proxy"
wait "$client" || fail "the client failed"
out=$(cat "$T/out.json")

assert_contains "$out" '"first": "HTTP/1.1 200 OK"' "the first answer"
assert_contains "$out" '"post": "HTTP/1.1 200 OK"' "the POST after the upstream closed"
assert_eq "$(upq up '[r["path"] for r in reqs]')" "$(jlist /ka-close /post)" \
  "requests the upstream received"
assert_eq "$(upq up 'len(set(r["conn"] for r in reqs))')" "2" "upstream connections"
pass "a kept-alive upstream that closed before the next request is not used for it"

# The upstream closes right after the next request reached it, unanswered (/drop-next
# drops the request after it). On a sandbox connection kept alive, as on one that took
# the upstream from the pool, a GET is sent again on a new connection (RFC 9110 9.2.2:
# idempotent, nothing after the head); a POST is not, and is answered 502.
cat > "$T/ka.py" <<'PYEOF'
import http.client, sys
c = http.client.HTTPConnection("api.example.com", 80, timeout=10)
out = []
for method, path in (("GET", "/drop-next"), (sys.argv[1], "/again")):
    c.request(method, path, body=b"payload" if method == "POST" else None)
    r = c.getresponse()
    r.read()
    out.append(str(r.status))
print(" ".join(out))
PYEOF
for method in GET POST; do
  : > "$T/up.jsonl"
  out=$(jail --config "$T/config.json" --secrets-dir "$T/secrets" --user nobody -- \
    "$PY" "$T/ka.py" $method)
  conns=$(upq up '[r["conn"] for r in reqs if r["path"] == "/again"]')
  if [ $method = GET ]; then
    assert_eq "$out" "200 200" "GET on a kept-alive upstream that dies unanswered"
    assert_eq "$(upq up '(lambda a: len(a) == 2 and a[0] != a[1])([r["conn"] for r in reqs if r["path"] == "/again"])')" \
      "True" "the GET on the dying connection, then on a new one ($conns)"
  else
    assert_eq "$out" "200 502" "POST on a kept-alive upstream that dies unanswered"
    assert_eq "$(upq up 'len([r for r in reqs if r["path"] == "/again"])')" "1" \
      "the POST reached the upstream once ($conns)"
  fi
done
pass "a GET on a kept-alive upstream that dies is sent again, a POST is not"

# A client that half-closes after its GET (`nc -N`, shutdown(SHUT_WR)), on an upstream
# connection from the pool that the upstream ends unanswered (its idle timeout as the
# request arrives): the GET goes out again on a new connection, and the sandbox's end
# only then, as for any client. The sandbox's end used to go to the dying connection
# at once and the repeat was dropped: the client got no answer (directly it would
# have dialed anew), recorded as sandbox_closed. On the new connection the end still
# reaches the upstream: /think notices it and stops.
cat > "$T/half.py" <<'PYEOF'
import socket, sys
def get(path, half):
    s = socket.create_connection(("api.example.com", 80), timeout=20)
    s.sendall(b"GET %s HTTP/1.1\r\nHost: api.example.com\r\n\r\n" % path.encode())
    if half:
        s.shutdown(socket.SHUT_WR)
    data = b""
    while half or b"\r\n\r\n" not in data:
        k = s.recv(65536)
        if not k:
            break
        data += k
    s.close()
    return data.split(b"\r\n")[0].decode() or "nothing"
print(get("/drop-next", False), "|", get(sys.argv[1], True))
PYEOF
: > "$T/up.jsonl"
out=$(jail --config "$T/config.json" --secrets-dir "$T/secrets" --user nobody -- \
  "$PY" "$T/half.py" /again)
assert_eq "$out" "HTTP/1.1 200 OK | HTTP/1.1 200 OK" "a half-closed GET on a pooled upstream that dies"
assert_eq "$(upq up '(lambda a: len(a) == 2 and a[0] != a[1])([r["conn"] for r in reqs if r["path"] == "/again"])')" \
  "True" "the GET on the dying connection, then on a new one"
: > "$T/up.jsonl"
out=$(jail --config "$T/config.json" --secrets-dir "$T/secrets" --user nobody -- \
  "$PY" "$T/half.py" "/think?delay=30")
assert_eq "$out" "HTTP/1.1 200 OK | nothing" "a half-closed GET the upstream stops working on"
assert_eq "$(upq up '[r["path"] for r in reqs]')" "$(jlist /drop-next /think /think)" \
  "requests the upstream received"
assert_eq "$(upq up 'len([e for e in events if e["event"] == "client_gone"])')" "1" \
  "the upstream saw the sandbox's end on the new connection"
pass "a half-closed GET on a dying pooled upstream goes out again, then its end"

# On the sandbox connection's own kept-alive upstream, the end goes at once (a client
# that talked directly would have met the same connection): /think stops, once.
cat > "$T/ka_half.py" <<'PYEOF'
import socket
s = socket.create_connection(("api.example.com", 80), timeout=20)
s.sendall(b"GET /first HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
data = b""
while b"\r\n\r\n" not in data:
    k = s.recv(65536)
    if not k:
        raise SystemExit("closed before the first answer")
    data += k
head, _, body = data.partition(b"\r\n\r\n")
n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0][15:])
while len(body) < n:
    k = s.recv(65536)
    if not k:
        raise SystemExit("closed in the first answer")
    body += k
s.sendall(b"GET /think?delay=30 HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
s.shutdown(socket.SHUT_WR)
rest = b""
while True:
    k = s.recv(65536)
    if not k:
        break
    rest += k
print(data.split(b"\r\n")[0].decode(), "|", rest.split(b"\r\n")[0].decode() or "nothing")
PYEOF
: > "$T/up.jsonl"
out=$(jail --config "$T/config.json" --secrets-dir "$T/secrets" --user nobody -- \
  "$PY" "$T/ka_half.py")
assert_eq "$out" "HTTP/1.1 200 OK | nothing" "a half-closed GET on the connection's own upstream"
assert_eq "$(upq up '[(r["path"], r["conn"]) for r in reqs]')" \
  "$(upq up '[(r["path"], reqs[0]["conn"]) for r in reqs]')" "both on one upstream connection"
assert_eq "$(upq up '[r["path"] for r in reqs]')" "$(jlist /first /think)" \
  "requests the upstream received"
assert_eq "$(upq up 'len([e for e in events if e["event"] == "client_gone"])')" "1" \
  "the upstream saw the sandbox's end"
pass "a half-closed GET on a connection's own kept-alive upstream ends there at once"
