#!/usr/bin/env bash
# Making the proxy use one name for policy and another for the upstream (invariant
# I2): the synthetic address of name A with the TLS SNI or HTTP Host of name B, an
# absolute-form target naming B, a second keep-alive request naming B, IP-literal and
# numeric SNI/Host (2130706433, 0x7f000001, 127.1: resolvers read them as 127.0.0.1),
# Host values with userinfo or junk after the port, and an address from the synthetic
# range that was never handed out. Each is answered 403 (or 400 / reset) and the
# upstream receives nothing but the control requests; B's credential never goes out.
#
#   jail: client --nft--> authproxy (in $HNS, watched resolver)
#         a/b.example.com -> TLS upstream, pa/pb.example.com -> plain upstream
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start
make_ca "$T/ca" a.example.com b.example.com
hupstream tls "$T/ca/server.pem" "$T/ca/server.key"
hupstream up
cat > "$T/config.json" <<EOF
{ "rules": [
    { "name": "a", "allow_plain_http": true, "match_hosts": ["a.example.com", "pa.example.com"],
      "headers": [ { "name": "Authorization", "type": "plaintext", "value": "Bearer secret-A-$$" } ] },
    { "name": "b", "allow_plain_http": true, "match_hosts": ["b.example.com", "pb.example.com"],
      "headers": [ { "name": "Authorization", "type": "plaintext", "value": "Bearer secret-B-$$" } ] } ],
  "dns": { "remap": {
    "a.example.com": "127.0.0.1:$tls_PORT", "b.example.com": "127.0.0.1:$tls_PORT",
    "pa.example.com": "127.0.0.1:$up_PORT", "pb.example.com": "127.0.0.1:$up_PORT" } } }
EOF

cat > "$T/client.py" <<'PYEOF'
import re, socket, ssl, sys
sys.path.insert(0, sys.argv[1])
import advlib

def req(path, host, extra=b""):
    return (b"GET /case/" + path.encode() + b" HTTP/1.1\r\nHost: " + host.encode() +
            b"\r\n" + extra + b"Connection: close\r\n\r\n")

