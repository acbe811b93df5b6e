#!/usr/bin/env bash
# The sandbox sends its own copies of headers the proxy injects (invariant I6):
# several copies, every case, '_' for '-' (X_Api_Key, which CGI-style gateways read
# as X-Api-Key), empty values, and a Connection header naming the injected field so
# a later hop would drop it. Upstream must see exactly one copy of each injected
# header, with the proxy's value; look-alike names that are different headers
# (X-Api-Keys, X-Api-Key-Id) pass untouched; names that are not tokens are refused.
# Plain HTTP and intercepted TLS, keep-alive included (the second request on a
# connection is rewritten too).
#
#   jail: client --nft--> authproxy (in $HNS) --remap--> plain / TLS fake upstreams
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start
make_ca "$T/ca" tls.example.com
hupstream tls "$T/ca/server.pem" "$T/ca/server.key"
hupstream up
KEY="key-$$"
AUTH="Bearer auth-$$"
LONG="X-A-Header-Name-Longer-Than-Sixty-Four-Bytes-Which-The-Proxy-Injects-Too"
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com", "tls.example.com"],
    "headers": [ { "name": "X-Api-Key", "type": "plaintext", "value": "$KEY" },
                 { "name": "Authorization", "type": "plaintext", "value": "$AUTH" },
                 { "name": "$LONG", "type": "plaintext", "value": "long" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT",
                      "tls.example.com": "127.0.0.1:$tls_PORT" } } }
EOF

cat > "$T/client.py" <<'PYEOF'
import socket, ssl, sys
sys.path.insert(0, sys.argv[1])
import advlib

COPIES = (b"X-Api-Key: sandbox-1\r\nx-api-key: sandbox-2\r\nX-API-KEY: sandbox-3\r\n"
          b"X_Api_Key: sandbox-4\r\nx_api_key: sandbox-5\r\nX-Api_Key: sandbox-6\r\n"
          b"X-Api-Key:\r\nAuthorization: Bearer sandbox-a\r\nauthorization: sandbox-b\r\n"
          b"AUTHORIZATION: sandbox-c\r\nAuthorization_: not-a-copy\r\n"
          b"X-Api-Keys: keep-1\r\nX-Api-Key-Id: keep-2\r\n")

def req(case, host, extra=b"", close=True):
    return (b"GET /case/" + case.encode() + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra +
            (b"Connection: close\r\n" if close else b"") + b"\r\n")

def plain(case, data):
    advlib.emit(case, **advlib.exchange("api.example.com", 80, data))

