#!/usr/bin/env bash
# Making the proxy buffer without bound (invariant I8): a sandbox that asks for a
# 200 MiB response and stops reading, and an upload of 200 MiB to an upstream that
# stops reading, over plain HTTP and intercepted TLS. Once the flow stalls (the
# proxy has read nothing for a second), the proxy's resident memory has grown by a
# bounded amount (what fills its write queues, not the 200 MiB); then the reader
# resumes and every byte arrives, in order and complete.
#
#   jail: bp_client.py --nft--> authproxy (in $HNS) --remap--> stream_upstream.py
#         (the test measures the proxy's VmRSS from /proc/PID/status)
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

SIZE=$((200 << 20))
# The bound asserted on growth while stalled: the write queues are 256 KiB per side;
# TLS records, allocator slack and (under ASan) a small quarantine come on top. A
# proxy that buffered what it could read would grow by the ~200 MiB instead.
BOUND_KB=$((16 << 10))
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=8"

host_ns_start
make_ca "$T/ca" tls.example.com
mkdir -m 1777 "$T/w"
for kind in plain tls; do
  args=(--port-file "$T/$kind.port" --log "$T/$kind.jsonl" --go "$T/w/go-upload-$kind")
  [ $kind = tls ] && args+=(--cert "$T/ca/server.pem" --key "$T/ca/server.key")
  ip netns exec "$HNS" "$PY" "$TOOLS/stream_upstream.py" "${args[@]}" 2> "$T/$kind.log" &
  PIDS+=($!)
done
wait_for "[ -s '$T/plain.port' ] && [ -s '$T/tls.port' ]"
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "match_hosts": ["tls.example.com"],
    "headers": [ { "name": "X-Seen", "type": "plaintext", "value": "1" } ] } ],
  "dns": { "remap": { "plain.example.com": "127.0.0.1:$(cat "$T/plain.port")",
                      "tls.example.com": "127.0.0.1:$(cat "$T/tls.port")" } } }
EOF

cat > "$T/client.py" <<'PYEOF'
import hashlib, json, os, socket, ssl, sys
sys.path.insert(0, sys.argv[1])
from advlib import wait_file
mode, kind, size, w = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
tag = "%s-%s" % (mode, kind)

with open(os.path.join(w, "ppid-" + tag), "w") as f:
    f.write("%d\n" % os.getppid())
wait_file(os.path.join(w, "start-" + tag))
host = kind + ".example.com"
s = socket.create_connection((host, 443 if kind == "tls" else 80), timeout=120)
if kind == "tls":
    s = ssl.create_default_context().wrap_socket(s, server_hostname=host)
