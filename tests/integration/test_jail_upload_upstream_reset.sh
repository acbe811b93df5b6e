#!/usr/bin/env bash
# An upstream that ends an upload's connection while the body is still coming: one
# that answers 413 (or 401) at once and closes with the body unread, which the kernel
# turns into a reset right behind the answer; one that dies, a reset and no answer.
# The proxy, writing the body, met the reset on its next write and reset the sandbox's
# connection there: the 413 that had arrived before the reset, and could still be
# read, was thrown away, and where there was none the client got a bare reset, not
# the 502 upstream_reset that says the request went out and may have been acted on
# (what it gets when the reset comes while the proxy reads). A failed write of the
# body now stops the body and reads what the upstream sent before its end.
#
#   jail netns                                   host netns
#   python http.client: POST 4 MiB,   -nft->     authproxy jail (intercepts, injects)
#   then reads the answer                          -> upload upstream: /reject answers
#                                                     413 and closes unread; /die
#                                                     resets after 100000 bytes
. "$(dirname "$0")/lib.sh"

start_upload_upstream
api_config "sk-reset-$$"

# upload PATH: the status and X-Authproxy-Error the client read for a 4 MiB body, or
# the error it met.
upload() {
  jail --config "$T/config.json" --secrets-dir "$T/secrets" --upstream-ca "$T/ca/ca.pem" \
    --log "$T/audit.jsonl" --user nobody -- "$PY" -c '
import http.client, sys
c = http.client.HTTPSConnection("api.example.com", timeout=20)
try:
    c.request("POST", sys.argv[1], b"x" * (4 << 20))
    r = c.getresponse()
    print(r.status, r.getheader("X-Authproxy-Error"))
except OSError as e:
    print("error", type(e).__name__)
' "$1"
}

for i in 1 2 3; do
  assert_eq "$(upload "/reject?status=413&close=1&drain=0")" "413 None" \
    "an answer the upstream sent before resetting the upload ($i)"
done
pass "an upstream's 413 followed by a reset mid-upload reaches the client"

for i in 1 2 3; do
  assert_eq "$(upload "/die?after=100000&how=rst")" "502 upstream_reset" \
    "an upstream that resets mid-upload without answering ($i)"
done
assert_contains "$(grep '"event":"request"' "$T/audit.jsonl" | tail -1)" '"reason":"upstream_reset"' \
  "the request's record"
pass "an upstream that resets mid-upload is a 502 upstream_reset"
