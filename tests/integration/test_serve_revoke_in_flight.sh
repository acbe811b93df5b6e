#!/usr/bin/env bash
# A PATCH that takes egress away takes it from requests in flight too. Requests are
# decided one by one under the config current when each arrives, and an opaque relay
# or an upgraded connection the new config refuses is closed (test_config_swap_open_flows.sh);
# but a request still going when the config changed (a stream of events, an upload, a
# long poll) went on under the old config for as long as it lasted: a revoked host
# kept streaming to the sandbox, and the sandbox kept uploading to it. Held open while
# the config swaps to default deny (allowing keep.example, but not its POSTs and
# DELETEs):
#
#   sse     GET /sse, intercepted TLS (api.example.com, now denied)    -> cut
#   plain   GET /sse, plain HTTP without a rule (plain.example)         -> cut
#   upload  chunked POST in flight, intercepted (keep.example, POST denied now) -> cut
#   keep    GET /sse, intercepted (keep.example, still allowed)         -> goes on
#   ws      WebSocket to keep.example /ws (intercepted), whose path the new
#           config denies there: the connection goes on as that request   -> cut
#   override GET /sse with X-HTTP-Method-Override: DELETE (keep.example: a server
#           obeying the header takes it as a DELETE, denied there now; not at
#           its address, so only the name's entry can cut it)             -> cut
#   addr    chunked POST in flight, plain HTTP (addr.example, allowed by name, but
#           POSTs to its address 127.0.0.1 are denied now)                 -> cut
#   nopx    the same to nopx.example, which the new config also makes no_proxy:
#           its next request on the connection would still be held to the
#           address's entry (the engine reads it), so this one is too       -> cut
#
#   ap-rv-PID (lo only)                  host
#   client.py --nft--> authproxy serve ===> fake_upstream.py TLS (api, keep) and plain
. "$(dirname "$0")/lib.sh"

make_ca "$T/ca" api.example.com keep.example
start_upstream up "$T/ca/server.pem" "$T/ca/server.key"
start_upstream plain
config() {
  cat <<JSON
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com", "keep.example"],
    "headers": [ { "name": "X-Team", "type": "plaintext", "value": "agents" } ] } ],
  $1
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT", "keep.example": "127.0.0.1:$up_PORT",
                      "plain.example": "127.0.0.1:$plain_PORT",
                      "addr.example": "127.0.0.1:$plain_PORT",
                      "nopx.example": "127.0.0.1:$plain_PORT" } } }
JSON
}
config "" > "$T/before.json"
config '"no_proxy": ["nopx.example"],
  "egress": { "default": "deny", "allow": ["keep.example", "addr.example", "nopx.example"],
    "deny": [ { "hosts": ["keep.example"], "methods": ["POST", "DELETE"] },
              { "hosts": ["keep.example"], "paths": ["/ws"] },
              { "hosts": ["127.0.0.1"], "methods": ["POST"] } ] },' > "$T/after.json"

cat > "$T/client.py" <<'PYEOF'
import os, socket, ssl, sys, time
t = sys.argv[1]
ctx = ssl.create_default_context(cafile=os.path.join(t, "sandbox-ca.pem"))

def conn(host, tls=True):
    s = socket.create_connection((host, 443 if tls else 80), timeout=5)
    return ctx.wrap_socket(s, server_hostname=host) if tls else s

def head_ok(s):
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(4096)
    return got.startswith(b"HTTP/1.1 200")

sse = "GET /sse?n=1000&delay=0.05 HTTP/1.1\r\nHost: %s\r\n\r\n"
flows = {"sse": conn("api.example.com"), "plain": conn("plain.example", False),
         "keep": conn("keep.example"), "upload": conn("keep.example"),
         "addr": conn("addr.example", False), "override": conn("keep.example"),
         "nopx": conn("nopx.example", False)}
for n, host in (("sse", "api.example.com"), ("plain", "plain.example"), ("keep", "keep.example")):
    flows[n].sendall((sse % host).encode())
    assert head_ok(flows[n]), n
