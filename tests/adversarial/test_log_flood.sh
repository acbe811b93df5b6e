#!/usr/bin/env bash
# A sandbox cannot fill the daemon's log by repeating, as fast as it likes, an event
# that logs a line per connection or per request: a TLS handshake with the proxy that
# fails (a client that does not trust the sandbox CA, or that aborts), an upstream
# whose certificate does not verify, an upstream that echoes an injected credential.
# Each is logged the 1st, 10th, 100th and every 1000th time in a sandbox, with the
# count, as nameConstraints refusals and callback failures are. Unbounded, N events
# gave N lines; the log is written to stderr synchronously, so a flood also stalls the
# loop behind a slow log reader (a journal that does not keep up).
#
#   jail netns (anonymous)                  host netns
#   +------------------------------+        +------------------------------------------+
#   | python: TLS to hs.example.com | -nft-> | authproxy jail -v (info lines on stderr) |
#   |   with an empty trust store   |        |   badtls.example.com -> upstream "bad"   |
#   | curl https://badtls...        |        |     (a CA the proxy does not trust)      |
#   | curl http://api.../echo       |        |   api.example.com -> upstream "up"       |
#   +------------------------------+        +------------------------------------------+
. "$(dirname "$0")/../integration/lib.sh"

N=30 # events of each kind: lines 1 and 10 are logged, 28 are not

make_ca "$T/ca2" badtls.example.com
start_upstream up
start_upstream bad "$T/ca2/server.pem" "$T/ca2/server.key"
mkdir -p "$T/secrets"
printf 'sk-flood-%s\n' "$$" > "$T/secrets/API_KEY"

cat > "$T/config.json" <<EOF
{
  "rules": [
    { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com", "hs.example.com", "badtls.example.com"],
      "headers": [ { "name": "Authorization", "type": "workspace_secret",
                     "value": "Bearer {API_KEY}" } ] }
  ],
  "dns": { "remap": {
    "api.example.com": "127.0.0.1:$up_PORT",
    "hs.example.com": "127.0.0.1:$up_PORT",
    "badtls.example.com": "127.0.0.1:$bad_PORT"
  } }
}
EOF

cat > "$T/hs_flood.py" <<'EOF'
import socket, ssl, sys
# An empty trust store: the client rejects the proxy's certificate with an alert.
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
failed = 0
for _ in range(int(sys.argv[1])):
    s = socket.create_connection(("hs.example.com", 443), timeout=5)
    try:
        ctx.wrap_socket(s, server_hostname="hs.example.com").close()
    except (ssl.SSLError, OSError):
        failed += 1
    s.close()
print("handshakes failed:", failed)
EOF
chmod 644 "$T/hs_flood.py"

out=$(timeout 120 "$AUTHPROXY" jail -v --config "$T/config.json" --secrets-dir "$T/secrets" \
  --user nobody -- sh -c "
    python3 '$T/hs_flood.py' $N
    i=0; while [ \$i -lt $N ]; do
      curl -sS -o /dev/null -w 'bad=%{http_code}\n' https://badtls.example.com/x
      curl -sS -o /dev/null -w 'echo=%{http_code}\n' http://api.example.com/echo
      i=\$((i + 1)); done" 2> "$T/daemon.log")

# The events happened, N of each.
assert_contains "$out" "handshakes failed: $N" "sandbox handshakes failed"
assert_eq "$(grep -c '^bad=502$' <<< "$out")" "$N" "unverified upstream answered 502"
assert_eq "$(grep -c '^echo=200$' <<< "$out")" "$N" "echo requests answered"

# lines PATTERN: daemon log lines matching PATTERN.
lines() { grep -c -- "$1" "$T/daemon.log" || true; }

hs=$(lines 'TLS handshake with the sandbox for hs.example.com failed')
up=$(lines 'upstream TLS with badtls.example.com failed')
echo_=$(lines 'echoed an injected credential')
echo "log lines for $N events each: sandbox handshake $hs, upstream TLS $up, echo $echo_"
for v in "$hs" "$up" "$echo_"; do
  [ "$v" -ge 1 ] || fail "an event kind was not logged at all (see $T/daemon.log)"
  [ "$v" -le 2 ] || fail "$N repeated events gave $v log lines, not the 1st and 10th only"
done
# The lines that are written say how many there were, so the log still shows the run.
assert_contains "$(grep 'TLS handshake with the sandbox' "$T/daemon.log" | tail -n1)" \
  "(10 such failures in this sandbox)" "the handshake failure line counts"
assert_contains "$(grep 'upstream TLS with badtls' "$T/daemon.log" | tail -n1)" \
  "(10 such failures in this sandbox)" "the upstream failure line counts"
assert_contains "$(grep 'echoed an injected credential' "$T/daemon.log" | tail -n1)" \
  "(10 masked echoes in this sandbox)" "the echo line counts"
pass "repeated sandbox-driven events are logged 1st/10th/100th/every 1000th with a count"
