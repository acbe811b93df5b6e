#!/usr/bin/env bash
# A name lookup that a resolver never answers holds a thread of libuv's pool for the
# resolver's whole timeout, and libuv cannot cancel it: the request kept the loop
# alive and exit() joined the thread. A jail whose CMD had ended, or a daemon told to
# stop (a restart, during which every sandbox is without network), waited for it:
# with this resolver (glibc's longest, 5 attempts of 30 s) two and a half minutes.
# They must end once everything but the answer nobody will read is done.
#
#   CMD / sandbox --nft--> authproxy (in $HNS) --getaddrinfo--> fake resolver, silent
#                                                               for *.silent.test
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start --silent silent.test
host_ns_ipv4
printf 'nameserver 127.0.0.1\noptions attempts:5 timeout:30\n' > "$T/host-resolv.conf"
asked() { resolved "len([q for q in qs if q['name'] == '$1'])"; }
# tjail ARGS...: hjail, ended (status 124) if still running 40 s on.
tjail() {
  timeout 40 ip netns exec "$HNS" unshare -m --propagation private \
    sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$T/host-resolv.conf" \
    "$AUTHPROXY" jail "$@"
}

# The request CMD makes: sent, then given up on after a second.
cat > "$T/ask.py" <<'PYEOF'
import socket, sys
s = socket.create_connection((sys.argv[1], 80), timeout=10)
s.sendall(b"GET /never HTTP/1.1\r\nHost: %s\r\n\r\n" % sys.argv[1].encode())
s.settimeout(1)
try:
    print(s.recv(4096).split(b"\r\n")[0].decode())
except socket.timeout:
    print("no answer")
PYEOF

# 1. An upstream name, remapped to one the resolver never answers.
cat > "$T/remap.json" <<EOF
{ "dns": { "remap": { "api.example.com": "backend.silent.test:80" } } }
EOF
set +e
out=$(tjail --config "$T/remap.json" -- "$PY" "$T/ask.py" api.example.com 2> "$T/jail1.log")
rc=$?
set -e
[ "$rc" != 124 ] || fail "the jail was still waiting for the resolver 40 s after CMD ended"
assert_eq "$rc" "0" "the jail's exit status (CMD's; log: $(cat "$T/jail1.log"))"
assert_eq "$out" "no answer" "what CMD got while the name resolved"
[ "$(asked backend.silent.test)" -ge 1 ] || fail "the resolver was never asked"
pass "a jail ends with CMD while a lookup of an upstream name waits for a silent resolver"

# 2. The credential callback's host, which the resolver never answers.
cat > "$T/callback.json" <<EOF
{ "callback": { "url": "http://cb.silent.test:9/creds", "match_hosts": ["api.example.com"],
                "allow_plain_http": true, "timeout_ms": 60000 } }
EOF
set +e
out=$(tjail --config "$T/callback.json" -- "$PY" "$T/ask.py" api.example.com 2> "$T/jail2.log")
rc=$?
set -e
[ "$rc" != 124 ] || fail "the jail was still waiting for the resolver 40 s after CMD ended"
assert_eq "$rc" "0" "the jail's exit status (CMD's; log: $(cat "$T/jail2.log"))"
assert_eq "$out" "no answer" "what CMD got while the callback's host resolved"
[ "$(asked cb.silent.test)" -ge 1 ] || fail "the callback's host was never looked up"
pass "a jail ends with CMD while a lookup of the callback's host waits for a silent resolver"

# 3. The daemon, told to stop while a sandbox's request waits for its name.
NS=$(make_netns s)
hserve_start
ctl attach box --netns "/var/run/netns/$NS" --config "$T/remap.json" > /dev/null
before=$(asked backend.silent.test)
ip netns exec "$NS" "$PY" "$T/ask.py" api.example.com > "$T/ask3.out" 2>&1 &
PIDS+=($!)
wait_for "[ \"\$(asked backend.silent.test)\" -gt $before ]" 10
kill -TERM "$serve_pid"
for ((i = 0; i < 400; i++)); do
  kill -0 "$serve_pid" 2> /dev/null || break
  sleep 0.1
done
kill -0 "$serve_pid" 2> /dev/null &&
  fail "the daemon was still waiting for the resolver 40 s after SIGTERM"
set +e
wait "$serve_pid"
rc=$?
set -e
assert_eq "$rc" "0" "the daemon's exit status"
assert_contains "$(cat "$T/serve.log")" "serve: stopping" "the daemon's log"
pass "a stopping daemon does not wait for a lookup a silent resolver holds"
