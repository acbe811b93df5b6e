#!/usr/bin/env bash
# An upstream that ends a streamed answer before its end (a Server-Sent Events stream
# whose server dies, or a proxy in front of it that gives up: no last chunk) has sent
# bytes that a client reading directly would still read, then an error. Through the
# proxy the bytes it had read but not yet written to a client slower than the upstream
# (up to --write-queue-bytes, 256 KiB by default) were dropped with the connection:
# the last events before the cut, often the one that says why, never arrived. They
# now reach the sandbox, and its connection then ends as the answer did, cut short
# (no last chunk, and no close_notify).
#
#   jail netns                                   host netns
#   python: GET /sse?cut=1, reads only  -nft->   authproxy jail (--write-queue-bytes
#   once the proxy has seen the cut                64 MiB: the stream fits its queue)
#                                                  -> fake upstream: 24 MiB of events,
#                                                     then its end, without the last chunk
#                                                     (a FIN, a reset, or a bad TLS record)
. "$(dirname "$0")/lib.sh"

make_ca "$T/ca" api.example.com
start_upstream tls "$T/ca/server.pem" "$T/ca/server.key"
mkdir -p "$T/secrets"
printf 'sk-cut-%s\n' "$$" > "$T/secrets/KEY"
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$tls_PORT" } } }
EOF

# 3000 events of 8 KiB: more than the kernel's buffers toward the sandbox hold, so the
# proxy, reading the whole stream (its queue may hold 64 MiB), has some of it queued
# when the end comes, while the client has not read yet.
N=3000
# cut_stream CUT REASON K: one jail whose client reads the stream once the upstream
# has ended it (cut=1: its FIN; cut=rst: a reset, as from a load balancer that gives
# up; cut=record: a TLS record that fails, as at a fatal alert; the K-th stream of the
# test) and the proxy has recorded a reason matching REASON
# for the request (libuv reports a reset that comes with the last bytes as an end).
cut_stream() {
  local cut=$1 reason=$2 k=$3 out
  rm -f "$T/go" "$T/audit.jsonl"
  jail --config "$T/config.json" --secrets-dir "$T/secrets" --upstream-ca "$T/ca/ca.pem" \
    --write-queue-bytes 67108864 --log "$T/audit.jsonl" --user nobody -- "$PY" -c '
import os, re, socket, ssl, sys, time
t, n, cut = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context()
ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
s = ctx.wrap_socket(socket.create_connection(("api.example.com", 443)),
                    server_hostname="api.example.com", suppress_ragged_eofs=False)
s.sendall(b"GET /sse?n=%d&delay=0&size=8192&cut=%s HTTP/1.1\r\nHost: api.example.com\r\n\r\n"
          % (n, cut.encode()))
for _ in range(600):
    if os.path.exists(t + "/go"):
        break
    time.sleep(0.05)
parts, end = [], "clean"
s.settimeout(20)
try:
    while True:
        d = s.recv(1 << 20)
        if not d:
            break
        parts.append(d)
except (ConnectionError, ssl.SSLError) as e:
    end = "error"
data = b"".join(parts)
seen = re.findall(rb"data: event (\d+)x", data)
print("events", len(seen), "last", int(seen[-1]) if seen else -1,
      "last_chunk", data.endswith(b"\r\n0\r\n\r\n"), "end", end)
' "$T" "$N" "$cut" > "$T/client.log" 2>&1 &
  JAIL=$!
  PIDS+=($JAIL)

  # The proxy has read the upstream's end: the request's record says so.
  wait_for "[ \"\$(grep -c '\"sse_cut\"' '$T/tls.jsonl')\" = $k ]" 20
  wait_for "grep -Eq '\"event\":\"request\".*\"reason\":\"($reason)\"' '$T/audit.jsonl'" 20
  : > "$T/go"
  wait "$JAIL" || fail "the client failed ($cut): $(cat "$T/client.log")"
  out=$(cat "$T/client.log")
  echo "cut=$cut: $out"
  assert_eq "$out" "events $N last $((N - 1)) last_chunk False end error" \
    "cut=$cut: every event the upstream sent, then an end that is not a clean one"
  assert_eq "$(grep -c '"event":"request"' "$T/audit.jsonl")" 1 "cut=$cut: the request audited once"
}
cut_stream 1 upstream_closed 1
pass "a stream the upstream cut short reaches the sandbox whole up to the cut, then ends as cut"
cut_stream rst "upstream_error|upstream_closed" 2
pass "a stream the upstream reset reaches the sandbox whole up to the reset, then ends as cut"
cut_stream record upstream_tls_error 3
pass "a stream whose upstream TLS fails (a bad record) reaches the sandbox whole up to there, then ends as cut"
