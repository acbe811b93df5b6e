#!/usr/bin/env bash
# Talking to the proxy's own sockets inside the sandbox instead of being redirected
# to them: the TCP listener (found with ss, as an attacker would) on every local
# address that reaches it (127.0.0.1, 127.0.0.2, 127.0.0.53, ::1, ::ffff:127.0.0.1,
# an address root adds to lo), with HTTP and with a ClientHello; and the DNS
# responder with HTTP over TCP, garbage over UDP, and 200 TCP connections (over its
# cap of 64). A direct connection to the listener is refused (reset, audited as a
# loop), never proxied to the proxy itself or anywhere else; the responder answers
# DNS only; afterwards the sandbox's DNS and HTTP still work.
#
#   jail (root inside): client -> 127.0.0.1:LPORT etc. (not redirected: local)
#   authproxy (in $HNS) --remap--> fake upstream
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start
hupstream up
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "plaintext", "value": "Bearer direct-$$" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF

cat > "$T/client.py" <<'PYEOF'
import socket, struct, subprocess, sys
sys.path.insert(0, sys.argv[1])
import advlib

ss = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True).stdout.split("\n")
ports = {l.split()[3].rsplit(":", 1)[1] for l in ss if l.strip()}
ports.discard("53")
assert len(ports) == 1, ss
lport = int(ports.pop())
advlib.emit("listener", port=lport)
subprocess.run(["ip", "addr", "add", "10.9.9.9/32", "dev", "lo"], check=True)

def http(case):
    return ("GET /case/%s HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n"
            % case).encode()

for case, addr in (("direct_127_0_0_1", "127.0.0.1"), ("direct_127_0_0_2", "127.0.0.2"),
                   ("direct_127_0_0_53", "127.0.0.53"), ("direct_v6_loopback", "::1"),
                   ("direct_v4_mapped", "::ffff:127.0.0.1"), ("direct_added_addr", "10.9.9.9")):
    advlib.emit(case, **advlib.exchange(addr, lport, http(case), timeout=5))
advlib.emit("direct_tls", **advlib.exchange("127.0.0.1", lport,
            advlib.client_hello("api.example.com"), timeout=5))

# The DNS responder: HTTP over its TCP port, garbage over UDP.
advlib.emit("dns_tcp_http", **advlib.exchange("127.0.0.53", 53, http("dns_tcp_http"), timeout=5))
for case, junk in (("dns_udp_http", http("dns_udp_http")), ("dns_udp_ff", b"\xff" * 1400),
                   ("dns_udp_header_only", b"\x12\x34" + b"\x00" * 10)):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(0.5)
    u.sendto(junk, ("127.0.0.53", 53))
    try:
        ans = u.recv(4096)
        advlib.emit(case, answered=len(ans), rcode=ans[3] & 15 if len(ans) > 3 else -1)
    except socket.timeout:
        advlib.emit(case, answered=0)
    u.close()

# 200 idle TCP connections to the responder (its cap is 64; it evicts the oldest).
held = []
for i in range(200):
    try:
        held.append(socket.create_connection(("127.0.0.53", 53), timeout=5))
    except OSError as e:
        advlib.emit("dns_tcp_flood_error", error=str(e), at=i)
        break
q = advlib.dns_query("api.example.com")
s = socket.create_connection(("127.0.0.53", 53), timeout=5)
s.sendall(struct.pack("!H", len(q)) + q)
n = struct.unpack("!H", s.recv(2))[0]
msg = b""
while len(msg) < n:
    msg += s.recv(n - len(msg))
advlib.emit("dns_tcp_after_flood", addrs=advlib.dns_answer_summary(msg)[1])
for h in held:
    h.close()
advlib.emit("dns_udp_after", addrs=[socket.gethostbyname("api.example.com")])
advlib.emit("control", **advlib.exchange("api.example.com", 80, http("control"), timeout=5))
PYEOF

hjail --config "$T/config.json" --log "$T/audit.jsonl" -- "$PY" "$T/client.py" "$TOOLS" \
  > "$T/out.jsonl" 2> "$T/jail.log"
load_results "$T/out.jsonl"

direct=(direct_127_0_0_1 direct_127_0_0_2 direct_127_0_0_53 direct_v6_loopback direct_v4_mapped
  direct_added_addr direct_tls)
for c in "${direct[@]}"; do
  assert_eq "$(result "$T/out.jsonl" $c bytes)" "0" "$c: bytes the sandbox got back"
  assert_eq "$(result "$T/out.jsonl" $c end)" "reset" "$c: connection end"
done
loops=$("$PY" -c '
import json, sys
print(sum(1 for l in open(sys.argv[1]) if json.loads(l).get("reason") == "loop"))' "$T/audit.jsonl")
assert_eq "$loops" "${#direct[@]}" "connections audited as loops"
pass "direct connections to the listener on 6 local addresses (HTTP and TLS): reset, audited as loops"

case "$(result "$T/out.jsonl" dns_tcp_http end)" in
  closed|reset) ;;
  *) fail "DNS TCP port with HTTP: $(result "$T/out.jsonl" dns_tcp_http end)" ;;
esac
assert_eq "$(result "$T/out.jsonl" dns_tcp_http bytes)" "0" "DNS TCP port answered HTTP"
# Junk over UDP is dropped, or answered with a bare header saying FORMERR / NOTIMP.
for c in dns_udp_http dns_udp_ff dns_udp_header_only; do
  case "$(result "$T/out.jsonl" $c answered)/$(result "$T/out.jsonl" $c rcode)" in
    0/missing|12/1|12/4) ;;
    *) fail "DNS UDP $c: $(grep "\"$c\"" "$T/out.jsonl")" ;;
  esac
done
assert_eq "$(result "$T/out.jsonl" dns_tcp_flood_error error)" "missing" "200 DNS TCP connections"
case "$(result "$T/out.jsonl" dns_tcp_after_flood addrs)$(result "$T/out.jsonl" dns_udp_after addrs)" in
  '["198.1'[89]*'"]["198.1'[89]*) ;;
  *) fail "DNS after the flood: $(result "$T/out.jsonl" dns_tcp_after_flood addrs) $(result "$T/out.jsonl" dns_udp_after addrs)" ;;
esac
pass "the DNS responder answers DNS only, and still answers after 200 TCP connections"

assert_contains "$(result "$T/out.jsonl" control status)" " 200 " "the control request"
assert_eq "$(upq up 'sorted(r["path"] for r in reqs)')" "$(jlist /case/control)" "upstream requests"
assert_eq "$(upq up 'len([e for e in events if e["event"] == "conn"])')" "1" "upstream connections"
assert_eq "$(resolved 'len(qs)')" "0" "names the proxy resolved"
pass "nothing but the control request reached any upstream"
