#!/usr/bin/env bash
# Holding proxy connections open by sending slowly (invariant I8): a request head
# trickled one byte at a time (the first request, and the second on a keep-alive
# connection, plain and inside intercepted TLS), a head that stalls half-way, a
# request body that stalls (Content-Length and chunked), a partial ClientHello, a
# ClientHello trickled one byte at a time, a ClientHello followed by no handshake, and
# a connection that says nothing at all.
# A slow head is answered 408 once --head-timeout has passed since its first byte,
# however steadily it trickles; a stalled body is cut off after --idle-timeout and
# the upstream never sees it as a complete request; TLS stalls are cut off by the
# sniff and handshake timeouts (the sniff timeout runs from the first byte, however
# steadily a ClientHello trickles). All cases run at once; every wait is bounded.
#
#   jail: slow clients --nft--> authproxy --head-timeout 2 --idle-timeout 3 (in $HNS)
#         --remap--> fake upstreams (plain, TLS)
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start
make_ca "$T/ca" tls.example.com
hupstream up
hupstream tls "$T/ca/server.pem" "$T/ca/server.key"
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com", "tls.example.com"],
    "headers": [ { "name": "X-Seen", "type": "plaintext", "value": "1" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT",
                      "tls.example.com": "127.0.0.1:$tls_PORT" } } }
EOF

cat > "$T/client.py" <<'PYEOF'
import json, re, socket, ssl, sys, threading, time
sys.path.insert(0, sys.argv[1])
import advlib

LIMIT = 40  # no case may take longer than this (the timeouts under test are 2-10 s)
out, lock = [], threading.Lock()

def conn(tls=False):
    host = "tls.example.com" if tls else "api.example.com"
    s = socket.create_connection((host, 443 if tls else 80), timeout=LIMIT)
    if tls:
        s = ssl.create_default_context().wrap_socket(s, server_hostname=host)
    return s

def finish(case, s, t0, sent=0, pre=b""):
    """Reads what the proxy answers until it closes; records status, reason, end."""
    buf, end = pre, "closed"
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            buf += d
    except (ConnectionResetError, ssl.SSLError):
        end = "reset"
    except socket.timeout:
        end = "timeout"
    statuses = [m.decode() for m in re.findall(rb"HTTP/1\.1 \d{3} [^\r\n]+", buf)]
    reasons = [l.split(b":", 1)[1].strip().decode() for l in buf.split(b"\r\n")
               if l.lower().startswith(b"x-authproxy-error")]
    with lock:
        out.append(dict(case=case, statuses=statuses, reasons=reasons, end=end,
                        bytes=len(buf), trickled=sent, seconds=round(time.time() - t0, 1)))

def trickle(case, s, head, t0, prefix=b"", before=b""):
    """Sends prefix, then head one byte every 0.2 s until the proxy answers; before
    is what was already read on the connection."""
    s.sendall(prefix)
    s.settimeout(0.2)
    sent, got = 0, b""
    for b in head:
        try:
            s.sendall(bytes([b]))
            sent += 1
            got = s.recv(65536)
            if got:
                break
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            break
        if time.time() - t0 > LIMIT:
            break
    s.settimeout(LIMIT)
    finish(case, s, t0, sent, before + got)

LONG_HEAD = b"X-Pad: " + b"a" * 400 + b"\r\n\r\n"   # 80 s at 5 bytes/s

def head_trickle():
    t0 = time.time()
    trickle("head_trickle", conn(), LONG_HEAD, t0,
            b"GET /case/head_trickle HTTP/1.1\r\nHost: api.example.com\r\n")

def head_stall():
    t0 = time.time(); s = conn()
    s.sendall(b"GET /case/head_stall HTTP/1.1\r\nHost: api.example.com\r\nX-A: b")
    finish("head_stall", s, t0)

