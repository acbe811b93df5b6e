#!/usr/bin/env bash
# Evading request-level egress policy (paths, methods) by making the proxy relay the
# connection as opaque bytes instead of reading its requests: staying silent past the
# server-first window (the proxy then treats the flow as a server-speaks-first
# protocol), a blank line before the request line (RFC 9112 lets servers skip it,
# the sniffer does not see HTTP), a garbage preamble, an SSLv2-style hello, a TLS
# ClientHello sent only after the silence. A host under a path/method deny (or only
# allowed for some methods under default deny) must never be relayed blind: each
# attempt is refused, or its requests are read and decided, and no byte reaches the
# upstream. (A silent client's connection is a probe: the upstream is connected
# until one side speaks, and closed, having carried nothing, when the client does.)
#
#   jail: policy_client -> git.example.com:80/443, ro.example.com:80 -> authproxy
#         -> fake upstream (127.0.0.1, via dns.remap)
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

start_upstream ctl
start_upstream up
cat > "$T/deny.json" <<EOF
{ "egress": { "default": "allow",
    "deny": [ { "hosts": ["git.example.com"], "paths": ["/*/git-receive-pack"], "methods": ["POST"] } ] },
  "dns": { "remap": { "git.example.com": "127.0.0.1:\$PORT" } } }
EOF
cat > "$T/allow.json" <<EOF
{ "egress": { "default": "deny", "allow": [ { "hosts": ["ro.example.com"], "methods": ["GET"] } ] },
  "dns": { "remap": { "ro.example.com": "127.0.0.1:\$PORT" } } }
EOF
sed "s/\$PORT/$ctl_PORT/" "$T/deny.json" > "$T/deny-ctl.json"
sed "s/\$PORT/$up_PORT/" "$T/deny.json" > "$T/deny-up.json"
sed "s/\$PORT/$ctl_PORT/" "$T/allow.json" > "$T/allow-ctl.json"
sed "s/\$PORT/$up_PORT/" "$T/allow.json" > "$T/allow-up.json"

cat > "$T/client.py" <<'PYEOF'
import sys
sys.path.insert(0, sys.argv[1])
import advlib
mode = sys.argv[2]
PUSH = b"POST /org/repo/git-receive-pack HTTP/1.1\r\nHost: git.example.com\r\nContent-Length: 4\r\n\r\npush"
READ = b"GET /org/repo/info/refs HTTP/1.1\r\nHost: git.example.com\r\nConnection: close\r\n\r\n"
RO_POST = b"POST /write HTTP/1.1\r\nHost: ro.example.com\r\nContent-Length: 4\r\n\r\ndata"
RO_GET = b"GET /read HTTP/1.1\r\nHost: ro.example.com\r\nConnection: close\r\n\r\n"
SSLV2 = bytes([0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10]) + bytes(37)
if mode == "control-deny":
    advlib.emit("push", **advlib.exchange("git.example.com", 80, PUSH))
    advlib.emit("read", **advlib.exchange("git.example.com", 80, READ))
elif mode == "control-allow":
    advlib.emit("post", **advlib.exchange("ro.example.com", 80, RO_POST))
    advlib.emit("get", **advlib.exchange("ro.example.com", 80, RO_GET))
elif mode == "evade-deny":
    # 1 s is twice the proxy's server-first window (500 ms), which ports 80 and 443
    # do not have (their clients speak first): the silent cases use other ports.
    advlib.emit("silent_then_push", **advlib.exchange("git.example.com", 8080, PUSH, pre_wait=1.0))
    advlib.emit("crlf_then_push", **advlib.exchange("git.example.com", 80, b"\r\n" + PUSH))
    advlib.emit("garbage_then_push", **advlib.exchange("git.example.com", 80, b"\x00\x01xx\r\n" + PUSH))
    advlib.emit("sslv2_hello", **advlib.exchange("git.example.com", 443, SSLV2))
    advlib.emit("silent_then_tls", **advlib.exchange(
        "git.example.com", 8443, advlib.client_hello("git.example.com"), pre_wait=1.0,
        first_only=True))
elif mode == "evade-allow":
    advlib.emit("silent_then_post", **advlib.exchange("ro.example.com", 8080, RO_POST, pre_wait=1.0))
    advlib.emit("crlf_then_post", **advlib.exchange("ro.example.com", 80, b"\r\n" + RO_POST))
PYEOF

run() { local cfg=$1; shift; jail --config "$cfg" --log "$T/audit-$(basename "$cfg" .json).jsonl" --user nobody -- "$@"; }

# Controls: the policy itself works when the request is sent plainly, so the checks
# below can fail.
run "$T/deny-ctl.json" "$PY" "$T/client.py" "$TOOLS" control-deny > "$T/ctl-deny.out"
load_results "$T/ctl-deny.out"
assert_contains "$(result "$T/ctl-deny.out" push status)" " 403 " "plain push"
assert_eq "$(result "$T/ctl-deny.out" push reason)" "egress_deny" "plain push reason"
assert_contains "$(result "$T/ctl-deny.out" read status)" " 200 " "plain read"
run "$T/allow-ctl.json" "$PY" "$T/client.py" "$TOOLS" control-allow > "$T/ctl-allow.out"
load_results "$T/ctl-allow.out"
assert_contains "$(result "$T/ctl-allow.out" post status)" " 403 " "plain POST under GET-only allow"
assert_contains "$(result "$T/ctl-allow.out" get status)" " 200 " "plain GET under GET-only allow"
assert_eq "$(upq ctl 'sorted(r["path"] for r in reqs)')" "$(jlist /org/repo/info/refs /read)" \
  "control upstream requests"
pass "controls: a plainly sent push / POST is denied, reads pass"

# The evasions: each must be refused, and the upstream must not even see a connection.
run "$T/deny-up.json" "$PY" "$T/client.py" "$TOOLS" evade-deny > "$T/evade-deny.out"
run "$T/allow-up.json" "$PY" "$T/client.py" "$TOOLS" evade-allow > "$T/evade-allow.out"
for f in evade-deny evade-allow; do load_results "$T/$f.out"; done
for c in silent_then_push crlf_then_push garbage_then_push sslv2_hello silent_then_tls; do
  assert_no_upstream_answer "$T/evade-deny.out" "$c"
done
for c in silent_then_post crlf_then_post; do
  assert_no_upstream_answer "$T/evade-allow.out" "$c"
done
# The silent ones were decided by their bytes after all: the requests, read, denied.
assert_eq "$(result "$T/evade-deny.out" silent_then_push reason)" "egress_deny" "silent push"
assert_eq "$(result "$T/evade-allow.out" silent_then_post reason)" "egress_not_allowed" "silent POST"
# Their probes connected to the upstream (one each for the three silent cases), which
# got no byte; nothing else reached it.
wait_for "[ \"\$(upq up 'len([e for e in events if e[\"event\"] == \"conn_end\"])')\" = 3 ]"
assert_eq "$(upq up 'sorted(set((e["event"], e.get("bytes_received", 0)) for e in events))')" \
  '[["conn", 0], ["conn_end", 0]]' "upstream events during the evasion attempts: $(cat "$T/up.jsonl")"
pass "silence, blank line, garbage, SSLv2 hello, late ClientHello: none relayed blind"

# The audit log says why: the flow could not be inspected.
n=$(grep -c '"reason":"uninspectable_protocol"' "$T/audit-deny-up.jsonl" "$T/audit-allow-up.jsonl" |
  awk -F: '{ n += $2 } END { print n }')
assert_eq "$n" "4" "connections audited as uninspectable_protocol"
pass "audited as uninspectable_protocol"
