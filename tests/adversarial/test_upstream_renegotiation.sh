#!/usr/bin/env bash
# An upstream that keeps asking to renegotiate cannot grow the daemon's memory. The
# proxy refuses renegotiation, and mbedTLS answers each HelloRequest with a warning
# alert written back to the upstream; an upstream that sent them without end and
# read nothing had every alert queued for it, since an end is read while its peer's
# queue has room, not its own: 64 MiB of HelloRequests grew the jail to 590 MB (a
# queued 31-byte alert costs a write request of about 280 bytes), past every queue
# budget, which counts the 31. A peer that asks again after 16 refusals is now cut
# off, and the sandbox sees its connection reset, not a hang. An upstream that asks
# once and then answers is still answered.
#
#   jail: curl --nft--> authproxy (in-process) --TLS--> tls_renego_server flood
#                                                        (8 MiB of HelloRequests)
#                                               --TLS--> tls_renego_server once
#                                                        (one, then "ok")
. "$(dirname "$0")/../integration/lib.sh"

SERVER="$BUILD/tests/tls_renego_server"
[ -x "$SERVER" ] || fail "$SERVER is not built"
make_ca "$T/ca" flood.example.com once.example.com
BYTES=$((8 << 20))
for s in flood:$BYTES once:1; do
  "$SERVER" "$T/ca/server.pem" "$T/ca/server.key" "$T/${s%%:*}.port" "${s#*:}" \
    > "$T/${s%%:*}.out" 2> "$T/${s%%:*}.log" &
  PIDS+=($!)
  wait_for "[ -s '$T/${s%%:*}.port' ]" 10
done
mkdir -p "$T/secrets"
printf 'sk-renego-%s\n' "$$" > "$T/secrets/KEY"
cat > "$T/config.json" <<EOF2
{ "rules": [ { "name": "api", "match_hosts": ["*.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] } ],
  "dns": { "remap": { "flood.example.com": "127.0.0.1:$(cat "$T/flood.port")",
                      "once.example.com": "127.0.0.1:$(cat "$T/once.port")" } } }
EOF2
cat > "$T/client.sh" <<'EOF2'
curl -sS -m 10 https://once.example.com/x; echo " once:$?"
curl -sS -m 10 https://flood.example.com/x; echo " flood:$?"
EOF2

jail --config "$T/config.json" --secrets-dir "$T/secrets" --upstream-ca "$T/ca/ca.pem" \
  --log "$T/audit.jsonl" --user nobody -- sh "$T/client.sh" > "$T/client.out" 2>&1
out=$(cat "$T/client.out")
assert_contains "$out" "ok once:0" "the upstream that asked once"
pass "a renegotiation refused once: the answer that follows reaches the sandbox"

wait_for "[ -s '$T/flood.out' ]" 10
sent=$(awk '{ print $2 }' "$T/flood.out")
[ "$sent" -lt "$BYTES" ] ||
  fail "the proxy read all $sent bytes of HelloRequests and queued an alert for each"
pass "the proxy stops reading an upstream that keeps asking to renegotiate ($sent bytes)"

assert_not_contains "$out" "flood:0" "the flood's request"
assert_not_contains "$out" "flood:28" "the flood's request (a hang)"
assert_contains "$(cat "$T/audit.jsonl")" '"reason":"upstream_tls_renegotiation"' \
  "the audit record's reason"
pass "the sandbox's connection ends with an error that the audit log names"
