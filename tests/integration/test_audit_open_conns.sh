#!/usr/bin/env bash
# An open connection is in the audit log before it ends. A connection's record was
# written only when it closed, so a tunnel or a keep-alive connection that stayed open
# for hours was invisible until then, and a daemon killed outright lost it entirely.
# Now each open connection gets a "conn_open" record every --log-interval seconds
# (default 60), with its bytes and duration so far, and still exactly one "conn"
# record when it ends. --log-interval 0 turns them off.
#
#   jail --log-interval 1: client --> authproxy --> upstream (plain HTTP, keep-alive)
. "$(dirname "$0")/lib.sh"

start_upstream plain
cat > "$T/config.json" <<EOF2
{ "dns": { "remap": { "ok.example.com": "127.0.0.1:$plain_PORT" } } }
EOF2

# The client opens three connections and asks once on each, closes the second, holds
# the others open until $T/release exists (bounded), asks again on each, and closes.
cat > "$T/client.py" <<'PYEOF'
import os, socket, sys, time
release = sys.argv[1]
def ask(s):
    s.sendall(b"GET /held HTTP/1.1\r\nHost: ok.example.com\r\n\r\n")
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(4096)
    head, _, body = got.partition(b"\r\n\r\n")
    length = int([l.split(b":")[1] for l in head.split(b"\r\n")
                  if l.lower().startswith(b"content-length:")][0])
    while len(body) < length:
        body += s.recv(4096)
conns = [socket.create_connection(("ok.example.com", 80), timeout=10) for _ in range(3)]
for s in conns:
    ask(s)
conns[1].close()  # the middle one of the proxy's list ends before its first record
for _ in range(300):
    if os.path.exists(release):
        break
    time.sleep(0.1)
for s in (conns[0], conns[2]):
    ask(s)
    s.close()
PYEOF

# q FILE EXPR: EXPR over the audit records of FILE (recs).
q() {
  "$PY" - "$1" "$2" <<'PYEOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(eval(sys.argv[2]))
PYEOF
}

# has_open FILE N: FILE holds at least N "conn_open" records.
has_open() { [ "$(q "$1" 'len([r for r in recs if r["event"] == "conn_open"])')" -ge "$2" ]; }

bg_start "$T/jail.log" "$AUTHPROXY" jail --config "$T/config.json" --user nobody \
  --log "$T/audit.jsonl" --log-interval 1 -- "$PY" "$T/client.py" "$T/release"
jail_pid=$BG_PID
wait_until 20 "two conn_open records of each open connection" has_open "$T/audit.jsonl" 4
assert_eq "$(q "$T/audit.jsonl" '[r["conn"] for r in recs if r["event"] == "conn"]')" "[2]" \
  "only the second connection has ended"
assert_eq "$(q "$T/audit.jsonl" 'sorted({(r["conn"], r["name"], r["action"], r["protocol"], r["bytes_up"] > 0,
                                           r["bytes_down"] > 0) for r in recs if r["event"] == "conn_open"})')" \
  "[(1, 'ok.example.com', 'tunnel', 'http', True, True), (3, 'ok.example.com', 'tunnel', 'http', True, True)]" \
  "the open connections' records"
assert_eq "$(q "$T/audit.jsonl" '[[r["duration_ms"] >= 1000 * (i + 1) for i, r in
                                   enumerate(r for r in recs if r["event"] == "conn_open" and r["conn"] == n)][:2]
                                  for n in (1, 3)]')" \
  "[[True, True], [True, True]]" "each record one interval later"
touch "$T/release"
wait "$jail_pid" || fail "the jail failed: $(cat "$T/jail.log")"
cat "$T/audit.jsonl"
assert_eq "$(q "$T/audit.jsonl" 'sorted(r["conn"] for r in recs if r["event"] == "conn")')" "[1, 2, 3]" \
  "one record for each when it ends"
assert_eq "$(q "$T/audit.jsonl" '[r["event"] for r in recs][-4:]')" "['request', 'conn', 'request', 'conn']" \
  "no conn_open record after the connections' end"
assert_eq "$(q "$T/audit.jsonl" '([r for r in recs if r["event"] == "conn" and r["conn"] == 1][0]["bytes_down"] >
                                  [r for r in recs if r["event"] == "conn_open" and r["conn"] == 1][-1]["bytes_down"])')" \
  "True" "the total counts the bytes after the last record"
pass "an open connection has a conn_open record each --log-interval, and one conn record at its end"

# --log-interval 0: only the record at the end.
rm -f "$T/release"
touch "$T/release"
"$AUTHPROXY" jail --config "$T/config.json" --user nobody --log "$T/audit0.jsonl" \
  --log-interval 0 -- "$PY" "$T/client.py" "$T/release" >"$T/jail0.log" 2>&1 ||
  fail "the jail failed: $(cat "$T/jail0.log")"
assert_eq "$(q "$T/audit0.jsonl" 'sorted({r["event"] for r in recs})')" "['conn', 'request']" \
  "records with --log-interval 0"

out=$("$AUTHPROXY" jail --log-interval 86401 -- true 2>&1) && fail "86401 accepted"
assert_contains "$out" '--log-interval: "86401" is not a number from 0 to 86400'
pass "--log-interval 0 writes a connection's record only at its end; out of range is refused"
