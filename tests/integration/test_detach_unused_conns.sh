#!/usr/bin/env bash
# A namespace handed from one sandbox to another (a runtime pooling namespaces): a
# connection the first one's process opened before the DELETE, but that had sent no
# request yet (a client pool's warm connection; a TLS handshake done, no request), is
# no work in flight. It stayed open for the whole --drain-timeout, and the request
# sent on it after the detach, after the next sandbox's attach too, went upstream with
# the detached sandbox's credentials. It must end at the detach, as a kept-alive
# connection between requests does. So must one answering a request at the detach,
# after that answer: a request pipelined behind it after the detach went upstream with
# the detached sandbox's credentials once the answer was done.
#
#   ap-du-PID: client --nft--> authproxy serve: sandbox a (detached), then b --> upstreams
. "$(dirname "$0")/lib.sh"
. "$SRC/tests/adversarial/adv_lib.sh"

make_ca "$T/ca" api.example.com
start_upstream up "$T/ca/server.pem" "$T/ca/server.key"
start_upstream pl
serve_start --drain-timeout 30 --log "$T/audit.jsonl" --upstream-ca "$T/ca/ca.pem"
for t in a b; do
  cat > "$T/cfg-$t.json" <<EOF2
{ "rules": [ { "name": "r$t", "allow_plain_http": true,
    "match_hosts": ["api.example.com", "plain.example.com"],
    "headers": [ { "name": "Authorization", "type": "plaintext", "value": "Bearer key-$t" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT",
                      "plain.example.com": "127.0.0.1:$pl_PORT" } } }
EOF2
done
ns=$(make_netns du)
ctl attach a --netns "/var/run/netns/$ns" --config "$T/cfg-a.json" > "$T/ca-a.pem"

ip netns exec "$ns" "$PY" - "$T" > "$T/client.out" 2> "$T/client.log" <<'PYEOF' &
import json, os, re, select, socket, ssl, sys, time
T = sys.argv[1]
def status(s, path, host):
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode())
        got = s.recv(65536)
        return got.split(b"\r\n")[0].decode() if got else "eof"
    except OSError as e:
        return type(e).__name__
def pipeline(s, path, host):
    # Pipelines PATH behind the request in flight, which the upstream answers once
    # $T/go exists.
    if select.select([s], [], [], 0)[0] or getattr(s, "pending", lambda: 0)():
        raise SystemExit("the held answer came before the go")
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode())
def answers(s):
    # The status lines of the answers read to the connection's end.
    got = b""
    try:
        while len(got) < 65536:
            b = s.recv(65536)
            if not b:
                break
            got += b
    except OSError as e:
        got += b" " + type(e).__name__.encode()
    # A body need not end in CRLF: the status line after it may share its line.
    return [m.decode() for m in re.findall(rb"HTTP/1\.1 [0-9]{3}[^\r\n]*", got)]
ctx = ssl.create_default_context(cafile=T + "/ca-a.pem")
def tls_conn():
    return ctx.wrap_socket(socket.create_connection(("api.example.com", 443), timeout=10),
                           server_hostname="api.example.com")
plain = socket.create_connection(("plain.example.com", 80), timeout=5)
tls = tls_conn()
busy_plain = socket.create_connection(("plain.example.com", 80), timeout=10)
busy_tls = tls_conn()
# A request with a body: reading goes on once the body is in, while the answer is
# awaited (a GET's head alone stops it until the answer).
held = ("POST /slow?go=%s/go HTTP/1.1\r\nHost: %s\r\n"
        "Content-Length: 2\r\n\r\nhi")
busy_plain.sendall((held % (T, "plain.example.com")).encode())
busy_tls.sendall((held % (T, "api.example.com")).encode())
for _ in range(400):  # the held requests reach the upstreams before the detach
    if open(T + "/pl.jsonl").read().count('"/slow"') + \
       open(T + "/up.jsonl").read().count('"/slow"') == 2:
        break
    time.sleep(0.025)
open(T + "/opened", "w").close()
for _ in range(400):
    if os.path.exists(T + "/handed"):
        break
    time.sleep(0.025)
out = {"plain": status(plain, "/late-plain", "plain.example.com"),
       "tls": status(tls, "/late-tls", "api.example.com")}
pipeline(busy_plain, "/late-busy-plain", "plain.example.com")
pipeline(busy_tls, "/late-busy-tls", "api.example.com")
open(T + "/go", "w").close()
out["busy_plain"] = answers(busy_plain)
out["busy_tls"] = answers(busy_tls)
print(json.dumps(out, sort_keys=True))
PYEOF
client=$!
wait_for "[ -e '$T/opened' ]"
ctl detach a > /dev/null
ctl attach b --netns "/var/run/netns/$ns" --config "$T/cfg-b.json" > /dev/null
touch "$T/handed"
wait "$client" || fail "the client failed: $(cat "$T/client.log")"
assert_eq "$(cat "$T/client.out")" \
  '{"busy_plain": ["HTTP/1.1 200 OK"], "busy_tls": ["HTTP/1.1 200 OK"], "plain": "eof", "tls": "eof"}' \
  "requests sent after the detach on connections opened before it"
assert_eq "$(upq pl '[r["path"] for r in reqs]') $(upq up '[r["path"] for r in reqs]')" \
  '["/slow"] ["/slow"]' \
  "requests the upstreams got (a's credentials after a's detach)"

# The namespace is b's now: a new connection gets b's credentials.
out=$(ip netns exec "$ns" curl -sS -m 10 -o /dev/null -w '%{http_code}' http://plain.example.com/b)
assert_eq "$out" 200 "a request of b's"
assert_eq "$(upq pl 'hdr(reqs[-1], "Authorization")')" "$(jlist "Bearer key-b")" "b's credential"
# Their records are a's.
wait_for "[ \$(grep -c '\"event\":\"conn\",\"sandbox\":\"a\"' '$T/audit.jsonl') = 4 ]" 10
assert_contains "$(grep '"sandbox":"a"' "$T/audit.jsonl")" '"reason":"sandbox_detached"' \
  "the record of the connection that sent nothing"
pass "connections with no request at a detach end there; the next sandbox's are its own"
