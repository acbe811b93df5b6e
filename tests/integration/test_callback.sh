#!/usr/bin/env bash
# Dynamic credentials through `authproxy jail`: the callback is asked once per
# (host, port) and TTL, concurrent first requests share one call, every failure of the
# callback fails the request closed (502/503, nothing reaches the upstream), a slow
# callback does not hold up other traffic, and neither the sandbox nor the logs see a
# credential.
#
#   jail netns (anonymous)                  host netns
#   +-----------------------------+         +------------------------------------------+
#   | curl http://api.corp.example | -nft-> | authproxy (in-process)                    |
#   |   resolv: 127.0.0.53         |        |   POST {"sandbox","host","port"} ------>  |
#   +-----------------------------+         |     fake callback 127.0.0.1:$cb_PORT      |
#                                           |     (or https, or a unix socket)          |
#                                           |   request + Authorization from the answer |
#                                           |     --> fake upstream 127.0.0.1:$up_PORT  |
#                                           +------------------------------------------+
#   dns.remap points every test name at the fake upstream; the fake callback answers
#   per destination host (tests/tools/fake_callback.py --host-mode HOST=MODE).
. "$(dirname "$0")/lib.sh"

TTL=2
TIMEOUT_MS=3000

start_upstream up

# start_callback NAME ARGS...: a fake callback on 127.0.0.1 (or --unix PATH); sets
# ${NAME}_PORT for TCP; each call is logged as a JSON line to $T/NAME.jsonl.
start_callback() {
  local name=$1
  shift
  : > "$T/$name.jsonl"
  "$PY" "$TOOLS/fake_callback.py" --log "$T/$name.jsonl" "$@" 2> "$T/$name.log" &
  PIDS+=($!)
}

# cbq NAME EXPR: evaluates a Python expression over `calls` (the call records of
# $T/NAME.jsonl) and `events`; for(h) is the list of calls for destination host h.
cbq() {
  "$PY" - "$T/$1.jsonl" "$2" <<'PYEOF'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
calls = [e for e in events if e.get("event") == "call"]
def for_(h):
    return [c for c in calls if c.get("host") == h]
def hdr(c, name):
    return [v for k, v in c["headers"] if k.lower() == name.lower()]
r = eval(sys.argv[2].replace("for(", "for_("))
print(r if not isinstance(r, (dict, list)) else json.dumps(r))
PYEOF
}

FAIL_MODES=(
  "st500=status:500"
  "st403=status:403"
  "notjson=not_json"
  "noheaders=no_headers"
  "array=headers_array"
  "badname=bad_header_name"
  "hop=hop_header"
  "crlf=crlf_value"
  "huge=huge_body"
  "close=close"
  "hang=hang"
)
host_modes=(--host-mode "slow.corp.example=gate" --host-mode "burst.corp.example=gate")
for m in "${FAIL_MODES[@]}"; do
  host_modes+=(--host-mode "${m%%=*}.corp.example=${m#*=}")
done
start_callback cb --port-file "$T/cb.port" --gate "$T/gates" "${host_modes[@]}"
mkdir -p "$T/gates"
wait_for "[ -s '$T/cb.port' ]" 10
cb_PORT=$(cat "$T/cb.port")

mkdir -p "$T/secrets"
CB_TOKEN="cbtok-$$"
printf '%s\n' "$CB_TOKEN" > "$T/secrets/CALLBACK_TOKEN"

# write_config FILE URL TTL TIMEOUT_MS: the callback covers *.corp.example; every test
# name is remapped to the fake upstream.
write_config() {
  local remap="" h
  for h in api slow burst other-cb "${FAIL_MODES[@]%%=*}"; do
    remap+="\"$h.corp.example\": \"127.0.0.1:$up_PORT\", "
  done
  cat > "$1" <<EOF
{
  "callback": {
    "url": "$2", "match_hosts": ["*.corp.example"], "allow_plain_http": true,
    "ttl_seconds": $3, "timeout_ms": $4,
    "headers": [ { "name": "X-Callback-Token", "type": "workspace_secret",
                   "value": "Bearer {CALLBACK_TOKEN}" } ]
  },
  "dns": { "remap": { $remap "other.example.org": "127.0.0.1:$up_PORT" } }
}
EOF
}

