#!/usr/bin/env bash
# Oversized request heads against --max-header-bytes 4096 (invariant I8): one huge
# field, a long request target, more fields than the parser holds, a head that never
# sends a line feed (streamed until the limit), the same inside intercepted TLS, and
# a second request on a keep-alive connection. Each is answered 431 (or 414/400 for
# the target) and closed; nothing reaches the upstream; a head just under the limit
# passes, with the injected header added on top.
#
#   jail: client --nft--> authproxy --max-header-bytes 4096 (in $HNS) --> fake upstreams
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start
make_ca "$T/ca" tls.example.com
hupstream up
hupstream tls "$T/ca/server.pem" "$T/ca/server.key"
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com", "tls.example.com"],
    "headers": [ { "name": "Authorization", "type": "plaintext", "value": "Bearer $(head -c 600 /dev/zero | tr '\0' k)" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT", "tls.example.com": "127.0.0.1:$tls_PORT" } } }
EOF

cat > "$T/client.py" <<'PYEOF'
import re, socket, ssl, sys
sys.path.insert(0, sys.argv[1])
import advlib

def head(case, extra=b"", target=None, host=b"api.example.com", close=True):
    t = target if target is not None else b"/case/" + case.encode()
    return (b"GET " + t + b" HTTP/1.1\r\nHost: " + host + b"\r\n" + extra +
            (b"Connection: close\r\n" if close else b"") + b"\r\n")

def plain(case, data):
    r = advlib.exchange("api.example.com", 80, data)
    r["statuses"] = re.findall(r"HTTP/1\.1 \d{3}", r.get("status", "") + r.get("body", ""))
    advlib.emit(case, **r)

pad = lambda n: b"X-Pad: " + b"p" * n + b"\r\n"
plain("just_under", head("just_under", pad(3900)))
plain("one_big_field", head("one_big_field", pad(5000)))
plain("long_target", head("long_target", target=b"/case/long_target?" + b"q" * 5000))
plain("many_fields", head("many_fields", b"".join(b"X-F%d: 1\r\n" % i for i in range(200))))
plain("no_line_feed", b"GET /case/no_line_feed HTTP/1.1 " + b"z" * 100000)
plain("second_request", head("second_first", close=False) + head("second_request", pad(5000)))

ctx = ssl.create_default_context()
with socket.create_connection(("tls.example.com", 443), timeout=10) as s:
    with ctx.wrap_socket(s, server_hostname="tls.example.com") as t:
        t.sendall(head("tls_big", pad(5000), host=b"tls.example.com"))
        buf = b""
        try:
            while True:
                d = t.recv(65536)
                if not d:
                    break
                buf += d
        except (ConnectionResetError, ssl.SSLError):
            pass
advlib.emit("tls_big", statuses=re.findall(r"HTTP/1\.1 \d{3}", buf.decode("latin-1")))
PYEOF

hjail --config "$T/config.json" --upstream-ca "$T/ca/ca.pem" --max-header-bytes 4096 \
  --user nobody -- "$PY" "$T/client.py" "$TOOLS" > "$T/out.jsonl"
load_results "$T/out.jsonl"
r() { result "$T/out.jsonl" "$@"; }

assert_eq "$(r just_under statuses)" '["HTTP/1.1 200"]' "a head just under the limit"
assert_eq "$(upq up '[len(hdr(r, "Authorization")[0]) for r in reqs if r["path"] == "/case/just_under"]')" \
  "[607]" "just under: the injected header on top"
for c in one_big_field many_fields no_line_feed tls_big; do
  assert_eq "$(r $c statuses)" '["HTTP/1.1 431"]' "$c: answer"
done
case "$(r long_target statuses)" in
  '["HTTP/1.1 431"]'|'["HTTP/1.1 414"]'|'["HTTP/1.1 400"]') ;;
  *) fail "long_target: $(r long_target statuses)" ;;
esac
assert_eq "$(r second_request statuses)" '["HTTP/1.1 200", "HTTP/1.1 431"]' "keep-alive: second head too large"
for c in one_big_field many_fields no_line_feed long_target; do
  assert_eq "$(r $c end)" "closed" "$c: connection end"
done
assert_eq "$(upq up 'sorted(r["path"] for r in reqs)')" "$(jlist /case/just_under /case/second_first)" \
  "requests at the plain upstream"
assert_eq "$(upq tls 'len(reqs)')" "0" "requests at the TLS upstream"
pass "heads over 4096 bytes (one field, many fields, no line feed, TLS, keep-alive): 431, never forwarded"

# The option's own bounds.
set +e
out=$("$AUTHPROXY" jail --max-header-bytes 100 -- true 2>&1)
rc=$?
set -e
[ $rc -ne 0 ] || fail "--max-header-bytes 100 was accepted"
assert_contains "$out" "--max-header-bytes" "the error names the option"
pass "--max-header-bytes below 1024 refused: $out"
