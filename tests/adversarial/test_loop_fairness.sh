#!/usr/bin/env bash
# One connection's bulk transfer must not hold the daemon's event loop (invariant I8:
# one sandbox cannot starve another). libuv reads a readable stream up to 32 times in
# a row, and an upstream faster than the proxy fills every read: an intercepted
# download held the loop for 100-200 ms at a time (32 reads of 256 KiB, each
# decrypted and encrypted again) while every other connection of every sandbox
# waited. An end now reads 256 KiB of TLS or 2 MiB of plain bytes per turn of the
# loop; its next read waits for the next poll, after the other ready connections.
# The delay itself is measured by scripts/bench (tests carry no timing thresholds);
# this checks that transfers are whole across those turns and that turns were cut
# short (authproxy_reads_yielded_total, which the old daemon did not have).
#
#   ap-a-PID (curl, 64 MiB intercepted, 256 MiB plain) --nft--> authproxy serve
#                                                --> fake upstreams (TLS, plain)
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

SIZE=67108864
make_ca "$T/ca" api.example.com
start_upstream tls "$T/ca/server.pem" "$T/ca/server.key"
start_upstream up
NSA=$(make_netns a)
mkdir -p "$T/secrets"
printf 'sk-fair-%s\n' "$$" > "$T/secrets/KEY"
serve_start --secrets-dir "$T/secrets" --upstream-ca "$T/ca/ca.pem"
yielded() { ctl metrics | awk '$1 == "authproxy_reads_yielded_total" { print $2 }'; }

cat > "$T/cfg.json" <<EOF2
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret",
                   "value": "Bearer {KEY}" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$tls_PORT",
                      "plain.example.com": "127.0.0.1:$up_PORT" } } }
EOF2
ctl attach box-a --netns "/var/run/netns/$NSA" --config "$T/cfg.json" > "$T/a-ca.pem"
assert_eq "$(yielded)" "0" "reads yielded before any transfer"

# Every byte of a body is "x": a byte lost, doubled or reordered across turns shows
# as a wrong size or a stray byte. Counted as the body streams, without a file.
fetch() { # SIZE LABEL CURL_ARG...
  local size=$1 label=$2 out
  shift 2
  out=$(ip netns exec "$NSA" curl -sS --max-time 120 "$@" | "$PY" -c '
import sys
n = bad = 0
for b in iter(lambda: sys.stdin.buffer.read(1 << 20), b""):
    n += len(b)
    bad += len(b) - b.count(b"x")
print(n, bad)')
  assert_eq "$out" "$size 0" "$label: bytes and stray bytes"
}

# 64 MiB intercepted (256 KiB per turn), 256 MiB plain (2 MiB per turn): the upstream
# sends faster than the proxy relays, so the reads find more than a turn's worth.
fetch $SIZE "intercepted download" --cacert "$T/a-ca.pem" \
  "https://api.example.com/big?bytes=$SIZE"
tls_yields=$(yielded)
[ "$tls_yields" -gt 0 ] || fail "an intercepted 64 MiB download never gave up its turn"
assert_eq "$(upq tls 'hdr(reqs[-1], "Authorization")')" "$(jlist "Bearer sk-fair-$$")" \
  "injected on the intercepted download"
pass "an intercepted download is whole and gives up its turns ($tls_yields)"

fetch $((4 * SIZE)) "plain download" "http://plain.example.com/big?bytes=$((4 * SIZE))"
[ "$(yielded)" -gt "$tls_yields" ] || fail "a plain 256 MiB download never gave up its turn"
pass "a plain download is whole and gives up its turns ($(( $(yielded) - tls_yields )))"
