#!/usr/bin/env bash
# The daemon: `authproxy serve` driven through the Python client and `authproxy ctl`.
# Many sandboxes with their own secrets, atomic config swaps under load, restart after
# kill -9 with no API call, redaction everywhere, API misuse, log reopening, state
# that must be read back at start (large files, refusals, failed writes), sandboxes
# that could not be re-attached, and a failed attach that must lock its namespace.
#
#   ap-sN-PID (named namespaces)     host
#   curl ---nft---> listener  ====>  authproxy serve --state-dir $T/state
#                                      control API: $T/control.sock (0600)
#                                      fake upstream 127.0.0.1:$up_PORT
. "$(dirname "$0")/lib.sh"

start_upstream up
STATE=$T/state
SOCK=$T/control.sock
export PYTHONPATH=$SRC/clients/python

serve() {
  "$AUTHPROXY" serve --state-dir "$STATE" --control "$SOCK" --log "$T/audit.jsonl" \
    --drain-timeout 1 -v >> "$T/serve.log" 2>&1 &
  SERVE_PID=$!
  PIDS+=($SERVE_PID)
  wait_for "[ -S '$SOCK' ] && '$AUTHPROXY' ctl --control '$SOCK' health >/dev/null 2>&1"
}
ctl() { "$AUTHPROXY" ctl --control "$SOCK" "$@"; }
client() { "$PY" -c "
import json, sys
from authproxy_client import Client, AuthproxyError
c = Client('$SOCK')
$1"; }

serve
assert_eq "$(stat -c %a "$SOCK")" "600" "control socket mode"
assert_eq "$(stat -c %a "$STATE")" "700" "state dir mode"
pass "daemon up; control socket and state private"

# ---- many sandboxes, each with its own secret ----------------------------------
N=100
config_for() {  # NAME SECRETKEY OPAQUE -> proxy_config JSON
  cat <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {$2}" },
                 { "name": "X-Opaque", "type": "opaque", "value": "$3" },
                 { "name": "X-Sandbox", "type": "plaintext", "value": "$1" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
}
for i in $(seq $N); do
  make_netns "s$i" >/dev/null
  config_for "box$i" "KEY_$i" "opaque-$i-$$" > "$T/cfg$i.json"
done
client "
for i in range(1, $N + 1):
    c.set_secret('KEY_%d' % i, 'sk-sandbox-%d-$$' % i)
    pem = c.attach('box%d' % i, '/var/run/netns/ap-s%d-$$' % i, json.load(open('$T/cfg%d.json' % i)))
    assert pem.startswith('-----BEGIN CERTIFICATE-----'), pem"
assert_eq "$(client "print(len(c.list()))")" "$N" "sandboxes listed"
# Every thread of the daemon lives in its own namespace: none keeps a sandbox's alive
# (the nf_tables socket closer, started inside the first one, used to stay there).
own_ns=$(readlink /proc/self/ns/net)
for task in /proc/$SERVE_PID/task/*; do
  [ "$(readlink "$task/ns/net")" = "$own_ns" ] ||
    fail "daemon thread $(cat "$task/comm") is in namespace $(readlink "$task/ns/net")"
done
for i in $(seq $N); do
  ip netns exec "ap-s$i-$$" curl -sS -o /dev/null "http://api.example.com/from/$i"
done
bad=$(upq up "[i for i in range(1, $N + 1) if [(hdr(r, 'Authorization'), hdr(r, 'X-Opaque'))
  for r in reqs if r['path'] == '/from/%d' % i] != [(['Bearer sk-sandbox-%d-$$' % i], ['opaque-%d-$$' % i])]]")
assert_eq "$bad" "[]" "sandboxes whose request did not carry exactly their own secret"
pass "$N sandboxes: each request carries only its own secret"

# ---- the API answers: redacted, CA available, errors explained --------------------
got=$(client "print(json.dumps(c.get('box1')))")
assert_contains "$got" '"value": "Bearer {KEY_1}"' "template shown unresolved"
assert_not_contains "$got" "opaque-1-$$" "opaque value returned"
assert_not_contains "$got" "sk-sandbox-1-$$" "secret returned"
assert_eq "$(ctl ca box1 | head -n1)" "-----BEGIN CERTIFICATE-----" "ctl ca"
# A CA written nowhere (a full disk under `ctl ca box1 > ca.pem`) is not a success.
set +e
err=$(ctl ca box1 2>&1 > /dev/full)
rc=$?
set -e
assert_eq "$rc/$err" "1/authproxy ctl: cannot write to standard output: No space left on device" \
  "ctl ca with its output unwritable"
assert_eq "$(client "print(c.secrets() == sorted(['KEY_%d' % i for i in range(1, $N + 1)]))")" "True" \
  "secret names listed"
client "
out = [json.dumps(c.get('box%d' % i)) for i in range(1, $N + 1)]
out += [json.dumps(c.list()), json.dumps(c.secrets()), json.dumps(c.health()), c.metrics()]
open('$T/api-answers.txt', 'w').write('\n'.join(out))"
for i in $(seq $N); do echo "sk-sandbox-$i-$$"; echo "opaque-$i-$$"; done > "$T/values.txt"
if grep -qFf "$T/values.txt" "$T/api-answers.txt"; then
  fail "an API answer holds a secret: $(grep -oFf "$T/values.txt" "$T/api-answers.txt" | head -3)"
fi
pass "GET is redacted; no API answer holds a value"

misuse() {  # METHOD PATH BODY -> "STATUS CODE"
  "$PY" - "$SOCK" "$1" "$2" "$3" <<'PYEOF'
import http.client, json, socket, sys
class C(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(sys.argv[1])
c = C("localhost", timeout=10)
arg = sys.argv[4]
body = None if arg == "-" else open(arg[1:], "rb").read() if arg.startswith("@") else arg.encode()
c.request(sys.argv[2], sys.argv[3], body=body)
r = c.getresponse(); data = r.read()
try:
    print(r.status, json.loads(data)["error"]["code"])
except Exception:
    print(r.status, "unparsable:", data[:80])
PYEOF
}
assert_eq "$(misuse PUT /v1/sandboxes/bad '{"netns": ')" "400 invalid_json" "malformed JSON"
assert_eq "$(misuse PUT /v1/sandboxes/bad '{"netns": "/nonexistent/ns", "proxy_config": {}}')" \
  "400 netns_not_found" "bad netns path"
assert_eq "$(misuse PUT /v1/sandboxes/bad '{"netns": "/etc/passwd", "proxy_config": {}}')" \
  "400 not_a_netns" "a file that is not a namespace"
assert_eq "$(misuse PUT /v1/sandboxes/box1 "{\"netns\": \"/var/run/netns/ap-s1-$$\", \"proxy_config\": {}}")" \
  "409 sandbox_exists" "duplicate attach"
assert_eq "$(misuse PUT /v1/sandboxes/bad '{"netns": "/var/run/netns/x", "proxy_config": {}, "extra": 1}')" \
  "400 invalid_request" "unknown field"
assert_eq "$(misuse GET /v1/sandboxes/nope -)" "404 sandbox_not_found" "unknown sandbox"
assert_eq "$(misuse DELETE /v1/sandboxes/nope -)" "404 sandbox_not_found" "delete unknown"
assert_eq "$(misuse PUT '/v1/sandboxes/..' '{}')" "400 invalid_name" "bad name"
assert_eq "$(misuse GET /v1/secrets/KEY_1 -)" "405 method_not_allowed" "secrets are write-only"
assert_eq "$(misuse PUT '/v1/secrets/bad%20key' '{"value": "v"}')" "400 invalid_secret" \
  "a secret key outside [A-Za-z0-9_.-]"
assert_eq "$(misuse PUT /v1/secrets/.hidden '{"value": "v"}')" "400 invalid_secret" \
  "a secret key starting with a dot"
assert_eq "$(misuse DELETE /v1/secrets/NEVER_PUSHED -)" "404 secret_not_found" \
  "deleting a secret never pushed"
assert_eq "$(misuse PUT /v1/secrets/K -)" "400 invalid_json" "a secret without a body"
assert_eq "$(misuse PUT /v1/secrets/K '[1]')" "400 invalid_request" "a body that is no object"
assert_eq "$(misuse PUT /v1/secrets/K '{"value": 1}')" "400 invalid_request" "a value that is no string"
assert_eq "$(misuse PUT /v1/secrets/K '{"value": "v", "x": 1}')" "400 invalid_request" \
  "an unknown field beside a secret"
assert_eq "$(misuse PUT /v1/configs/C '{"proxy_config": {}, "x": 1}')" "400 invalid_request" \
  "an unknown field beside a stored config"
assert_eq "$(misuse PUT /v1/configs/C '{}')" "400 invalid_request" "a stored config without one"
assert_eq "$(misuse PATCH /v1/sandboxes/box2 '{"netns": "/x"}')" "400 invalid_request" \
  "an update without proxy_config"
assert_eq "$(misuse GET /v1/configs/.bad -)" "400 invalid_name" "a config name starting with a dot"
assert_eq "$(misuse POST /v1/configs/C '{}')" "405 method_not_allowed" "POST to a stored config"
assert_eq "$(misuse GET /v1/sandboxes/a/b -)" "404 not_found" "a path under a sandbox"
assert_eq "$(misuse GET /v1/configs/nope -)" "404 config_not_found" "an unknown stored config"
"$PY" -c "print('w' * 65537, end='')" > "$T/over.secret"
assert_eq "$(misuse PUT /v1/secrets/OVER "{\"value\": \"$(cat "$T/over.secret")\"}")" \
  "400 invalid_secret" "a secret value over 65536 bytes"
err=$(ctl secret-set OVER < "$T/over.secret" 2>&1) && fail "ctl stored a 65537-byte secret"
assert_contains "$err" "values are at most 65536 bytes" "ctl: a value one byte too long"
"$PY" -c "print('w' * 70000, end='')" > "$T/over.secret"
err=$(ctl secret-set OVER < "$T/over.secret" 2>&1) && fail "ctl stored a 70000-byte secret"
assert_contains "$err" "cannot read the secret from standard input: it is longer than the 65536 bytes a secret may be" \
  "ctl names the limit a secret read from standard input is over"
err=$(ctl secret-set OVER --from-file "$T/no-such.secret" 2>&1) && fail "ctl read a missing file"
assert_contains "$err" "cannot read the secret from $T/no-such.secret: No such file or directory" \
  "ctl names why a secret file cannot be read"
# The most a value may hold, with the newline a file usually ends with (trimmed).
"$PY" -c "print('w' * 65536)" > "$T/max.secret"
ctl secret-set MAX_LEN --from-file "$T/max.secret" || fail "ctl refused a 65536-byte secret and its newline"
ctl secret-delete MAX_LEN > /dev/null
assert_eq "$(misuse POST /v1/nothing -)" "404 not_found" "unknown route"
"$PY" -c 'print("{\"netns\": \"" + "a" * (2 << 20) + "\"}")' > "$T/big.json"
assert_eq "$(misuse PUT /v1/sandboxes/big "@$T/big.json")" "413 body_too_large" "oversized body"
out=$(misuse PATCH /v1/sandboxes/box2 '{"proxy_config": {"rules": [{"name": "", "match_hosts": ["a b"]}], "bogus": 1}}')
assert_eq "$out" "422 invalid_config" "invalid config"
err=$(ctl update box2 --config <(echo '{"rules": [{"name": "", "match_hosts": ["a b"]}], "bogus": 1}') 2>&1 || true)
assert_contains "$err" "proxy_config.rules[0].name" "ctl shows the JSON path of each error"
assert_contains "$err" "proxy_config.bogus" "ctl shows every error"
assert_eq "$(ctl health | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["sandboxes"])')" "$N" \
  "daemon healthy after misuse"
pass "API misuse answered with JSON errors; daemon unaffected"

# ---- a control client that sends without reading holds one answer, not all ---------
# 40,000 pipelined requests (1.4 MB): the daemon answers each once the last answer has
# gone to the socket, so it stops reading when the socket is full and the sender
# blocks. It used to read them all and queue every answer (about 15 MiB). Then the
# client reads, and every answer arrives.
"$PY" - "$SOCK" > "$T/flood.out" <<'PYEOF'
import socket, sys, threading, time
n, req = 40000, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
sent = [0]
def send():
    for _ in range(n // 100):
        s.sendall(req * 100)
        sent[0] += 100
threading.Thread(target=send, daemon=True).start()
time.sleep(2)  # the daemon reads what it will, then the sender blocks
at_stall = sent[0]
s.settimeout(20)
marker, got, tail = b"HTTP/1.1 200 OK", 0, b""
deadline = time.monotonic() + 60
while got < n and time.monotonic() < deadline:
    data = s.recv(1 << 20)
    if not data:
        break
    data = tail + data
    got += data.count(marker)
    tail = data[-(len(marker) - 1):]
print(got, "blocked" if at_stall < n // 2 else "all %d read while unanswered" % at_stall)
PYEOF
assert_eq "$(cat "$T/flood.out")" "40000 blocked" \
  "pipelined control requests from a client that does not read"
pass "a control client that does not read is not read either; every answer arrives"

# ---- PATCH under load: every request under the old or the new config --------------
cat > "$T/v.py" <<'PYEOF'
import json, sys, urllib.request, time
seen = {}
fails = 0
end = time.time() + float(sys.argv[1])
while time.time() < end:
    try:
        r = urllib.request.urlopen("http://api.example.com/patch", timeout=5)
        r.read()
        seen["ok"] = seen.get("ok", 0) + 1
    except Exception as e:
        fails += 1
print(json.dumps({"ok": seen.get("ok", 0), "fails": fails}))
PYEOF
ip netns exec "ap-s3-$$" "$PY" "$T/v.py" 3 > "$T/load.out" &
LOADER=$!
PIDS+=($LOADER)
for v in 1 2 3 4 5 6 7 8; do
  "$PY" -c "
import json
c = json.load(open('$T/cfg3.json'))
c['rules'][0]['headers'].append({'name': 'X-Version', 'type': 'plaintext', 'value': '$v'})
json.dump(c, open('$T/cfg3v.json', 'w'))"
  ctl update box3 --config "$T/cfg3v.json" >/dev/null
  sleep 0.2
done
wait "$LOADER"
res=$(cat "$T/load.out")
assert_eq "$("$PY" -c "import json; print(json.loads('$res')['fails'])")" "0" "requests failed during PATCH"
versions=$(upq up "sorted(set((hdr(r, 'X-Version') or ['none'])[0] for r in reqs if r['path'] == '/patch'))")
assert_eq "$(upq up "all(len(hdr(r, 'X-Version')) <= 1 and hdr(r, 'Authorization') == ['Bearer sk-sandbox-3-$$'] for r in reqs if r['path'] == '/patch')")" \
  "True" "every request consistent with one config"
pass "PATCH under load: $(echo "$res"), versions seen $versions"

# ---- a swapped config also decides where a kept-alive connection's next request goes --
# (its dns.remap target, the addresses it may dial, the pooled upstreams it may reuse)
start_upstream up2
"$PY" -c "
import json
c = json.load(open('$T/cfg3.json'))
c['dns']['remap']['api.example.com'] = '127.0.0.1:$up2_PORT'
json.dump(c, open('$T/cfg3r.json', 'w'))"
# keepalive_across_update PREFIX CONFIG: in box3, GET PREFIX-before on a kept-alive
# connection, update box3 to CONFIG, then GET PREFIX-after on the same connection.
# $T/ka.out gets the second answer's status and "same-connection" (or "reconnected").
keepalive_across_update() {
  rm -f "$T/ka-1" "$T/ka-2"
  ip netns exec "ap-s3-$$" "$PY" - "$T" "$1" > "$T/ka.out" <<'PYEOF' &
import http.client, os, sys, time
t, prefix = sys.argv[1], sys.argv[2]
c = http.client.HTTPConnection("api.example.com", 80, timeout=10)
c.request("GET", prefix + "-before")
c.getresponse().read()
port = c.sock.getsockname()[1]
open(t + "/ka-1", "w").close()
for _ in range(100):
    if os.path.exists(t + "/ka-2"):
        break
    time.sleep(0.1)
c.request("GET", prefix + "-after")
r = c.getresponse()
r.read()
print(r.status, "same-connection" if c.sock.getsockname()[1] == port else "reconnected")
PYEOF
  local ka=$!
  PIDS+=($ka)
  wait_for "[ -e '$T/ka-1' ]"
  ctl update box3 --config "$2" >/dev/null
  : > "$T/ka-2"
  wait "$ka"
}
keepalive_across_update /ka "$T/cfg3r.json"
assert_eq "$(cat "$T/ka.out")" "200 same-connection" "request after the swap answered, kept alive"
assert_eq "$(upq up2 "[r['path'] for r in reqs]")" "$(jlist /ka-after)" \
  "the request after the swap went to the new remap target"
assert_eq "$(upq up "len([r for r in reqs if r['path'] == '/ka-after'])")" "0" \
  "the old remap target got no request after the swap"
ctl update box3 --config "$T/cfg3.json" >/dev/null
pass "a swapped config moves a kept-alive connection's next request to its new target"

# ---- a host a swapped config makes no_proxy gets no credential on an open connection --
# The kept-alive connection was intercepted under the old config; its next request is
# relayed as the new one says, untouched: the rule still names the host, but no_proxy
# wins, so nothing is injected.
"$PY" -c "
import json
c = json.load(open('$T/cfg3.json'))
c['no_proxy'] = ['api.example.com']
json.dump(c, open('$T/cfg3n.json', 'w'))"
keepalive_across_update /np "$T/cfg3n.json"
assert_eq "$(cat "$T/ka.out")" "200 same-connection" "request after the no_proxy swap answered"
assert_eq "$(upq up "[hdr(r, 'Authorization') for r in reqs if r['path'].startswith('/np-')]")" \
  "[[\"Bearer sk-sandbox-3-$$\"], []]" "the request after the swap carried no credential"
ctl update box3 --config "$T/cfg3.json" >/dev/null
pass "a host made no_proxy by a swap gets no credential on a kept-alive connection"

# ---- ctl attach, and dynamic credentials from a callback in the daemon ---------------
start_callback
cat > "$T/cbcfg.json" <<EOF
{ "callback": { "url": "http://127.0.0.1:$(cat "$T/cb.port")/creds", "match_hosts": ["api.example.com"], "allow_plain_http": true,
                "ttl_seconds": 60, "timeout_ms": 3000 },
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
ns=$(make_netns cbx)
ctl attach cbx --netns "/var/run/netns/$ns" --config "$T/cbcfg.json" > "$T/cbx-ca.pem"
assert_eq "$(head -n1 "$T/cbx-ca.pem")" "-----BEGIN CERTIFICATE-----" "ctl attach prints the CA"
ip netns exec "$ns" curl -sS -o /dev/null http://api.example.com/cb/1
ip netns exec "$ns" curl -sS -o /dev/null http://api.example.com/cb/2
assert_eq "$(upq up "[hdr(r, 'Authorization') for r in reqs if r['path'].startswith('/cb/')]")" \
  '[["Bearer cb-1"], ["Bearer cb-1"]]' "callback credentials injected (and cached) in the daemon"
ctl detach cbx >/dev/null
out=$(ctl attach cby --netns "/var/run/netns/$ns" --config-name nope 2>&1) &&
  fail "an attach naming no stored config succeeded"
assert_contains "$out" 'store it first with PUT /v1/configs/NAME or `authproxy ctl config-set NAME --config FILE`' \
  "an unknown config name says how to store one"
pass "ctl attach/detach; the callback works in the daemon"
# From a file, not a pipe: ctl ends without reading it, and an echo that wrote after
# that died of SIGPIPE, failing the pipeline (pipefail) one run in ten.
printf leaked > "$T/leaked"
out=$(ctl secret-set --help < "$T/leaked") || fail "ctl secret-set --help failed"
assert_contains "$out" "usage: authproxy ctl" "ctl secret-set --help prints the usage"
assert_not_contains "$(ctl secrets)" '"--help"' "ctl secret-set --help stores nothing"
out=$(ctl attach --help) || fail "ctl attach --help failed"
assert_contains "$out" "attach NAME --netns PATH" "ctl attach --help prints the usage"
# A key spelled like an option (valid, and the one the old `secret-set --help`
# stored) is still set and deleted, after "--".
echo -n v | ctl secret-set -- --help > /dev/null || fail "ctl secret-set -- --help failed"
assert_contains "$(ctl secrets)" '"--help"' "ctl secret-set -- --help stores the key --help"
ctl secret-delete -- --help > /dev/null || fail "ctl secret-delete -- --help failed"
assert_not_contains "$(ctl secrets)" '"--help"' "ctl secret-delete -- --help removes it"
pass "ctl COMMAND --help prints the usage and sends nothing; -- KEY is a key"

# ---- restart: kill -9, no network, back with no API call --------------------------
kill -KILL "$SERVE_PID"
wait "$SERVE_PID" 2>/dev/null || true
set +e
ip netns exec "ap-s1-$$" curl -sS --max-time 3 -o /dev/null http://api.example.com/while-down 2> "$T/down.err"
rc=$?
set -e
[ $rc -ne 0 ] || fail "a request succeeded while the daemon was down"
assert_eq "$(upq up "len([r for r in reqs if r['path'] == '/while-down'])")" "0" "request reached the upstream"
serve
ip netns exec "ap-s1-$$" curl -sS -o /dev/null http://api.example.com/after-restart
assert_eq "$(upq up "hdr([r for r in reqs if r['path'] == '/after-restart'][0], 'Authorization')")" \
  "$(jlist "Bearer sk-sandbox-1-$$")" "re-attached with its secret"
assert_eq "$(client "print(len(c.list()))")" "$N" "every sandbox re-attached"
pass "kill -9: no network while down ($(head -c 60 "$T/down.err")); restart re-attaches all"

# ---- a namespace that vanished while the daemon was down is reported ---------------
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
ip netns del "ap-s$N-$$"
serve
out=$(ctl list)
assert_contains "$out" "\"not_attached\"" "lost sandboxes reported"
assert_contains "$out" "box$N" "the vanished sandbox is named"
assert_eq "$(client "print(len(c.list()))")" "$((N - 1))" "the others re-attached"
# Monitoring sees it too: /healthz counted only the attached and /metrics had no series.
assert_eq "$(client "h = c.health(); print(h['status'], h['sandboxes'], h['not_attached'])")" \
  "ok $((N - 1)) 1" "/healthz with a sandbox not re-attached"
assert_eq "$(ctl metrics | awk '$1 == "authproxy_sandboxes_not_attached" { print $2 }')" 1 \
  "authproxy_sandboxes_not_attached"
pass "sandboxes whose namespace is gone are reported, not attached"

# ---- detach: namespace locked down, state forgotten --------------------------------
client "c.detach('box2')"
set +e
ip netns exec "ap-s2-$$" curl -sS --max-time 3 -o /dev/null http://api.example.com/after-detach 2>/dev/null
rc=$?
set -e
[ $rc -ne 0 ] || fail "a detached sandbox still reaches the network"
[ ! -e "$STATE/sandboxes/box2.sealed" ] || fail "detached sandbox state left behind"
pass "detach: no network, state removed"

# ---- sandboxes are found by name among many, after detaches in the middle ----------
# (the daemon indexes them by name in a hash table that grows past 64)
make_netns r3 >/dev/null
out=$(client "
gone = set(range(3, $N, 3))
for i in sorted(gone):
    c.detach('box%d' % i)
bad = []
for i in range(1, $N):
    try:
        c.get('box%d' % i)
        found = True
    except AuthproxyError as e:
        found = False
        if e.status != 404:
            bad.append((i, e.status))
    if found != (i != 2 and i not in gone):
        bad.append(i)
c.attach('box3', '/var/run/netns/ap-r3-$$', json.load(open('$T/cfg3.json')))
print(len(c.list()), c.get('box3')['netns'], bad)")
assert_eq "$out" "$((N - 2 - (N - 1) / 3 + 1)) /var/run/netns/ap-r3-$$ []" \
  "sandboxes found after detaches; a freed name attached again"
pass "sandboxes found by name among $N after detaches in the middle"

# ---- SIGHUP reopens the audit log --------------------------------------------------
mv "$T/audit.jsonl" "$T/audit.old.jsonl"
kill -HUP "$SERVE_PID"
wait_for "[ -e '$T/audit.jsonl' ]"
ip netns exec "ap-s1-$$" curl -sS -o /dev/null http://api.example.com/after-hup
wait_for "grep -q after-hup '$T/audit.jsonl'"
pass "SIGHUP reopens the audit log"

restart() {
  kill -TERM "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
  serve
}

# ---- state files larger than one request are read back at start ------------------
# A stored config's state file holds it twice (as pushed, and redacted for GET): a
# config of 0.65 MB, well within a request, makes a file of 1.3 MB. The daemon once
# read state with the request parser (1 MiB at most) and crashed at every start.
"$PY" -c "
import json
rules = [{'name': 'r%d' % i, 'match_hosts': ['h%d.example.com' % i],
          'headers': [{'name': 'X-P%d' % j, 'type': 'plaintext', 'value': 'v' * 4000}
                      for j in range(8)]} for i in range(20)]
json.dump({'rules': rules}, open('$T/bigcfg.json', 'w'))"
ctl config-set big --config "$T/bigcfg.json" >/dev/null
[ "$(stat -c %s "$STATE/configs/big.sealed")" -gt $((1 << 20)) ] || fail "big config's state is not over 1 MiB"
restart
assert_eq "$(client "print(len(c._call('GET', '/v1/configs/big')['proxy_config']['rules']))")" "20" \
  "the big config after a restart"
ctl config-delete big >/dev/null
pass "a state file over 1 MiB is read back at start"

# ---- the Python client: stored configs, an attach naming one, the CA ------------
ns=$(make_netns pyc)
out=$(client "
print(c.set_config('py-cfg', json.load(open('$T/cfg2.json'))))
print(c.configs().count('py-cfg'))
print(c.get_config('py-cfg')['proxy_config']['rules'][0]['headers'][0]['value'])
pem = c.attach('pyc', '/var/run/netns/$ns', config_name='py-cfg')
print(c.ca('pyc') == pem)
try:
    c.attach('pyc2', '/var/run/netns/$ns')
except ValueError:
    print('ValueError')
c.detach('pyc')
c.delete_config('py-cfg')
print(c.configs().count('py-cfg'))")
assert_eq "$out" "[]
1
Bearer {KEY_2}
True
ValueError
0" "the Python client's stored configs, attach by name and CA"
pass "the Python client covers stored configs and the CA"

# ---- state the daemon cannot read back is refused, and nothing of it kept ----------
# Pushed secrets are sealed in one file, which the daemon reads back at start up to
# 4 MiB: secrets of 64 KiB are pushed until one is refused. The refused one must not
# be held in memory either, and a restart must list exactly the secrets accepted
# (the daemon once wrote the file anyway, kept the value, and then could not start).
out=$(client "
accepted, code = [], None
for i in range(100):
    try:
        c.set_secret('BIG_%02d' % i, chr(97 + i % 26) * 65536)
        accepted.append('BIG_%02d' % i)
    except AuthproxyError as e:
        code = '%d %s' % (e.status, e.code)
        break
print(code, len(accepted) > 32, sorted(k for k in c.secrets() if k.startswith('BIG_')) == accepted)")
assert_eq "$out" "507 state_too_large True True" "secrets pushed until refused"
"$PY" -c "print('z' * 65536, end='')" > "$T/big.secret"
err=$(ctl secret-set BIG_ONE_MORE --from-file "$T/big.secret" 2>&1 || true)
assert_contains "$err" "4194304 bytes" "the refusal names the limit"
assert_contains "$err" "DELETE /v1/secrets/KEY" "the refusal names the fix"
err=$(printf '' | ctl secret-set EMPTY_ONE 2>&1) && fail "an empty secret was stored"
assert_contains "$err" "secret EMPTY_ONE is empty; nothing was stored" "an empty secret is refused"
assert_eq "$(client "print('EMPTY_ONE' in c.secrets())")" "False" "no empty secret is listed"
before=$(client "print(c.secrets())")
restart
assert_eq "$(client "print(c.secrets())")" "$before" "secrets after a restart"
# Any failure to write, not only the size: the change is not kept in memory either.
mkdir "$STATE/secrets.sealed.tmp.$SERVE_PID"   # where the daemon writes the new file
assert_eq "$(client "
try:
    c.delete_secret('BIG_00'); print('deleted')
except AuthproxyError as e:
    print(e.status, e.code)")" "500 state_write_failed" "delete while the state cannot be written"
assert_eq "$(client "print(c.secrets())")" "$before" "secrets after a failed delete"
rmdir "$STATE/secrets.sealed.tmp.$SERVE_PID"
client "
for k in c.secrets():
    if k.startswith('BIG_'):
        c.delete_secret(k)"
restart
assert_eq "$(client "print([k for k in c.secrets() if k.startswith('BIG_')])")" "[]" \
  "secrets deleted before the restart"
pass "state the daemon could not read back is refused (507); memory and disk agree"

# ---- a sandbox that could not be re-attached can be deleted, or attached again ------
# box1 and box4 lose the secret their configs name: at the next start they stay
# without network, listed under not_attached, their state kept for a later start.
# Runtimes delete a sandbox with DELETE (CNI DEL, the OCI hook): it must forget
# box1's state (the daemon once answered 404, and attached box1 again at the first
# start with the secret back). A new attach of box4 takes it off the list.
not_attached() { client "print(sorted(l['name'] for l in c.not_attached() if l['name'] in ('box1', 'box4')))"; }
attached() { client "print(sorted(s['name'] for s in c.list() if s['name'] in ('box1', 'box4')))"; }
client "c.delete_secret('KEY_1'); c.delete_secret('KEY_4')"
restart
assert_eq "$(not_attached)" "['box1', 'box4']" "sandboxes whose secret is gone, after a restart"
assert_eq "$(attached)" "[]" "sandboxes whose secret is gone, attached"
[ -e "$STATE/sandboxes/box1.sealed" ] || fail "the state of a sandbox not re-attached was not kept"
assert_eq "$(client "print(c._call('DELETE', '/v1/sandboxes/box1')['status'])")" "forgotten" \
  "DELETE of a sandbox not attached"
assert_eq "$(misuse DELETE /v1/sandboxes/box1 -)" "404 sandbox_not_found" "DELETE again"
[ ! -e "$STATE/sandboxes/box1.sealed" ] || fail "DELETE left the state of box1"
client "
c.set_secret('KEY_1', 'sk-sandbox-1-$$'); c.set_secret('KEY_4', 'sk-sandbox-4-$$')
c.attach('box4', '/var/run/netns/ap-s4-$$', json.load(open('$T/cfg4.json')))"
assert_eq "$(not_attached)" "[]" "not_attached after a DELETE and an attach"
restart
assert_eq "$(attached)" "['box4']" "attached after a restart with the secrets back"
assert_eq "$(not_attached)" "[]" "not_attached after a restart with the secrets back"
ip netns exec "ap-s4-$$" curl -sS -o /dev/null http://api.example.com/box4-again
assert_eq "$(upq up "hdr([r for r in reqs if r['path'] == '/box4-again'][0], 'Authorization')")" \
  "$(jlist "Bearer sk-sandbox-4-$$")" "box4 attached again serves with its secret"
pass "a sandbox not re-attached is forgotten by DELETE, taken off the list by an attach"

# ---- an attach that fails after the rules went in leaves the namespace locked down --
# The state file cannot be written (a directory where the new file is written): the
# attach fails after its redirects were installed and the listeners started. The
# namespace must be left with the lockdown table, not with redirects nothing serves.
ns=$(make_netns fx)
mkdir "$STATE/sandboxes/fx.sealed.tmp.$SERVE_PID"
assert_eq "$(misuse PUT /v1/sandboxes/fx "{\"netns\": \"/var/run/netns/$ns\", \"proxy_config\": {}}")" \
  "500 state_write_failed" "attach while its state cannot be written"
rmdir "$STATE/sandboxes/fx.sealed.tmp.$SERVE_PID"
rules=$(ip netns exec "$ns" nft list table inet authproxy)
assert_contains "$rules" "chain filter_output" "lockdown table after a failed attach"
assert_not_contains "$rules" "redirect" "redirect left after a failed attach"
assert_eq "$(client "print([s['name'] for s in c.list() if s['name'] == 'fx'])")" "[]" "fx listed"
pass "an attach that fails after installing its rules leaves the namespace locked down"

# ---- nothing anywhere holds a secret value ----------------------------------------
kill -TERM "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
if grep -rqFf "$T/values.txt" "$STATE" "$T/audit.jsonl" "$T/audit.old.jsonl" "$T/serve.log"; then
  fail "a secret or opaque value is in the state dir, the audit log or the daemon's output: $(grep -rlFf "$T/values.txt" "$STATE" "$T"/*.jsonl "$T/serve.log")"
fi
grep -q '"event":"request"' "$T/audit.old.jsonl" || fail "audit log has no request records"
pass "no secret or opaque value in the state dir, audit log or daemon output"
