#!/usr/bin/env bash
# The audit log behind a reader that stops reading: records are written on the thread
# pool, so the proxy goes on serving while a write waits; when CMD ends with a write
# still waiting, the jail finishes the log (every record reaches the reader, in
# order) and exits with CMD's status. A regression test: the jail used to close the
# log's timer under the pending write and abort on libuv's assertion.
#
#   jail: client (1,500 denied requests) --> authproxy --log FIFO --> reader that
#         reads nothing until the client is done and the jail is closing
. "$(dirname "$0")/lib.sh"

N=1500
mkfifo "$T/audit.fifo"
echo '{ "egress": { "default": "deny" } }' > "$T/config.json"
mkdir -m 1777 "$T/w"

# The reader opens the FIFO at once (the jail's open waits for it) and reads only once
# the client has finished and half a second has passed: by then the pipe's 64 KiB
# are full and the proxy's last write is waiting on the thread pool.
"$PY" - "$T/audit.fifo" "$T/w/done" > "$T/reader.out" <<'PYEOF' &
import json, os, sys, time
f = open(sys.argv[1], "rb")
for _ in range(1200):
    if os.path.exists(sys.argv[2]):
        break
    time.sleep(0.05)
time.sleep(0.5)
lines = f.read().splitlines()
recs = [json.loads(l) for l in lines]
print(json.dumps({"lines": len(lines),
                  "denied": sum(1 for r in recs if r.get("action") == "deny" and "path" in r),
                  "paths": [r["path"] for r in recs if "path" in r][:3]}))
PYEOF
reader=$!
PIDS+=($reader)

set +e
jail --config "$T/config.json" --log "$T/audit.fifo" --user nobody -- "$PY" -c '
import socket, sys
n, done = int(sys.argv[1]), sys.argv[2]
answered = 0
for i in range(n):
    with socket.create_connection(("n%d.example.com" % i, 80), timeout=10) as s:
        s.sendall(b"GET /r%d HTTP/1.1\r\nHost: n%d.example.com\r\nConnection: close\r\n\r\n" % (i, i))
        answered += s.recv(100).startswith(b"HTTP/1.1 403")
open(done, "w").close()
sys.exit(0 if answered == n else 3)
' $N "$T/w/done" > "$T/jail.out" 2> "$T/jail.log"
rc=$?
set -e
assert_eq "$rc" "0" "the jail's exit status (CMD's: every request answered 403)"
wait "$reader" || fail "the reader failed"
out=$(cat "$T/reader.out")
echo "reader: $out"
assert_eq "$(echo "$out" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["denied"])')" \
  "$N" "request records the reader got"
assert_contains "$out" '"paths": ["/r0", "/r1", "/r2"]' "records in order"
pass "a stalled audit reader: $N requests served, every record delivered at exit, status 0"
