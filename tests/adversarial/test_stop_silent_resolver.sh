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
#                                        \--> fake upstream (fast.test)
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start --silent silent.test --answer fast.test=127.0.0.1
host_ns_ipv4
hupstream up
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

# jail_ask CONFIG LOG NAME: a jail with CONFIG whose CMD asks for api.example.com and
# gives up; it must end with CMD's status, CMD must have had no answer, and the
# resolver must have been asked for NAME (the lookup the jail must not wait for).
jail_ask() {
  local out rc
  set +e
  out=$(tjail --config "$1" -- "$PY" "$T/ask.py" api.example.com 2> "$T/$2.log")
  rc=$?
  set -e
  [ "$rc" != 124 ] || fail "the jail was still waiting for the resolver 40 s after CMD ended"
  assert_eq "$rc" "0" "the jail's exit status (CMD's; log: $(cat "$T/$2.log"))"
  assert_eq "$out" "no answer" "what CMD got while $3 resolved"
  [ "$(asked "$3")" -ge 1 ] || fail "the resolver was never asked for $3"
}

# 1. An upstream name, remapped to one the resolver never answers.
cat > "$T/remap.json" <<EOF
{ "dns": { "remap": { "api.example.com": "backend.silent.test:80",
                      "other.example.com": "fast.test:$up_PORT" } } }
EOF
jail_ask "$T/remap.json" jail1 backend.silent.test
pass "a jail ends with CMD while a lookup of an upstream name waits for a silent resolver"

# 2. The credential callback's host, which the resolver never answers.
cat > "$T/callback.json" <<EOF
{ "callback": { "url": "http://cb.silent.test:9/creds", "match_hosts": ["api.example.com"],
                "allow_plain_http": true, "timeout_ms": 60000 } }
EOF
jail_ask "$T/callback.json" jail2 cb.silent.test
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

# 4. A daemon resolves one name of a sandbox at a time. A request whose connect
# timeout has passed (a 504) while its lookup still waits keeps that turn while the
# sandbox lives; let go at a stop, the turn is the next request's, which the drain
# must answer, not leave queued until its own connect timeout.
hserve_start --drain-timeout 20 --connect-timeout 2 # box is restored
out=$(ip netns exec "$NS" curl -sS --max-time 10 -o /dev/null -w '%{http_code}' \
  http://api.example.com/never 2>&1) || true
assert_eq "$out" "504" "the request whose name the resolver does not answer"
cat > "$T/queued.py" <<'PYEOF'
import socket, sys
s = socket.create_connection(("other.example.com", 80), timeout=10)
s.sendall(b"GET /queued HTTP/1.1\r\nHost: other.example.com\r\nConnection: close\r\n\r\n")
open(sys.argv[1], "w").close()
s.settimeout(10)
try:
    print(s.recv(4096).split(b"\r\n")[0].decode())
except socket.timeout:
    print("no answer")
PYEOF
ip netns exec "$NS" "$PY" "$T/queued.py" "$T/queued-sent" > "$T/queued.out" 2>&1 &
queued=$!
PIDS+=($queued)
wait_for "[ -e '$T/queued-sent' ]" 10
ctl health > /dev/null # a turn of the daemon's loop: the request is read and queued
kill -TERM "$serve_pid"
wait "$queued" || true
assert_eq "$(cat "$T/queued.out")" "HTTP/1.1 200 OK" "the queued request's answer"
assert_eq "$(upq up '[r["path"] for r in reqs]')" "$(jlist /queued)" "upstream requests"
set +e
wait "$serve_pid"
rc=$?
set -e
assert_eq "$rc" "0" "the daemon's exit status"
pass "a request queued behind a lookup let go at a stop is answered in the drain"
