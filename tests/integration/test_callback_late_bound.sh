#!/usr/bin/env bash
# A late loop's grace for a credential callback is bounded. When the call's timeout
# falls due with the callback's answer waiting unread, the call gets its timeout_ms
# anew (test_callback_late_loop), but at most three times: a callback that trickles
# its answer, its bytes found waiting each time the loop happens to be late, cannot
# stretch the call without end. Here the callback's whole answer goes out in four
# pieces, each while the proxy is stopped (SIGSTOP) past the 2 s timeout: the first
# three are granted (the connection stays open for the fourth), and at the fourth the
# call ends, 503 callback_timeout, although its answer is then complete.
#
#   jail netns                              host netns
#   curl http://api.corp.example  -nft->    authproxy jail
#                                             POST -> pieces.py: the answer in 4
#                                                     pieces, piece K when go.K
#                                                     exists
. "$(dirname "$0")/lib.sh"

start_upstream up
cat > "$T/pieces.py" <<'PYEOF'
import json, os, socket, sys, time
d = sys.argv[1]
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(8)
with open(d + "/cb.port.tmp", "w") as f:
    f.write("%d\n" % ls.getsockname()[1])
os.rename(d + "/cb.port.tmp", d + "/cb.port")
c, _ = ls.accept()
c.settimeout(30)
req = b""
while b"\r\n\r\n" not in req:
    got = c.recv(65536)
    if not got:
        sys.exit("pieces: the proxy closed before its request")
    req += got
open(d + "/called", "w").close()
body = json.dumps({"headers": {"Authorization": "Bearer cb-late"}}).encode()
answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
          b"Connection: close\r\n\r\n" % len(body)) + body
cuts = [len(answer) * k // 4 for k in range(5)]
try:
    for k in range(4):
        for _ in range(600):
            if os.path.exists("%s/go.%d" % (d, k + 1)):
                break
            time.sleep(0.05)
        c.sendall(answer[cuts[k]:cuts[k + 1]])
        open("%s/sent.%d" % (d, k + 1), "w").close()
except OSError as e:
    sys.exit("pieces: %s" % e)
time.sleep(5)  # the proxy closes first
PYEOF
# proxy_read_all PORT: whether the proxy's socket to PORT holds no unread byte (or is
# gone).
proxy_read_all() {
  ss -Htn "( dport = :$1 )" | awk '$2 != 0 { x = 1 } END { exit x }'
}

# try N: the scenario, in $T/N; 1 if a stop came too late (stop_in_time).
try() {
  local d=$T/$1 k cb
  mkdir "$d"
  "$PY" "$T/pieces.py" "$d" 2> "$d/pieces.log" &
  PIDS+=($!)
  wait_for "[ -s '$d/cb.port' ]"
  cb=$(cat "$d/cb.port")
  cat > "$d/config.json" <<EOF
{ "callback": { "url": "http://127.0.0.1:$cb/creds", "match_hosts": ["*.corp.example"],
                "allow_plain_http": true, "timeout_ms": 2000 },
  "dns": { "remap": { "api.corp.example": "127.0.0.1:$up_PORT" } } }
EOF
  jail_curl "$d" "$d/config.json" http://api.corp.example/late
  # The callback has the request, and the call's 2 s run. Each round stops the proxy
  # before they run out, sends a piece, and resumes it past the timeout.
  wait_for "[ -e '$d/called' ]" 20
  for k in 1 2 3 4; do
    if ! stop_in_time "$jail_pid" "$cb"; then
      wait "$jail_pid" || true
      return 1
    fi
    : > "$d/go.$k"
    wait_for "[ -e '$d/sent.$k' ]"
    sleep 2.5
    kill -CONT "$jail_pid"
    wait_for "proxy_read_all $cb"
    dialing "$cb" || break # the proxy ended the call when it ran again
  done
  wait "$jail_pid" || true
  out=$(cat "$d/out")
  ended=$k
}
late_tries try
assert_eq "$ended" 4 "the round whose late piece ended the call"
assert_contains "$out" "callback_timeout" "the fourth late piece ends the call (got: $out)"
assert_contains "$out" "code=503" "the answer (got: $out)"
assert_eq "$(upq up 'len(reqs)')" "0" "requests that reached the upstream"
pass "a late loop's grace for a credential callback is bounded: three times a call"