write_config "$T/config.json" "http://127.0.0.1:$cb_PORT/creds?tenant=t-$$" "$TTL" "$TIMEOUT_MS"
write_config "$T/config-ttl0.json" "http://127.0.0.1:$cb_PORT/creds" 0 5000

run() {
  jail --config "$T/config.json" --secrets-dir "$T/secrets" --log "$T/audit.jsonl" \
    -- "$@" 2>> "$T/jail.log"
}

# 1. N sequential requests within the TTL: one call; every request carries its answer.
out=$(run sh -c 'for i in 1 2 3 4 5; do
  curl -sS -w " code=%{http_code}\n" http://api.corp.example/seq/$i; done')
assert_eq "$(echo "$out" | grep -c 'code=200')" "5" "sequential requests answered"
assert_not_contains "$out" "Bearer cb-" "credential visible to the sandbox"
assert_eq "$(cbq cb 'len(for("api.corp.example"))')" "1" "one callback call for 5 requests"
assert_eq "$(upq up 'len(reqs)')" "5" "upstream requests"
assert_eq "$(upq up 'sorted(set(v for r in reqs for v in hdr(r, "Authorization")))')" \
  '["Bearer cb-1"]' "every request carries the callback's header"
assert_eq "$(upq up 'max(len(hdr(r, "Authorization")) for r in reqs)')" "1" \
  "exactly one Authorization upstream"
# The call itself: method, path, content type, the callback's own header, the body.
assert_eq "$(cbq cb 'for("api.corp.example")[0]["method"]')" "POST" "callback method"
assert_eq "$(cbq cb 'for("api.corp.example")[0]["path"]')" "/creds?tenant=t-$$" "callback path"
assert_eq "$(cbq cb 'hdr(calls[0], "Content-Type")')" '["application/json"]' "content type"
assert_eq "$(cbq cb 'hdr(calls[0], "X-Callback-Token")')" "[\"Bearer $CB_TOKEN\"]" \
  "the callback's own credential from the secret store"
assert_eq "$(cbq cb 'sorted(calls[0]["json"].keys())')" '["host", "port", "sandbox"]' \
  "callback body fields"
assert_eq "$(cbq cb 'calls[0]["json"]["port"]')" "80" "callback body port"
assert_eq "$(cbq cb 'isinstance(calls[0]["json"]["sandbox"], str) and len(calls[0]["json"]["sandbox"]) > 0')" \
  "True" "callback body names the sandbox"
pass "one call for sequential requests within the TTL"

# 2. After the TTL the next request calls again. (The wait is the TTL under test.)
: > "$T/up.jsonl"
run sh -c "curl -sS -o /dev/null http://api.corp.example/a; sleep $((TTL + 1));
  curl -sS -o /dev/null http://api.corp.example/b"
assert_eq "$(cbq cb 'len(for("api.corp.example"))')" "3" "a new call after the TTL"
assert_eq "$(upq up 'len(set(hdr(r, "Authorization")[0] for r in reqs))')" "2" \
  "the second request carries the new answer"
pass "expiry after the TTL"

# 3. 50 concurrent first requests: one call (ttl 0, so only single flight can merge
# them). The callback holds its answer until every request has reached the proxy: 50
# connections whose heads the proxy has read (bytes received, none left unread: a
# connection curl has opened but not yet written to has Recv-Q 0 too, and its request
# would come after the answer, a second call); then the gate opens.
: > "$T/up.jsonl"
out=$(jail --config "$T/config-ttl0.json" --secrets-dir "$T/secrets" -- sh -c '
  for i in $(seq 50); do
    curl -sS -o /dev/null -w "code=%{http_code}\n" http://burst.corp.example/b/$i &
  done
  port=$(ss -Hltn | awk "{ print \$4 }" | grep -v ":53\$" | head -n1 | sed "s/.*://")
  n=0
  until [ "$(ss -Htni state established "( sport = :$port )" |
    awk "/^[0-9]/ { q = \$1; next } q == 0 && /bytes_received:[1-9]/ { n++ } END { print n + 0 }")" -ge 50 ]; do
    n=$((n + 1)); [ $n -lt 600 ] || { echo "requests never all arrived"; break; }
    sleep 0.05
  done
  touch '"$T/gates/burst.corp.example"'
  wait' 2>> "$T/jail.log")
assert_eq "$(echo "$out" | grep -c 'code=200')" "50" "concurrent requests answered"
assert_eq "$(cbq cb 'len(for("burst.corp.example"))')" "1" "one callback call for 50 requests"
assert_eq "$(upq up 'len(reqs)')" "50" "upstream requests"
assert_eq "$(upq up 'len(set(hdr(r, "Authorization")[0] for r in reqs))')" "1" \
  "all 50 carry the one answer"
pass "single flight for concurrent first requests"

# 4. Every failure of the callback fails the request closed: 502/503 with the reason,
# nothing reaches the upstream, and the failure is not cached (a second request calls
# again).
for m in "${FAIL_MODES[@]}"; do
  h="${m%%=*}.corp.example"
  want=callback_failed
  [ "${m#*=}" = hang ] && want=callback_timeout
  : > "$T/up.jsonl"
  out=$(run sh -c "curl -sS -o /dev/null -D - -w 'code=%{http_code}\n' http://$h/x;
    curl -sS -o /dev/null -D - -w 'code=%{http_code}\n' http://$h/y" || true)
  case "$(echo "$out" | grep -o 'code=[0-9]*' | sort -u | tr '\n' ' ')" in
    "code=502 " | "code=503 " | "code=502 code=503 ") ;;
    *) fail "$h: expected 502 or 503 for both requests, got: $out" ;;
  esac
  assert_eq "$(echo "$out" | grep -ci "^X-Authproxy-Error: $want" || true)" "2" \
    "$h: reason $want"
  assert_eq "$(upq up 'len(events)')" "0" "$h: the upstream received nothing"
  assert_eq "$(cbq cb "len(for(\"$h\"))")" "2" "$h: failure not cached"
  assert_not_contains "$out" "cb-" "$h: nothing of the answer reached the sandbox"
  pass "callback ${m#*=}: $want, fail closed"
done

# 5. A slow callback does not stall other traffic: while the call for slow.corp.example
# is in flight (its answer held until the gate opens after the others), requests to
# another host, with and without the callback, complete. A stalled proxy would finish
# them only after the callback gives up waiting (30 s), after the slow request.
: > "$T/up.jsonl"
out=$(run sh -c "
  curl -sS -o /dev/null -w 'slow code=%{http_code}\n' http://slow.corp.example/s &
  i=0
  until grep -q '\"host\": \"slow.corp.example\"' '$T/cb.jsonl'; do
    i=\$((i + 1)); [ \$i -lt 200 ] || { echo 'slow call never started'; exit 1; }
    sleep 0.05
  done
  for i in 1 2 3; do
    curl -sS -o /dev/null -w 'other code=%{http_code}\n' http://other.example.org/o\$i
    curl -sS -o /dev/null -w 'other code=%{http_code}\n' http://api.corp.example/a\$i
  done
  echo others-done
  touch '$T/gates/slow.corp.example'
  wait")
assert_eq "$(echo "$out" | grep -c 'other code=200')" "6" "other requests answered"
assert_contains "$out" "slow code=200" "the slow request completes too"
assert_eq "$(echo "$out" | grep -n . | grep -E 'others-done|slow code' | head -n1 | cut -d: -f2)" \
  "others-done" "other requests finished before the slow callback answered"
assert_eq "$(upq up 'all(r["t"] < [s for s in reqs if s["path"] == "/s"][0]["t"] for r in reqs if r["path"] != "/s")')" \
  "True" "upstream saw the other requests first"
pass "a slow callback does not hold up other hosts"

# 6. The audit log records each call (names only) and no log holds a credential.
wait_for "grep -q '\"event\":\"callback\"' '$T/audit.jsonl'" 5
alog=$(cat "$T/audit.jsonl")
assert_contains "$alog" '"event":"callback"' "audit record per call"
assert_contains "$alog" '"host":"api.corp.example","port":80,' "audit key"
assert_contains "$alog" '"outcome":"ok"' "audit outcome"
assert_contains "$alog" '"header_names":["Authorization"]' "audit header names"
assert_contains "$alog" '"reason":"callback_timeout"' "audit timeout"
assert_contains "$alog" '"latency_ms":' "audit latency"
for f in "$T/audit.jsonl" "$T/jail.log"; do
  assert_not_contains "$(cat "$f")" "Bearer cb-" "credential in $f"
  assert_not_contains "$(cat "$f")" "$CB_TOKEN" "callback token in $f"
  assert_not_contains "$(cat "$f")" "tenant=t-$$" "callback URL query in $f"
done
pass "audit records names, never values"

# 7. An https callback, verified against --upstream-ca (the address is in its IP SAN).
make_ca "$T/cbca" localhost
: > "$T/cbs.jsonl"
start_callback cbs --port-file "$T/cbs.port" --cert "$T/cbca/server.pem" --key "$T/cbca/server.key"
wait_for "[ -s '$T/cbs.port' ]" 10
write_config "$T/config-https.json" "https://127.0.0.1:$(cat "$T/cbs.port")/creds" 60 3000
: > "$T/up.jsonl"
out=$(jail --config "$T/config-https.json" --secrets-dir "$T/secrets" \
  --upstream-ca "$T/cbca/ca.pem" -- curl -sS -w ' code=%{http_code}' http://api.corp.example/tls \
  2>> "$T/jail.log")
assert_contains "$out" "code=200" "https callback"
assert_eq "$(upq up 'hdr(reqs[-1], "Authorization")')" '["Bearer cb-1"]' "https callback answer"
# Without the CA the callback does not verify: fail closed, nothing sent to it.
: > "$T/up.jsonl"
out=$(jail --config "$T/config-https.json" --secrets-dir "$T/secrets" -- \
  curl -sS -o /dev/null -D - http://api.corp.example/tls 2>> "$T/jail.log" || true)
assert_contains "$out" "X-Authproxy-Error: callback_failed" "unverified https callback"
assert_eq "$(upq up 'len(events)')" "0" "upstream untouched"
assert_eq "$(cbq cbs 'len(calls)')" "1" "no request sent to an unverified callback"
pass "https callback verified"

# 8. A callback on a unix socket, with a request path.
start_callback cbu --unix "$T/cb.sock"
wait_for "[ -S '$T/cb.sock' ]" 10
write_config "$T/config-unix.json" "unix:$T/cb.sock:/v1/creds" 60 3000
: > "$T/up.jsonl"
out=$(jail --config "$T/config-unix.json" --secrets-dir "$T/secrets" -- \
  curl -sS -w ' code=%{http_code}' http://api.corp.example/unix 2>> "$T/jail.log")
assert_contains "$out" "code=200" "unix socket callback"
assert_eq "$(cbq cbu 'calls[0]["path"]')" "/v1/creds" "unix callback path"
assert_eq "$(upq up 'hdr(reqs[-1], "Authorization")')" '["Bearer cb-1"]' "unix callback answer"
pass "unix socket callback"

# 9. The upstream ends its idle keep-alive while the next request waits for the
#    callback: the request is sent on a new upstream connection when the answer comes
#    (the old proxy closed the sandbox's connection, and the request was lost).
start_callback cbslow --port-file "$T/cbslow.port" --mode slow --delay 1
wait_for "[ -s '$T/cbslow.port' ]" 10
write_config "$T/config-slow.json" "http://127.0.0.1:$(cat "$T/cbslow.port")/creds" 0 5000
: > "$T/up.jsonl"
out=$(jail --config "$T/config-slow.json" --secrets-dir "$T/secrets" -- "$PY" -c '
import http.client
c = http.client.HTTPConnection("api.corp.example", 80, timeout=10)
c.request("GET", "/ka-close?after=0.3")  # the upstream closes 0.3 s after answering
r = c.getresponse()
first = (r.status, len(r.read()) > 0)
port = c.sock.getsockname()[1]
c.request("GET", "/after-idle-close")  # its callback answers after 1 s
r = c.getresponse()
r.read()
print(first, r.status, c.sock is not None and c.sock.getsockname()[1] == port)
' 2>> "$T/jail.log")
assert_eq "$out" "(200, True) 200 True" "the request awaiting the callback, kept alive"
assert_eq "$(upq up '[r["path"] for r in reqs]')" "$(jlist "/ka-close" "/after-idle-close")" \
  "both requests reached the upstream"
assert_eq "$(upq up 'len(set(r["conn"] for r in reqs))')" "2" "the second on a new connection"
assert_eq "$(upq up 'hdr(reqs[1], "Authorization")')" '["Bearer cb-2"]' \
  "the second carries its own callback answer"
pass "an upstream's idle close during the callback wait loses no request"
