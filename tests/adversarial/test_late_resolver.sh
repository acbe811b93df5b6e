#!/usr/bin/env bash
# A resolver that answers after the proxy's connect timeout: the sandbox has had its
# 504 and keeps its connection open, and the late answer must not dial the upstream
# (it used to revive the lingering connection: a TCP connection to the upstream after
# the request was refused, and two sockets and a connection slot held until the
# sandbox went away).
#
#   jail: client --nft--> authproxy (in $HNS) --getaddrinfo--> fake resolver, 1.5 s late
#                                             --X--> fake upstream in $HNS
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start --answer backend.late.test=127.0.0.1 --delay 1.5
host_ns_ipv4
hupstream up
# A remap to a name: the proxy resolves it (a remap target may be on loopback).
cat > "$T/config.json" <<EOF
{ "dns": { "remap": { "api.example.com": "backend.late.test:$up_PORT" } } }
EOF
out=$(hjail --config "$T/config.json" --connect-timeout 1 -- "$PY" -c '
import socket, time
s = socket.create_connection(("api.example.com", 80), timeout=10)
s.sendall(b"GET /late HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
print(s.recv(4096).split(b"\r\n")[0].decode())
time.sleep(2.5)  # still open when the resolver answers, 1.5 s after it was asked
' 2> "$T/jail.log")
assert_eq "$out" "HTTP/1.1 504 Gateway Timeout (authproxy: upstream_timeout)" "the answer to a request whose dial timed out"
assert_eq "$(resolved '[q["name"] for q in qs if q["qtype"] == 1]')" \
  "$(jlist backend.late.test)" "the remap target was asked for"
assert_eq "$(upq up 'len([e for e in events if e.get("event") == "conn"])')" "0" \
  "connections the upstream got after the 504"
pass "a resolver's answer after the connect timeout dials nothing"