plain("copies", req("copies", b"api.example.com", COPIES))
plain("connection_names_it", req("connection_names_it", b"api.example.com",
      b"Connection: X-Api-Key, Authorization\r\nX-Api-Key: sandbox\r\n", close=False)
      .replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
plain("keepalive", req("keepalive_1", b"api.example.com", COPIES, close=False) +
      req("keepalive_2", b"api.example.com", COPIES))
# Chunked trailers: a server that merges trailer fields into the header section
# would see the sandbox's copy next to the injected one.
TRAILED = (b"Transfer-Encoding: chunked\r\nTrailer: X-Api-Key\r\n")
for case, trailer in (("trailer_copy", b"X-Api-Key: sandbox-t\r\n"),
                      ("trailer_folded", b"x_api_KEY: sandbox-t\r\n"),
                      ("trailer_auth", b"Other: 1\r\nAuthorization: sandbox-t\r\n"),
                      ("trailer_long", sys.argv[2].lower().encode() + b": sandbox-t\r\n"),
                      ("trailer_other", b"X-Checksum: 1234\r\n")):
    plain(case, req(case, b"api.example.com", TRAILED).replace(b"GET /", b"POST /", 1) +
          b"4\r\nbody\r\n0\r\n" + trailer + b"\r\n")
plain("non_token_name", req("non_token_name", b"api.example.com", b"X-Api-Key\x7f: sandbox\r\n"))
plain("utf8_name", req("utf8_name", b"api.example.com", "X-\u00c1pi-Key: sandbox\r\n".encode()))
plain("space_in_name", req("space_in_name", b"api.example.com", b"X-Api Key: sandbox\r\n"))

ctx = ssl.create_default_context()
with socket.create_connection(("tls.example.com", 443), timeout=10) as s:
    with ctx.wrap_socket(s, server_hostname="tls.example.com") as t:
        t.sendall(req("tls_1", b"tls.example.com", COPIES, close=False) +
                  req("tls_2", b"tls.example.com", COPIES))
        buf = b""
        while True:
            chunk = t.recv(65536)
            if not chunk:
                break
            buf += chunk
advlib.emit("tls", status=buf.split(b"\r\n", 1)[0].decode(), n200=buf.count(b"HTTP/1.1 200 "),
            leaked=(b"key-" in buf or b"auth-" in buf))
PYEOF

hjail --config "$T/config.json" --upstream-ca "$T/ca/ca.pem" --user nobody -- \
  "$PY" "$T/client.py" "$TOOLS" "$LONG" > "$T/out.jsonl"
load_results "$T/out.jsonl"

# For a case: every header at the upstream whose name folds to one of the names.
copies() {
  upq "$1" "[[(k, v) for k, v in r['headers'] if k.lower().replace('_', '-') in ('x-api-key', 'authorization')] for r in reqs if r['path'] == '/case/$2']"
}
exact="[[[\"X-Api-Key\", \"$KEY\"], [\"Authorization\", \"$AUTH\"]]]"
for c in copies keepalive_1 keepalive_2; do
  assert_eq "$(copies up $c)" "$exact" "$c: copies at the upstream"
done
assert_eq "$(copies tls tls_1)" "$exact" "TLS first request: copies at the upstream"
assert_eq "$(copies tls tls_2)" "$exact" "TLS second request: copies at the upstream"
assert_eq "$(result "$T/out.jsonl" tls n200)" "2" "TLS: both requests answered"
pass "upstream sees exactly one X-Api-Key and one Authorization, the proxy's (plain, TLS, keep-alive)"

assert_eq "$(upq up "[hdr(r, 'X-Api-Keys') + hdr(r, 'X-Api-Key-Id') + hdr(r, 'Authorization_') for r in reqs if r['path'] == '/case/copies']")" \
  '[["keep-1", "keep-2", "not-a-copy"]]' "look-alike names that are other headers"
pass "X-Api-Keys, X-Api-Key-Id, Authorization_ pass untouched"

assert_eq "$(copies up connection_names_it)" "$exact" "Connection naming the injected headers: copies"
# No Connection field names them upstream: the sandbox's close ends its own connection
# only, and the names go with the fields they named.
assert_eq "$(upq up "[hdr(r, 'Connection') for r in reqs if r['path'] == '/case/connection_names_it']")" \
  '[[]]' "Connection field forwarded"
pass "a Connection header naming the injected fields cannot get them dropped downstream"

# A trailer copying an injected header is refused before the request completes:
# the upstream never sees a complete request carrying it. Other trailers pass.
for c in trailer_copy trailer_folded trailer_auth trailer_long; do
  assert_contains "$(result "$T/out.jsonl" $c status)" " 400 " "$c: status"
  assert_eq "$(result "$T/out.jsonl" $c reason)" "injected_header_in_trailer" "$c: reason"
  assert_eq "$(upq up "len([r for r in reqs if r['path'] == '/case/$c'])")" "0" "$c: a complete request"
done
assert_contains "$(result "$T/out.jsonl" trailer_other status)" " 200 " "an unrelated trailer"
assert_eq "$(upq up "[r['body_len'] for r in reqs if r['path'] == '/case/trailer_other']")" "[4]" \
  "the request with an unrelated trailer"
pass "chunked trailers repeating an injected header (any case, '_') refused; others pass"

for c in non_token_name utf8_name space_in_name; do
  assert_contains "$(result "$T/out.jsonl" $c status)" " 400 " "$c: status"
  assert_eq "$(upq up "len([r for r in reqs if r['path'] == '/case/$c'])")" "0" "$c: forwarded"
done
pass "header names that are not tokens: 400, not forwarded"

assert_not_contains "$(cat "$T/out.jsonl")" "$KEY" "the sandbox saw the injected key"
assert_not_contains "$(cat "$T/out.jsonl")" "auth-$$" "the sandbox saw the injected Authorization"
assert_eq "$(result "$T/out.jsonl" tls leaked)" "False" "TLS answers carried the injected values"
pass "injected values never echoed back to the sandbox"