flows["override"].sendall(b"GET /sse?n=1000&delay=0.05 HTTP/1.1\r\nHost: keep.example\r\n"
                          b"X-HTTP-Method-Override: DELETE\r\n\r\n")
assert head_ok(flows["override"]), "override"
flows["ws"] = conn("keep.example")
flows["ws"].sendall(b"GET /ws HTTP/1.1\r\nHost: keep.example\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
got = b""
while b"\r\n\r\n" not in got:
    got += flows["ws"].recv(4096)
assert got.startswith(b"HTTP/1.1 101"), got
for n, host in (("upload", b"keep.example"), ("addr", b"addr.example"),
                ("nopx", b"nopx.example")):
    flows[n].sendall(b"POST /echo HTTP/1.1\r\nHost: " + host + b"\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
open(os.path.join(t, "opened"), "w").close()
for _ in range(200):
    if os.path.exists(os.path.join(t, "swapped")):
        break
    time.sleep(0.05)

def fate(s):
    """'cut' if the connection ends within 4 s, else 'open'. The streams last 50 s,
    and the upload's answer comes only once its body ends, which it never does."""
    deadline = time.time() + 4
    try:
        while time.time() < deadline:
            s.settimeout(max(deadline - time.time(), 0.01))
            if not s.recv(65536):
                return "cut"
    except socket.timeout:
        return "open"
    except (OSError, ssl.SSLError):
        return "cut"
    return "open"

print(" ".join("%s=%s" % (n, fate(flows[n])) for n in ("sse", "plain", "upload", "keep", "addr", "override",
                                                        "nopx", "ws")),
      flush=True)
PYEOF

"$AUTHPROXY" serve --state-dir "$T/state" --control "$T/c.sock" --drain-timeout 1 \
  --upstream-ca "$T/ca/ca.pem" --log "$T/audit.jsonl" >> "$T/serve.log" 2>&1 &
serve_pid=$!
PIDS+=($serve_pid)
ctl() { "$AUTHPROXY" ctl --control "$T/c.sock" "$@"; }
wait_for "[ -S '$T/c.sock' ] && ctl health >/dev/null 2>&1"
ns=$(make_netns rv)
ctl attach rv --netns "/var/run/netns/$ns" --config "$T/before.json" > "$T/sandbox-ca.pem"
ip netns exec "$ns" "$PY" "$T/client.py" "$T" > "$T/client.out" 2> "$T/client.log" &
CLIENT=$!
PIDS+=($CLIENT)
wait_for "[ -e '$T/opened' ]" 20
ctl update rv --config "$T/after.json" > /dev/null
: > "$T/swapped"
wait "$CLIENT" || fail "the client failed: $(cat "$T/client.log")"
assert_eq "$(cat "$T/client.out")" "sse=cut plain=cut upload=cut keep=open addr=cut override=cut nopx=cut ws=cut" \
  "the flows in flight after egress was taken away"

# Their records say why (the kept stream has none yet).
wait_for "[ \$(grep -c '\"reason\":\"config_changed\"' '$T/audit.jsonl') -ge 13 ]" 10
reasons=$("$PY" - "$T/audit.jsonl" <<'PYEOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
print(" ".join(sorted("%s:%s:%s" % (r["event"], r.get("path", r["name"]), r.get("reason"))
                      for r in recs if r.get("reason") == "config_changed")))
PYEOF
)
assert_eq "$reasons" "conn:addr.example:config_changed conn:api.example.com:config_changed conn:keep.example:config_changed conn:keep.example:config_changed conn:keep.example:config_changed conn:nopx.example:config_changed conn:plain.example:config_changed request:/echo:config_changed request:/echo:config_changed request:/echo:config_changed request:/sse:config_changed request:/sse:config_changed request:/sse:config_changed" \
  "the audit records of the cut flows"
# The daemon lived through it, and (under the sanitizers) exits clean.
kill -TERM "$serve_pid"
rc=0
wait "$serve_pid" || rc=$?
assert_eq "$rc" "0" "the daemon's exit status (see serve.log)"
pass "a config swap cuts the requests in flight it refuses, and only those"
