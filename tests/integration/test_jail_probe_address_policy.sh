#!/usr/bin/env bash
# A slow client at a rule's host whose address an egress entry with methods covers is
# probed, not reset. A connection silent for 500 ms on a port but 80 and 443 is
# relayed as a probe at a rule's host (7be7f19, a2fd4fe), and its client's bytes are
# judged after all if it speaks first. But the probe's dial was checked as an opaque
# relay's, which never goes to an address an `egress.deny` entry with paths or
# methods covers: a slow client of an API on 8080 under a "no DELETE to 127.0.0.1"
# entry was reset (egress_deny, its record saying "tunnel") 500 ms after its connect,
# where the same request sent in time was answered.
#
# The probe is dialed as for requests (it carries nothing until one side speaks); a
# server that speaks first at such an address is refused, its bytes never relayed.
#
#   jail: client (connect, 1 s of silence, request) -> authproxy -> fake upstream
#                                                                -> greeting server
#   serve: the same under a PATCH during the probes, the greeting 2 s late
. "$(dirname "$0")/lib.sh"
. "$SRC/tests/adversarial/adv_lib.sh"

start_upstream plain
start_tcp_server greeter --banner '220 greeter ready\r\n' --reply none
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true,
    "match_hosts": ["api.example.com", "smtp.example.com"],
    "headers": [ { "name": "X-Agent", "type": "plaintext", "value": "probed" } ] } ],
  "egress": { "deny": [ { "hosts": ["127.0.0.1/32"], "methods": ["DELETE"] } ] },
  "dns": { "remap": { "api.example.com": "127.0.0.1:$plain_PORT",
                      "smtp.example.com": "127.0.0.1:$greeter_PORT" } } }
EOF
out=$(jail --config "$T/config.json" --log "$T/audit.jsonl" --user nobody -- "$PY" -c '
import socket, time
dests = (("api.example.com", 8080, b"GET"), ("api.example.com", 8080, b"DELETE"),
         ("smtp.example.com", 2525, None))
socks = [socket.create_connection(d[:2], timeout=10) for d in dests]
time.sleep(1)  # twice the 500 ms after which silence means "the server speaks first"
for (host, port, method), s in zip(dests, socks):
    try:
        if method is not None:
            s.sendall(b"%s /probe HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\n\r\n"
                      % (method, host.encode(), port))
        got = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            got += d
        print(port, got.split(b"\r\n")[0].decode() if got else "closed")
    except OSError as e:
        print(port, "failed:", type(e).__name__)' 2> "$T/jail.log")
assert_eq "$out" "8080 HTTP/1.1 200 OK
8080 HTTP/1.1 403 Forbidden (authproxy: egress_deny)
2525 failed: ConnectionResetError" "what the slow clients got"
assert_eq "$(upq plain '" ".join("%s:%s" % (r["method"], json.dumps(hdr(r, "X-Agent"))) for r in reqs)')" \
  'GET:["probed"]' "requests the upstream got"
assert_eq "$("$PY" -c '
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
print(" ".join(sorted("%s:%s:%s" % (r["name"].split(".")[0], r["action"], r.get("reason", "-"))
                      for r in recs if r.get("event") == "conn")))' "$T/audit.jsonl")" \
  "api:intercept:- api:intercept:egress_deny smtp:deny:uninspectable_protocol" "the connections' records"
pass "a slow client at an address under request-level policy is judged by its requests; a greeting server there is refused"

# A config swapped while a probe waits keeps it one that refuses a greeting there.
start_tcp_server late --banner '220 greeter ready\r\n' --reply none --delay 2
sed -e "s/$greeter_PORT/$late_PORT/" "$T/config.json" > "$T/late.json"
sed -e 's/"probed"/"patched"/' "$T/late.json" > "$T/patched.json"
serve_start
NS=$(make_netns probe)
ctl attach p --netns "/var/run/netns/$NS" --config "$T/late.json" > /dev/null
ip netns exec "$NS" "$PY" -c '
import os, socket, sys, time
t = sys.argv[1]
dests = (("api.example.com", 8080), ("smtp.example.com", 2525))
socks = [socket.create_connection(d, timeout=10) for d in dests]
time.sleep(1)  # probes now, both dialed
open(os.path.join(t, "probing"), "w").close()
for _ in range(200):
    if os.path.exists(os.path.join(t, "patched")):
        break
    time.sleep(0.05)
socks[0].sendall(b"GET /patched HTTP/1.1\r\nHost: api.example.com:8080\r\nConnection: close\r\n\r\n")
for (host, port), s in zip(dests, socks):
    try:
        got = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            got += d
        print(port, got.split(b"\r\n")[0].decode() if got else "closed")
    except OSError as e:
        print(port, "failed:", type(e).__name__)' "$T" > "$T/patch.out" 2> "$T/patch.log" &
CLIENT=$!
PIDS+=($CLIENT)
wait_for "[ -e '$T/probing' ]" 20
ctl update p --config "$T/patched.json" > /dev/null
: > "$T/patched"
wait "$CLIENT" || fail "the client failed: $(cat "$T/patch.log")"
assert_eq "$(cat "$T/patch.out")" "8080 HTTP/1.1 200 OK
2525 failed: ConnectionResetError" "what the probes got across the PATCH"
assert_eq "$(upq plain 'json.dumps(hdr(reqs[-1], "X-Agent"))')" '["patched"]' \
  "the request after the PATCH"
pass "a PATCH during a probe there neither closes it nor lets a late greeting through"
