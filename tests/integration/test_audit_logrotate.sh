#!/usr/bin/env bash
# logrotate's two styles under a daemon writing its audit log, as the README says to
# use them: rename and SIGHUP (the recommended one) puts every record in the old file
# or the new one, whole; copytruncate leaves no hole of NULs (the log is opened with
# O_APPEND, so the daemon writes at the new end, not at its old offset), but loses the
# records written between its copy and its truncation.
#
#   ap-alr-PID (sandbox)  --denied requests-->  authproxy serve --log $T/audit.jsonl
. "$(dirname "$0")/lib.sh"
. "$SRC/tests/adversarial/adv_lib.sh"

LOG=$T/audit.jsonl
serve_start --log "$LOG"
ns=$(make_netns alr)
echo '{ "egress": { "default": "deny" } }' > "$T/cfg.json"
ctl attach box --netns "/var/run/netns/$ns" --config "$T/cfg.json" > /dev/null

# requests N: N denied requests (two records each: the request and its connection).
requests() {
  ip netns exec "$ns" "$PY" - "$1" <<'PYEOF'
import socket, sys
for i in range(int(sys.argv[1])):
    s = socket.create_connection(("198.51.100.1", 80), timeout=5)
    s.sendall(b"GET /x HTTP/1.1\r\nHost: denied.example\r\nConnection: close\r\n\r\n")
    while s.recv(65536):
        pass
    s.close()
PYEOF
}
written() { ctl metrics | awk '$1 == "authproxy_audit_records_total" { print $2 }'; }
# whole FILE...: the number of lines, each a JSON object; fails on a NUL or a bad line.
whole() {
  "$PY" - "$@" <<'PYEOF'
import json, sys
n = 0
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    if b"\0" in data:
        sys.exit("FAIL: %s holds NULs (a hole)" % path)
    for line in data.splitlines():
        json.loads(line)
        n += 1
print(n)
PYEOF
}

requests 50
wait_for "[ \"\$(written)\" = 100 ]"
mv "$LOG" "$T/audit.jsonl.1"
kill -HUP "$serve_pid"
wait_for "grep -q 'audit log reopened' '$T/serve.log'"
requests 50
wait_for "[ \"\$(written)\" = 200 ]"
assert_eq "$(whole "$T/audit.jsonl.1")" 100 "records in the renamed file"
assert_eq "$(whole "$LOG")" 100 "records in the new file"
pass "rename and SIGHUP: every record in the old file or the new one, whole"

cp "$LOG" "$T/audit.jsonl.2"
truncate -s 0 "$LOG"
requests 50
wait_for "[ \"\$(written)\" = 300 ]"
assert_eq "$(whole "$LOG")" 100 "records in the truncated file"
pass "copytruncate: the daemon writes at the file's new end, no hole"