def tls(case, addr, sni, data, port=443):
    """Handshake trusting the sandbox CA (not checking the name: the attacker does not
    care which leaf it gets), send data, read the answer."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    out = {"status": "", "reason": "", "end": ""}
    try:
        with socket.create_connection((addr, port), timeout=5) as s:
            with ctx.wrap_socket(s, server_hostname=sni) as t:
                for d in data:
                    t.sendall(d)
                buf = b""
                while True:
                    chunk = t.recv(65536)
                    if not chunk:
                        break
                    buf += chunk
                lines = buf.split(b"\r\n")
                out["status"] = lines[0].decode()
                out["statuses"] = [m.decode() for m in re.findall(rb"HTTP/1\.1 \d{3}", buf)]
                out["reason"] = ",".join(l.split(b":", 1)[1].strip().decode() for l in lines
                                         if l.lower().startswith(b"x-authproxy-error"))
                out["end"] = "closed"
    except (OSError, ssl.SSLError) as e:
        out["end"] = type(e).__name__
    advlib.emit(case, **out)

def raw_hello(case, addr, sni, port=443):
    """A ClientHello for sni (Python's ssl never sends an IP literal); reports whether
    the proxy went on with a handshake (first bytes) or reset."""
    r = advlib.exchange(addr, port, advlib.client_hello(sni), timeout=5, first_only=True)
    r["handshake"] = r["bytes"] > 0 and r.pop("status", "")[:1] == "\x16"
    r.pop("body", None)
    advlib.emit(case, **r)

A = socket.gethostbyname("a.example.com")
PA = socket.gethostbyname("pa.example.com")
socket.gethostbyname("b.example.com")
socket.gethostbyname("pb.example.com")

# Controls: agreeing names go through.
tls("ctl_tls_a", A, "a.example.com", [req("ctl_tls_a", "a.example.com")])
advlib.emit("ctl_http_pa", **advlib.exchange(PA, 80, req("ctl_http_pa", "pa.example.com")))

# TLS: the synthetic address of A, the name of B.
tls("sni_b_on_addr_a", A, "b.example.com", [req("sni_b_on_addr_a", "b.example.com")])
tls("host_b_in_tls_a", A, "a.example.com", [req("host_b_in_tls_a", "b.example.com")])
tls("host_b_in_tls_a_addr_flow", "203.0.113.9", "a.example.com",
    [req("host_b_in_tls_a_addr_flow", "b.example.com")])
tls("keepalive_tls_then_b", A, "a.example.com",
    [req("keepalive_tls_first", "a.example.com").replace(b"Connection: close", b"X-K: 1") +
     req("keepalive_tls_then_b", "b.example.com")])
raw_hello("sni_ip_on_addr_a", A, "127.0.0.1")
for case, sni in (("sni_ip_addr_flow", "127.0.0.1"), ("sni_ip6_addr_flow", "::1"),
                  ("sni_decimal", "2130706433"), ("sni_hex", "0x7f000001"),
                  ("sni_short", "127.1"), ("sni_octal", "0177.0.0.1")):
    raw_hello(case, "203.0.113.9", sni)

# Plain HTTP: the synthetic address of pA, the name of pB.
advlib.emit("host_b_on_addr_a", **advlib.exchange(PA, 80, req("host_b_on_addr_a", "pb.example.com")))
advlib.emit("absolute_b_on_addr_a", **advlib.exchange(PA, 80,
    b"GET http://pb.example.com/case/absolute_b_on_addr_a HTTP/1.1\r\nHost: pb.example.com\r\nConnection: close\r\n\r\n"))
advlib.emit("absolute_b_http10", **advlib.exchange(PA, 80,
    b"GET http://pb.example.com/case/absolute_b_http10 HTTP/1.0\r\n\r\n"))
advlib.emit("host_ip_on_addr_a", **advlib.exchange(PA, 80, req("host_ip_on_addr_a", "127.0.0.1")))
advlib.emit("keepalive_http_then_b", **advlib.exchange(PA, 80,
    req("keepalive_http_first", "pa.example.com").replace(b"Connection: close", b"X-K: 1") +
    req("keepalive_http_then_b", "pb.example.com")))
for case, host in (("host_decimal", "2130706433"), ("host_hex", "0x7f000001"),
                   ("host_short", "127.1"), ("host_userinfo", "pa.example.com@pb.example.com"),
                   ("host_port_junk", "pa.example.com:80@pb.example.com"),
                   ("host_port_range", "pa.example.com:99999"),
                   ("host_two_values", "pa.example.com, pb.example.com")):
    advlib.emit(case, **advlib.exchange(PA, 80, req(case, host)))
advlib.emit("unknown_synthetic", **advlib.exchange("198.19.255.254", 80,
    req("unknown_synthetic", "pa.example.com")))
PYEOF

hjail --config "$T/config.json" --upstream-ca "$T/ca/ca.pem" --log "$T/audit.jsonl" \
  --user nobody -- "$PY" "$T/client.py" "$TOOLS" > "$T/out.jsonl"
load_results "$T/out.jsonl"

out() { result "$T/out.jsonl" "$@"; }
assert_contains "$(out ctl_tls_a status)" " 200 " "control over TLS"
assert_contains "$(out ctl_http_pa status)" " 200 " "control over plain HTTP"

# 403 with the reason that names the disagreement.
check403() {
  assert_contains "$(out "$1" status)" " 403 " "$1: status"
  assert_eq "$(out "$1" reason)" "$2" "$1: reason"
}
assert_contains "$(out sni_b_on_addr_a status)" " 403 " "sni_b_on_addr_a: status"
check403 host_b_in_tls_a host_mismatch
check403 host_b_in_tls_a_addr_flow host_mismatch
check403 host_b_on_addr_a host_mismatch
check403 absolute_b_on_addr_a host_mismatch
check403 absolute_b_http10 host_mismatch
check403 host_ip_on_addr_a host_mismatch
check403 unknown_synthetic unknown_synthetic_address
assert_eq "$(out keepalive_tls_then_b statuses)" '["HTTP/1.1 200", "HTTP/1.1 403"]' \
  "TLS keep-alive: the second request names B"
assert_eq "$(out keepalive_tls_then_b reason)" "host_mismatch" "TLS keep-alive reason"
assert_contains "$(out keepalive_http_then_b status)" " 200 " "HTTP keep-alive first request"
pass "SNI, Host and absolute-form naming B on A's connection: 403 with the reason"

# Hosts that are not one host name: 400.
for c in host_decimal host_hex host_short host_userinfo host_port_junk host_port_range host_two_values; do
  assert_contains "$(out "$c" status)" " 400 " "$c: status"
done
pass "numeric, userinfo, junk-port and list Host values: 400"

# IP-literal and numeric SNI: reset, never a handshake for them. On A's synthetic
# address the literal disagrees with A's name: denied inside a handshake for A.
for c in sni_ip_addr_flow sni_ip6_addr_flow sni_decimal sni_hex sni_short sni_octal; do
  assert_eq "$(out "$c" end)" "reset" "$c: connection end"
done
assert_eq "$(out sni_ip_on_addr_a handshake)" "True" "IP SNI on A's address: denied inside TLS"
# The audit log says why, once per attempt.
areason() { "$PY" -c '
import json, sys
print(sum(1 for l in open(sys.argv[1]) if json.loads(l).get("event") == "conn"
          and json.loads(l).get("reason") == sys.argv[2]))' "$T/audit.jsonl" "$1"; }
assert_eq "$(areason sni_mismatch)" "2" "connections audited as sni_mismatch"
assert_eq "$(areason ip_literal_sni)" "2" "connections audited as ip_literal_sni"
assert_eq "$(areason invalid_sni)" "4" "connections audited as invalid_sni"
pass "IP-literal and numeric SNI reset or denied (audited sni_mismatch / ip_literal_sni / invalid_sni)"

# The upstreams saw the controls and the first keep-alive requests, nothing else;
# B's credential was never sent.
assert_eq "$(upq tls 'sorted(r["path"] for r in reqs)')" \
  "$(jlist /case/ctl_tls_a /case/keepalive_tls_first)" "TLS upstream requests"
assert_eq "$(upq up 'sorted(r["path"] for r in reqs)')" \
  "$(jlist /case/ctl_http_pa /case/keepalive_http_first)" "plain upstream requests"
assert_not_contains "$(cat "$T/tls.jsonl" "$T/up.jsonl")" "secret-B-$$" "B's credential sent"
assert_eq "$(resolved 'len(qs)')" "0" "names the proxy resolved"
pass "upstreams got only the agreeing requests; B's credential never left; nothing resolved"
