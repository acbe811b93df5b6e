#!/usr/bin/env bash
# Request smuggling and other malformed HTTP from inside a sandbox (invariant I5):
# every ambiguous shape is answered 400/431/501, the connection is closed, and the
# upstream never receives the request; shapes that are forwarded are forwarded changed
# (h2c upgrade stripped, `Connection: Authorization` neutralized).
#
#   jail: smuggle_client.py -> api.example.com:80 -> authproxy -> fake upstream
. "$(dirname "$0")/../integration/lib.sh"

start_upstream up
api_config "sk-smuggle-$$"

jail --config "$T/config.json" --secrets-dir "$T/secrets" --user nobody -- \
  "$PY" "$(dirname "$0")/smuggle_client.py" api.example.com 80 > "$T/results.jsonl"

result() { "$PY" -c "
import json, sys
for l in open('$T/results.jsonl'):
    r = json.loads(l)
    if r['case'] == '$1':
        print(r['$2'])
        break
else:
    print('missing')"; }

rejected=(cl_te te_cl dup_cl_same dup_cl_diff cl_list cl_negative cl_hex cl_plus
  te_xchunked te_chunked_identity te_double_field te_vtab te_quoted te_http10 bare_lf
  bare_cr obs_fold space_before_colon nul_in_header pipelined_after_rejected
  absolute_other_host connect http2_preface http09 missing_host two_hosts huge_head
  chunk_size_invalid chunk_size_overflow chunk_ext_bare_lf chunk_missing_crlf)
for c in "${rejected[@]}"; do
  status=$(result "$c" status)
  case "$status" in
    "HTTP/1.1 400 "*|"HTTP/1.1 431 "*|"HTTP/1.1 501 "*) ;;
    *) fail "$c: expected a 400/431/501 answer, got '$status'" ;;
  esac
  end=$(result "$c" end)
  [ "$end" = closed ] || [ "$end" = reset ] || fail "$c: connection left $end after rejection"
  n=$(upq up "len([r for r in reqs if r['path'] == '/case/$c'])")
  assert_eq "$n" 0 "$c: the upstream received the request"
done
assert_eq "$(upq up "len([r for r in reqs if 'pipelined' in r['target']])")" 0 \
  "a request pipelined after a rejected one reached the upstream"
pass "${#rejected[@]} malformed or ambiguous requests rejected, none forwarded"

# Framing faults found in the head never even open an upstream connection: only the
# four chunked-body cases (valid heads) and the two forwarded shapes did (those two
# on one connection or two: the proxy may carry both on one pooled connection).
assert_eq "$(upq up 'len([e for e in events if e["event"] == "conn"]) - len(set(r["conn"] for r in reqs))')" "4" \
  "upstream connections besides those of the forwarded requests"
pass "head rejections never reach the upstream at all"

# h2c: forwarded as plain HTTP/1.1, the upgrade stripped.
assert_contains "$(result h2c_upgrade status)" "200" "h2c request answered"
assert_eq "$(upq up 'hdr([r for r in reqs if r["path"] == "/case/h2c_upgrade"][0], "Upgrade")')" "[]" "Upgrade: h2c forwarded"
assert_eq "$(upq up 'hdr([r for r in reqs if r["path"] == "/case/h2c_upgrade"][0], "HTTP2-Settings")')" "[]" "HTTP2-Settings forwarded"
pass "h2c upgrade stripped"

# Connection: Authorization cannot make a hop drop or keep the sandbox's copy.
r='[r for r in reqs if r["path"] == "/case/connection_authorization"][0]'
assert_eq "$(upq up "hdr($r, 'Authorization')")" "$(jlist "Bearer sk-smuggle-$$")" "injected exactly once"
assert_not_contains "$(upq up "hdr($r, 'Connection')")" "uthorization" "Connection still names Authorization"
pass "Connection: Authorization neutralized"