def second_head_trickle(tls=False):
    t0 = time.time(); s = conn(tls)
    host = b"tls.example.com" if tls else b"api.example.com"
    s.sendall(b"GET /case/keepalive_first HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    buf = b""
    while b"}\n" not in buf:  # the fake upstream's JSON body ends the first answer
        buf += s.recv(65536)
    trickle("second_head_trickle" + ("_tls" if tls else ""), s, LONG_HEAD, t0,
            b"GET /case/second_head HTTP/1.1\r\nHost: " + host + b"\r\n", buf)

def body_stall_cl():
    t0 = time.time(); s = conn()
    s.sendall(b"POST /case/body_stall_cl HTTP/1.1\r\nHost: api.example.com\r\n"
              b"Content-Length: 100000\r\n\r\n" + b"b" * 1000)
    finish("body_stall_cl", s, t0)

def body_stall_chunked():
    t0 = time.time(); s = conn()
    s.sendall(b"POST /case/body_stall_chunked HTTP/1.1\r\nHost: api.example.com\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    finish("body_stall_chunked", s, t0)

def tls_partial_hello():
    t0 = time.time()
    s = socket.create_connection(("tls.example.com", 443), timeout=LIMIT)
    s.sendall(advlib.client_hello("tls.example.com")[:50])
    finish("tls_partial_hello", s, t0)

def tls_hello_trickle():
    # A long SNI makes the hello take about 60 s at 5 bytes/s, past LIMIT: only the
    # sniff timeout (10 s from the first byte) ends it.
    t0 = time.time()
    hello = advlib.client_hello(("p" * 60 + ".") * 3 + "tls.example.com")
    s = socket.create_connection(("tls.example.com", 443), timeout=LIMIT)
    trickle("tls_hello_trickle", s, hello[10:], t0, hello[:10])

def tls_no_handshake():
    t0 = time.time()
    s = socket.create_connection(("tls.example.com", 443), timeout=LIMIT)
    s.sendall(advlib.client_hello("tls.example.com"))
    finish("tls_no_handshake", s, t0)

def silent():
    t0 = time.time()
    finish("silent", socket.create_connection(("api.example.com", 80), timeout=LIMIT), t0)

threads = [threading.Thread(target=f) for f in (
    head_trickle, head_stall, second_head_trickle, lambda: second_head_trickle(True),
    body_stall_cl, body_stall_chunked, tls_partial_hello, tls_hello_trickle,
    tls_no_handshake, silent)]
for t in threads:
    t.start()
for t in threads:
    t.join(LIMIT + 10)
for r in out:
    advlib.emit(r.pop("case"), **r)
PYEOF

hjail --config "$T/config.json" --upstream-ca "$T/ca/ca.pem" --head-timeout 2 --idle-timeout 3 \
  --user nobody -- "$PY" "$T/client.py" "$TOOLS" > "$T/out.jsonl"
load_results "$T/out.jsonl"
r() { result "$T/out.jsonl" "$@"; }

# Slow heads: 408 head_timeout, well before the head could have been completed.
for c in head_trickle head_stall; do
  assert_eq "$(r $c statuses)" '["HTTP/1.1 408 Request Timeout (authproxy: head_timeout)"]' "$c: answer"
  assert_eq "$(r $c reasons)" '["head_timeout"]' "$c: reason"
done
for c in second_head_trickle second_head_trickle_tls; do
  assert_eq "$(r $c statuses)" '["HTTP/1.1 200 OK", "HTTP/1.1 408 Request Timeout (authproxy: head_timeout)"]' "$c: answers"
done
for c in head_trickle second_head_trickle second_head_trickle_tls; do
  [ "$(r $c trickled)" -lt 400 ] || fail "$c: the whole head was trickled ($(r $c trickled) bytes)"
done
pass "heads trickled or stalled (plain, keep-alive, TLS): 408 head_timeout"

# Stalled bodies: cut off, with a 408 that says why (test_jail_upload_stall.sh); the
# upstream got bytes but never a complete request.
for c in body_stall_cl body_stall_chunked; do
  assert_eq "$(r $c statuses)" '["HTTP/1.1 408 Request Timeout (authproxy: idle_timeout)"]' "$c: answer"
  case "$(r $c end)" in reset|closed) ;; *) fail "$c: connection left $(r $c end)" ;; esac
done
assert_eq "$(upq up 'sorted(r["path"] for r in reqs)')" "$(jlist /case/keepalive_first)" \
  "complete requests at the plain upstream"
assert_eq "$(upq tls 'sorted(r["path"] for r in reqs)')" "$(jlist /case/keepalive_first)" \
  "complete requests at the TLS upstream"
assert_eq "$(upq up 'len([e for e in events if e["event"] == "conn_end" and e["bytes_received"] > 0])')" \
  "3" "plain upstream connections that received bytes (keep-alive + two stalled bodies)"
pass "stalled bodies cut off after the idle timeout; never complete upstream"

# TLS stalls and silence: cut off, never left open.
for c in tls_partial_hello tls_hello_trickle tls_no_handshake silent; do
  case "$(r $c end)" in reset|closed) ;; *) fail "$c: connection left $(r $c end)" ;; esac
done
assert_eq "$(r tls_partial_hello bytes)" "0" "partial ClientHello: bytes back"
# 10 s at 5 bytes/s is 50 bytes; the whole hello would be about 300.
[ "$(r tls_hello_trickle trickled)" -lt 100 ] ||
  fail "tls_hello_trickle: $(r tls_hello_trickle trickled) bytes trickled before the close"
pass "partial or trickled ClientHello, no handshake, silence: all closed by the proxy"
