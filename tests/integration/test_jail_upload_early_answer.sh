#!/usr/bin/env bash
# An API answers an upload before its body has arrived when it refuses it: a bad key
# (401), a file too large (413), or, from the proxy itself, a denied path (403). A
# client that writes the whole body before it reads (Python's http.client and
# requests, most SDKs built on them) reads that answer once it has sent the rest.
# Directly it does: the server (nginx's lingering close) discards what still comes,
# as long as it keeps coming. Through the proxy the connection ended 2 s after the
# answer whatever the sandbox was still sending: the close, with the sandbox's bytes
# unread, was a reset, which took the answer with it, and an upload that took longer
# than that to send (a large file) failed with a connection error that said nothing
# of the 401. The proxy now goes on discarding while the body keeps coming (each
# read gives it 2 s more, 30 s at most), so the client reads the answer.
#
#   jail netns                                   host netns
#   python http.client: POST 1.5 MiB  -nft->     authproxy jail (intercepts, injects;
#   over 3 s, then reads the answer                denies POST /denied: 403)
#                                                  -> upload upstream /reject: 401 at
#                                                     once, then discards the body
. "$(dirname "$0")/lib.sh"

start_upload_upstream
mkdir -p "$T/secrets"
printf 'sk-early-%s\n' "$$" > "$T/secrets/KEY"
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] } ],
  "egress": { "default": "allow", "deny": [ { "hosts": ["api.example.com"], "paths": ["/denied"],
                                             "methods": ["POST"] } ] },
  "dns": { "remap": { "api.example.com": "127.0.0.1:$(cat "$T/up.port")" } } }
EOF

# upload PATH: the status the client read for a 1.5 MiB body sent in 48 pieces 64 ms
# apart (3 s: longer than the 2 s the proxy discarded for), or the error it met.
upload() {
  jail --config "$T/config.json" --secrets-dir "$T/secrets" --upstream-ca "$T/ca/ca.pem" \
    --log "$T/audit.jsonl" --user nobody -- "$PY" -c '
import http.client, sys, time
c = http.client.HTTPSConnection("api.example.com", timeout=20)
try:
    c.putrequest("POST", sys.argv[1])
    c.putheader("Content-Length", str(48 * 32768))
    c.endheaders()
    for _ in range(48):
        c.send(b"x" * 32768)
        time.sleep(0.064)
    r = c.getresponse()
    print(r.status)
except OSError as e:
    print("error", type(e).__name__)
' "$1"
}

out=$(upload "/reject?status=401&drain=30")
assert_eq "$out" "401" "the upstream's early answer to an upload still being sent"
pass "an upload the upstream refuses at once gets its 401 after sending the rest"

out=$(upload "/denied")
assert_eq "$out" "403" "the proxy's own answer to an upload still being sent"
assert_contains "$(cat "$T/audit.jsonl")" '"reason":"egress_deny"' "the denial audited"
pass "an upload the proxy refuses gets its 403 after sending the rest"
