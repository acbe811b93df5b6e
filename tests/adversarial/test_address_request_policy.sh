#!/usr/bin/env bash
# Request-level egress entries on an address range (methods or paths on an IP or
# CIDR) hold named requests too. A named request is decided by its name, where such
# an entry never matches; the proxy dials the name (here remapped into the range), so
# the entry applies to the address the request is sent to: checked before a new
# upstream is dialed (a denied request does not even connect), and on an upstream
# kept alive or taken from the pool. A connection relayed as opaque bytes (a TLS
# tunnel) cannot be held to it and is refused when its name resolves into the range.
# A method override field (X-HTTP-Method-Override) is held to them as the method it
# names. Controls: the same requests to a name outside the range are forwarded.
#
#   jail: client --nft--> authproxy (in $HNS) --remap--> 127.0.0.1 (denied range)
#                                                    --> 127.0.0.2 (control)
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start
hupstream up
HUP_BIND=127.0.0.2 hupstream ctl
make_ca "$T/ca" tunnel.example.com tunnel-ctl.example.com
hupstream tls "$T/ca/server.pem" "$T/ca/server.key"
HUP_BIND=127.0.0.2 hupstream tlsctl "$T/ca/server.pem" "$T/ca/server.key"
cp "$T/ca/ca.pem" "$T/upstream-ca.pem"
chmod 644 "$T/upstream-ca.pem"
cat > "$T/config.json" <<EOF
{ "egress": { "default": "allow",
    "deny": [ { "hosts": ["127.0.0.1/32"], "methods": ["POST"] },
              { "hosts": ["127.0.0.1"], "paths": ["/admin", "/admin/*"] } ] },
  "dns": { "remap": { "internal.example.com": "127.0.0.1:$up_PORT",
                      "other.example.com": "127.0.0.2:$ctl_PORT",
                      "tunnel.example.com": "127.0.0.1:$tls_PORT",
                      "tunnel-ctl.example.com": "127.0.0.2:$tlsctl_PORT" } } }
EOF

cat > "$T/client.py" <<'PYEOF'
import socket, ssl, sys
sys.path.insert(0, sys.argv[1])
import advlib

def req(method, path, host, close=True, extra=""):
    body = b"x" if method == "POST" else b""
    return ("%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n%s%s\r\n"
            % (method, path, host, len(body), "Connection: close\r\n" if close else "",
               extra)).encode() + body

for case, host, method, path in [
        ("get", "internal.example.com", "GET", "/get"),
        ("post", "internal.example.com", "POST", "/post"),
        ("admin", "internal.example.com", "GET", "/admin/users"),
        ("admin_enc", "internal.example.com", "GET", "/%61dmin/users"),
        ("ctl_post", "other.example.com", "POST", "/ctl-post"),
        ("ctl_admin", "other.example.com", "GET", "/admin/users")]:
    advlib.emit(case, **advlib.exchange(socket.gethostbyname(host), 80, req(method, path, host)))

# One connection: a GET kept alive, then a POST on the same upstream.
addr = socket.gethostbyname("internal.example.com")
r = advlib.exchange(addr, 80, req("GET", "/ka-get", "internal.example.com", close=False) +
                    req("POST", "/ka-post", "internal.example.com"))
advlib.emit("keepalive", **r)
# A PUT that servers act on as a POST (method override): before a dial, and on a
# kept-alive upstream.
OVR = "X-HTTP-Method-Override: POST\r\n"
advlib.emit("override", **advlib.exchange(addr, 80, req("PUT", "/ovr", "internal.example.com", extra=OVR)))
r = advlib.exchange(addr, 80, req("GET", "/ka-get2", "internal.example.com", close=False) +
                    req("PUT", "/ka-ovr", "internal.example.com", extra=OVR))