if mode == "download":
    s.sendall(("GET /download?bytes=%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (size, host)).encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    head, body = buf.split(b"\r\n\r\n", 1)
    # Stop reading: the proxy must stop reading the upstream, not buffer for us.
    open(os.path.join(w, "stalled-" + tag), "w").close()
    wait_file(os.path.join(w, "go-" + tag))
    got, bad = len(body), body.count(b"x") != len(body)
    chunk = bytearray(1 << 20)
    while got < size:
        try:
            k = s.recv_into(chunk)
        except ConnectionResetError:  # the idle timeout's case, below
            break
        if k == 0:
            break
        bad = bad or chunk[:k].count(b"x") != k
        got += k
    print(json.dumps({"case": tag, "status": head.split(b"\r\n")[0].decode(), "bytes": got,
                      "intact": not bad}))
else:
    s.sendall(("POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n"
               % (host, size)).encode())
    piece = bytes(range(256)) * 4096
    h = hashlib.sha256()
    sent = 0
    while sent < size:
        k = min(len(piece), size - sent)
        s.sendall(piece[:k])
        h.update(piece[:k])
        sent += k
    resp = b""
    while b"\r\n\r\n" not in resp:
        d = s.recv(4096)
        if not d:
            break
        resp += d
    print(json.dumps({"case": tag, "status": resp.split(b"\r\n")[0].decode(),
                      "bytes": sent, "sha256": h.hexdigest()}))
PYEOF

for kind in plain tls; do
  for mode in download upload; do
    tag=$mode-$kind
    hjail --config "$T/config.json" --upstream-ca "$T/ca/ca.pem" --user nobody -- \
      "$PY" "$T/client.py" "$TOOLS" "$mode" "$kind" "$SIZE" "$T/w" > "$T/$tag.out" 2> "$T/$tag.log" &
    jail_pid=$!
    PIDS+=($jail_pid)
    wait_for "[ -s '$T/w/ppid-$tag' ]"
    proxy=$(cat "$T/w/ppid-$tag")
    rss0=$(proxy_rss_kb "$proxy")
    : > "$T/w/start-$tag"
    if [ $mode = download ]; then
      wait_for "[ -e '$T/w/stalled-$tag' ]" 30
    else
      wait_for "grep -q upload_waiting '$T/$kind.jsonl'" 30
    fi
    wait_quiet "$proxy" 60
    rss1=$(proxy_rss_kb "$proxy")
    if [ $mode = download ]; then
      moved=$(awk -F'"sent": ' '/progress/ { split($2, a, ","); n = a[1] } END { print n + 0 }' "$T/$kind.jsonl")
      : > "$T/w/go-$tag"
    else
      moved=$(awk '/^rchar:/ { print $2 }' "/proc/$proxy/io")
      : > "$T/w/go-upload-$kind"
    fi
    wait "$jail_pid" || fail "$tag: the jail failed: $(tail -3 "$T/$tag.log")"
    load_results "$T/$tag.out"
    grow=$((rss1 - rss0))
    echo "$tag: stalled after ~$((moved >> 20)) MiB had moved; proxy VmRSS $rss0 kB -> $rss1 kB (+$grow kB)"
    [ "$grow" -lt "$BOUND_KB" ] || fail "$tag: the proxy grew by $grow kB while the reader stalled"
    assert_contains "$(result "$T/$tag.out" "$tag" status)" " 200 " "$tag: status"
    assert_eq "$(result "$T/$tag.out" "$tag" bytes)" "$SIZE" "$tag: bytes"
    if [ $mode = download ]; then
      assert_eq "$(result "$T/$tag.out" "$tag" intact)" "True" "$tag: content"
    else
      up=$("$PY" -c 'import json, sys
print([json.loads(l) for l in open(sys.argv[1]) if "upload_done" in l][-1]["sha256"])' "$T/$kind.jsonl")
      assert_eq "$up" "$(result "$T/$tag.out" "$tag" sha256)" "$tag: SHA-256 at the upstream"
    fi
    pass "$tag: 200 MiB with a stalled reader: proxy grew $grow kB (bound $BOUND_KB kB), all bytes delivered"
  done
done

# A stalled transfer still times out. While the sandbox does not read, the proxy
# leaves the upstream's bytes unread on purpose; the idle timeout must not take those
# for a late loop's (proxy_end_unread), or the connection would live forever.
tag=download-plain
rm -f "$T/w/"*"-$tag"
hjail --config "$T/config.json" --upstream-ca "$T/ca/ca.pem" --user nobody --idle-timeout 2 -- \
  "$PY" "$T/client.py" "$TOOLS" download plain "$SIZE" "$T/w" > "$T/idle.out" 2> "$T/idle.log" &
jail_pid=$!
PIDS+=($jail_pid)
wait_for "[ -s '$T/w/ppid-$tag' ]"
: > "$T/w/start-$tag"
wait_for "[ -e '$T/w/stalled-$tag' ]" 30
port=$(cat "$T/plain.port")
up_conns() { ip netns exec "$HNS" ss -Htn state established "( dport = :$port )" | wc -l; }
wait_for "[ \"\$(up_conns)\" = 0 ]" 30
: > "$T/w/go-$tag"
wait "$jail_pid" || fail "stalled download: the jail failed: $(tail -3 "$T/idle.log")"
load_results "$T/idle.out"
assert_contains "$(result "$T/idle.out" "$tag" status)" " 200 " "stalled download: status"
got=$(result "$T/idle.out" "$tag" bytes)
[ "$got" -lt "$SIZE" ] || fail "stalled download: all $got bytes arrived after the idle timeout"
pass "a transfer stalled by its reader is closed after --idle-timeout ($((got >> 20)) MiB had arrived)"
