#!/usr/bin/env bash
# Rotating a workspace secret under a sandbox that holds an intercepted keep-alive
# connection (and a pooled upstream one). A secret's value is resolved when a config
# is pushed: `ctl secret-set` alone changes nothing for a sandbox attached already,
# and a PATCH (the same config again will do) makes the very next request on the same
# connection carry the new value, on a new upstream connection, and no request after
# it the old one. `ctl secret-delete` takes the value from no attached sandbox either,
# and a PATCH that still names the key is refused: the sandbox keeps what it has.
#
#   ap-rot-PID (lo only)             host
#   client.py (one connection) --nft--> authproxy serve ===> fake_upstream.py (TLS)
. "$(dirname "$0")/lib.sh"

make_ca "$T/ca" api.example.com
start_upstream up "$T/ca/server.pem" "$T/ca/server.key"
cat > "$T/config.json" <<EOF2
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF2

# One connection; request N is sent once $T/go-N exists, its status line and
# whether its echo showed a value unmasked go to client.out, then $T/done-N.
cat > "$T/client.py" <<'PYEOF'
import os, socket, ssl, sys, time
t, old, new = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=os.path.join(t, "sandbox-ca.pem"))
s = ctx.wrap_socket(socket.create_connection(("api.example.com", 443), timeout=5),
                    server_hostname="api.example.com")
for n in range(1, 6):
    for _ in range(200):
        if os.path.exists(os.path.join(t, "go-%d" % n)):
            break
        time.sleep(0.05)
    s.sendall(b"GET /echo?n=%d HTTP/1.1\r\nHost: api.example.com\r\n\r\n" % n)
    got = b""
    while b"\r\n\r\n" not in got:
        got += s.recv(65536)
    head, body = got.split(b"\r\n\r\n", 1)
    length = [int(l.split(b":")[1]) for l in head.split(b"\r\n")
              if l.lower().startswith(b"content-length:")][0]
    while len(body) < length:
        body += s.recv(65536)
    shown = [v for v in (old, new) if v.encode() in body]
    print(n, head.split(b"\r\n")[0].decode(), "shown=%s" % ",".join(shown), flush=True)
    open(os.path.join(t, "done-%d" % n), "w").close()
PYEOF

serve_start() {
  "$AUTHPROXY" serve --state-dir "$T/state" --control "$T/c.sock" --drain-timeout 1 \
    --upstream-ca "$T/ca/ca.pem" >> "$T/serve.log" 2>&1 &
  serve_pid=$!
  PIDS+=($serve_pid)
  wait_for "[ -S '$T/c.sock' ] && ctl health >/dev/null 2>&1"
}
ctl() { "$AUTHPROXY" ctl --control "$T/c.sock" "$@"; }
step() { : > "$T/go-$1"; wait_for "[ -e '$T/done-$1' ]" 10; }

OLD="sk-old-$$-rotated"
NEW="sk-new-$$-current"
serve_start
echo -n "$OLD" | ctl secret-set KEY > /dev/null
ns=$(make_netns rot)
ctl attach rot --netns "/var/run/netns/$ns" --config "$T/config.json" > "$T/sandbox-ca.pem"
ip netns exec "$ns" "$PY" "$T/client.py" "$T" "$OLD" "$NEW" > "$T/client.out" 2> "$T/client.log" &
PIDS+=($!)
step 1
echo -n "$NEW" | ctl secret-set KEY > /dev/null
step 2                                          # still the pushed value
ctl update rot --config "$T/config.json" > /dev/null
step 3                                          # the new one, on the same connection
ctl secret-delete KEY > /dev/null
step 4                                          # a deleted secret is still injected
ctl update rot --config "$T/config.json" > /dev/null 2>&1 && fail "a PATCH naming a deleted secret was taken"
step 5

assert_eq "$(cut -d' ' -f2- "$T/client.out" | sort -u)" "HTTP/1.1 200 OK shown=" \
  "every answer, each with the echoed value masked"
assert_eq "$(upq up "[hdr(r, 'Authorization')[0] for r in reqs]")" \
  "$(jlist "Bearer $OLD" "Bearer $OLD" "Bearer $NEW" "Bearer $NEW" "Bearer $NEW")" \
  "the value each request carried upstream"
# The upstream connection that carried the old value carries nothing after the PATCH.
assert_eq "$(upq up "[r['conn'] == reqs[0]['conn'] for r in reqs]")" \
  "[true, true, false, false, false]" "which requests went on the first upstream connection"
kill -TERM "$serve_pid"
rc=0
wait "$serve_pid" || rc=$?
assert_eq "$rc" "0" "the daemon's exit status (see serve.log)"
pass "a secret's new value applies from the PATCH on, on connections open before it"
