#!/usr/bin/env bash
# `serve --log -`: the audit log on standard output, which README gives as the way to
# send it to a Unix socket (a log shipper's listener, which --log cannot open). Only
# records reach it (the daemon's own messages go to standard error), one JSON object a
# line, and SIGHUP, which reopens a log file, leaves it as it is and says so.
#
#   ap-ls-PID (named namespace)        host
#   curl ---nft---> listener  ====>    authproxy serve --log -  --stdout-->  $T/shipper.sock
#                                        |                                   (Unix socket)
#                                        +--> fake upstream 127.0.0.1:$up_PORT
. "$(dirname "$0")/lib.sh"

start_upstream up
STATE=$T/state
SOCK=$T/control.sock
# The log shipper: a Unix socket listener that writes what it receives to a file.
"$PY" - "$T/shipper.sock" "$T/shipped.jsonl" <<'PYEOF' 2> "$T/shipper.log" &
import socket, sys
srv = socket.socket(socket.AF_UNIX)
srv.bind(sys.argv[1])
srv.listen(1)
conn, _ = srv.accept()
with open(sys.argv[2], "ab", buffering=0) as out:
    while True:
        data = conn.recv(65536)
        if not data:
            break
        out.write(data)
PYEOF
SHIPPER_PID=$!
PIDS+=($SHIPPER_PID)
wait_for "[ -S '$T/shipper.sock' ]" 10
# The daemon with its standard output connected to the shipper's socket.
"$PY" - "$T/shipper.sock" "$AUTHPROXY" serve --state-dir "$STATE" --control "$SOCK" \
  --drain-timeout 1 --log - 2>> "$T/serve.log" <<'PYEOF' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
os.dup2(s.fileno(), 1)
os.execv(sys.argv[2], sys.argv[2:])
PYEOF
SERVE_PID=$!
PIDS+=($SERVE_PID)
ctl() { "$AUTHPROXY" ctl --control "$SOCK" "$@"; }
wait_for "[ -S '$SOCK' ] && ctl health >/dev/null 2>&1"

cat > "$T/cfg.json" <<EOF
{ "dns": { "remap": { "plain.example.com": "127.0.0.1:$up_PORT" } } }
EOF
ns=$(make_netns ls)
ctl attach box --netns "/var/run/netns/$ns" --config "$T/cfg.json" > /dev/null
ip netns exec "$ns" curl -sS -o /dev/null http://plain.example.com/before-hup
kill -HUP "$SERVE_PID"
wait_for "grep -q 'SIGHUP: the audit log is standard output' '$T/serve.log'" 10
ip netns exec "$ns" curl -sS -o /dev/null http://plain.example.com/after-hup
ctl detach box > /dev/null
kill -TERM "$SERVE_PID"
wait "$SERVE_PID" || fail "serve exited with status $?"
wait "$SHIPPER_PID" # it has written all it received once the daemon's end closed
got=$("$PY" - "$T/shipped.jsonl" <<'PYEOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]   # every line a JSON object
print(" ".join(r["path"] for r in recs if r["event"] == "request"),
      sorted({r["event"] for r in recs}))
PYEOF
) || fail "the shipped audit log is not JSON Lines: $(head -c 300 "$T/shipped.jsonl")"
assert_eq "$got" "/before-hup /after-hup ['conn', 'request']" \
  "records on standard output, before and after SIGHUP"
assert_contains "$(cat "$T/serve.log")" "serve: stopping" "the daemon's messages on standard error"
pass "serve --log - to a Unix socket: records only, one JSON object a line; SIGHUP leaves it"
