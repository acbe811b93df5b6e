#!/usr/bin/env bash
# A request record keeps the first 512 bytes of the path (never the query). A longer
# path was cut there without a word, so a record read as a request for a shorter path,
# whatever the rest of it named. The record now says `"path_truncated": true`, and a
# path that fits, or whose query starts within the 512 bytes, has no such member.
#
#   jail: curl --> authproxy --log --> fake upstream (ok.example.com, remapped)
. "$(dirname "$0")/lib.sh"

start_upstream plain
cat > "$T/config.json" <<EOF2
{ "dns": { "remap": { "ok.example.com": "127.0.0.1:$plain_PORT" } } }
EOF2
long=/$(printf 'a%.0s' $(seq 1 700))
fits=/$(printf 'b%.0s' $(seq 1 500))
jail --config "$T/config.json" --user nobody --log "$T/audit.jsonl" -- sh -c "
  curl -sS -o /dev/null 'http://ok.example.com$long'
  curl -sS -o /dev/null 'http://ok.example.com$fits?$(printf 'q%.0s' $(seq 1 100))'
  curl -sS -o /dev/null 'http://ok.example.com/short'" || fail "the jail failed"
got=$("$PY" - "$T/audit.jsonl" <<'PYEOF'
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r["event"] == "request":
        print(len(r["path"]), r.get("path_truncated", False))
PYEOF
)
assert_eq "$got" "512 True
501 False
6 False" "path lengths and truncation in the request records"
pass "a path cut in the audit record says so; one that fits does not"
