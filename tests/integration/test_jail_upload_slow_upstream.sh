#!/usr/bin/env bash
# An upload to an upstream that reads it more slowly than the sandbox sends it (a
# storage API on a slow uplink, a server that streams to disk) ends after the sandbox
# has sent its last byte: the proxy holds the rest, in its write queue and its
# socket's, and hands it on as the upstream takes it; the upstream answers once it
# has the whole body. --idle-timeout used to count only bytes read: once the sandbox
# had sent everything, the proxy judged the request idle while the upstream was still
# taking the body from it, answered 504 upstream_timeout ("the destination did not
# answer in time"), which the upstream, still reading, could not have done, and the
# upload the upstream then completed looked failed to the client (which retries: a
# second copy of the file). A tunnelled upload was cut the same way. Bytes the
# upstream takes now count as bytes passing.
#
#   jail netns                                   host netns
#   python http.client: 768 KiB  -nft->          authproxy jail --idle-timeout 1
#   in one go, then reads the answer               --write-queue-bytes 4 MiB (the body
#                                                  fits: read at once)
#                                                  -> upload upstream /sink, reading
#                                                     256 KiB a second (3 s), small
#                                                     receive buffer
. "$(dirname "$0")/lib.sh"

start_upload_upstream --rcvbuf 16384
mkdir -p "$T/secrets"
printf 'sk-slow-%s\n' "$$" > "$T/secrets/KEY"
cat > "$T/intercept.json" <<EOF2
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$(cat "$T/up.port")" } } }
EOF2
cat > "$T/tunnel.json" <<EOF2
{ "dns": { "remap": { "api.example.com": "127.0.0.1:$(cat "$T/up.port")" } } }
EOF2
cp "$T/ca/ca.pem" "$T/upstream-ca.pem"
chmod 644 "$T/upstream-ca.pem"

# upload CONFIG CAFILE: the status and body the client read for 768 KiB of random
# bytes, and their sha256; or the error it met.
upload() {
  jail --config "$T/$1" --secrets-dir "$T/secrets" --upstream-ca "$T/ca/ca.pem" \
    --idle-timeout 1 --write-queue-bytes 4194304 --log "$T/audit.jsonl" --user nobody -- \
    "$PY" -c '
import hashlib, http.client, os, ssl, sys
body = os.urandom(768 * 1024)
ctx = ssl.create_default_context(cafile=sys.argv[1] or None)
c = http.client.HTTPSConnection("api.example.com", timeout=20, context=ctx)
try:
    c.request("PUT", "/sink?rate=262144", body)
    r = c.getresponse()
    print(r.status, r.read().decode().strip(), hashlib.sha256(body).hexdigest())
except OSError as e:
    print("error", type(e).__name__)
' "$2"
}

check() {
  local out=$1 what=$2 status got sent
  read -r status got sent <<< "$(echo "$out" | "$PY" -c '
import json, sys
line = sys.stdin.read().split(" ", 1)
if len(line) < 2 or not line[0].isdigit():
    print("x", "x", "x"); sys.exit()
body, sent = line[1].rsplit(" ", 1)
print(line[0], json.loads(body).get("sha256"), sent.strip())')"
  assert_eq "$status" 200 "$what: the answer (client said: $out)"
  assert_eq "$got" "$sent" "$what: the sha256 the upstream received"
}

check "$(upload intercept.json "")" "intercepted"
assert_not_contains "$(cat "$T/audit.jsonl")" '"upstream_timeout"' "the audit log"
pass "an intercepted upload the upstream reads slowly is answered, not timed out"

check "$(upload tunnel.json "$T/upstream-ca.pem")" "tunnelled"
assert_not_contains "$(cat "$T/audit.jsonl")" '"idle_timeout"' "the audit log"
pass "a tunnelled upload the upstream reads slowly is answered, not cut"