advlib.emit("keepalive_override", **r)
# A GET whose upstream goes back to the pool, then a POST that may take it.
advlib.emit("pooled_first", **advlib.exchange(addr, 80, req("GET", "/pool-get", "internal.example.com")))
advlib.emit("pooled_post", **advlib.exchange(addr, 80, req("POST", "/pool-post", "internal.example.com")))

# TLS to names without rules: tunnelled, so unreadable.
ctx = ssl.create_default_context(cafile=sys.argv[2])
for case, host in [("tunnel", "tunnel.example.com"), ("tunnel_ctl", "tunnel-ctl.example.com")]:
    try:
        with socket.create_connection((host, 443), timeout=10) as s:
            with ctx.wrap_socket(s, server_hostname=host) as t:
                t.sendall(b"GET /tunnel HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host.encode())
                status = t.recv(4096).split(b"\r\n", 1)[0].decode()
        advlib.emit(case, result="ok", status=status)
    except (OSError, ssl.SSLError) as e:
        advlib.emit(case, result="failed", error=type(e).__name__)
PYEOF

hjail --config "$T/config.json" --upstream-ca "$T/upstream-ca.pem" --user nobody -- \
  "$PY" "$T/client.py" "$TOOLS" "$T/upstream-ca.pem" > "$T/out.jsonl"
load_results "$T/out.jsonl"

paths() { upq "$1" "[r['path'] for r in reqs]"; }
assert_contains "$(result "$T/out.jsonl" get status)" " 200 " "GET into the range"
for c in post admin admin_enc; do
  assert_contains "$(result "$T/out.jsonl" $c status)" " 403 " "$c: status"
  assert_eq "$(result "$T/out.jsonl" $c reason)" "egress_deny" "$c: reason"
done
assert_contains "$(result "$T/out.jsonl" ctl_post status)" " 200 " "POST outside the range"
assert_contains "$(result "$T/out.jsonl" ctl_admin status)" " 200 " "/admin outside the range"
pass "named requests into the range are held to its method and path denies"

assert_contains "$(result "$T/out.jsonl" keepalive status)" " 200 " "kept-alive GET"
assert_contains "$(result "$T/out.jsonl" keepalive body)" " 403 " "POST after it, same connection"
assert_contains "$(result "$T/out.jsonl" override status)" " 403 " "PUT overridden as POST"
assert_contains "$(result "$T/out.jsonl" keepalive_override status)" " 200 " "kept-alive GET (2)"
assert_contains "$(result "$T/out.jsonl" keepalive_override body)" " 403 " \
  "PUT overridden as POST after it, same connection"
assert_contains "$(result "$T/out.jsonl" pooled_first status)" " 200 " "GET on a pooled upstream"
assert_contains "$(result "$T/out.jsonl" pooled_post status)" " 403 " "POST on a pooled upstream"
assert_eq "$(paths up)" '["/get", "/ka-get", "/ka-get2", "/pool-get"]' "requests the upstream in the range received"
# One connection each for /get, the two kept-alive pairs and /pool-get: the denied
# requests that needed a new upstream were refused before the dial.
assert_eq "$(upq up "len([e for e in events if e['event'] == 'conn'])")" "4" \
  "connections the upstream in the range accepted"
assert_eq "$(paths ctl)" '["/ctl-post", "/admin/users"]' "requests the control upstream received"
pass "kept-alive and pooled upstreams too: nothing denied reached the upstream"

assert_eq "$(result "$T/out.jsonl" tunnel result)" "failed" "TLS tunnel into the range"
assert_eq "$(upq tls "len([e for e in events if e['event'] == 'conn'])")" "0" \
  "connections the upstream in the range accepted"
assert_eq "$(result "$T/out.jsonl" tunnel_ctl result)" "ok" "TLS tunnel outside the range"
assert_contains "$(result "$T/out.jsonl" tunnel_ctl status)" " 200 " "tunnelled request outside the range"
pass "a tunnel into the range, which could not be held to the entries, is refused"
