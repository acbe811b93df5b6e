#!/usr/bin/env bash
# Using the proxy to reach the host it runs on (server-side request forgery): HTTP
# Host and TLS SNI naming localhost, loopback and unspecified addresses in every
# spelling (127.0.0.2, [::1], [::], [::ffff:127.0.0.1]), the cloud metadata address
# (169.254.169.254, also by plain connection without a Host), IPv6 link-local, the
# synthetic range, and names the host's resolver answers with such addresses (DNS
# rebinding). A service listens on every address of the host namespace, so a dial
# would reach it. Also with the README's example no_proxy ["localhost", "127.0.0.1"]:
# no_proxy relays untouched but never opens the host. Only a dns.remap entry, the
# operator's choice, reaches it (the control).
#
#   jail: client --nft--> authproxy (in $HNS) --X--> svc on 0.0.0.0:$svc_PORT in $HNS
#                                               (lo also has 169.254.169.254, fe80::1)
. "$(dirname "$0")/../integration/lib.sh"
. "$(dirname "$0")/adv_lib.sh"

host_ns_start --answer rebind.watch.test=127.0.0.1 --answer meta.watch.test=169.254.169.254 \
  --answer synth.watch.test=198.18.0.1 --answer zero.watch.test=0.0.0.0
ip -n "$HNS" addr add 169.254.169.254/32 dev lo
ip -n "$HNS" addr add fe80::1/128 dev lo
HUP_BIND=:: hupstream svc
cat > "$T/plain.json" <<EOF
{ "dns": { "remap": { "ctl.example.com": "127.0.0.1:$svc_PORT" } } }
EOF
cat > "$T/noproxy.json" <<EOF
{ "no_proxy": ["localhost", "127.0.0.1", "169.254.169.254", "rebind.watch.test"],
  "dns": { "remap": { "ctl.example.com": "127.0.0.1:$svc_PORT" } } }
EOF

cat > "$T/client.py" <<'PYEOF'
import socket, sys
sys.path.insert(0, sys.argv[1])
import advlib
port = int(sys.argv[2])
hosts = ["localhost", "LOCALHOST.", "127.0.0.1", "127.0.0.2", "[::1]", "0.0.0.0", "[::]",
         "[::ffff:127.0.0.1]", "[::ffff:169.254.169.254]", "169.254.169.254", "[fe80::1]",
         "198.18.0.1", "rebind.watch.test", "meta.watch.test", "synth.watch.test",
         "zero.watch.test"]
for i, h in enumerate(hosts):
    case = "host_%d" % i
    data = ("GET /case/%s HTTP/1.1\r\nHost: %s:%d\r\nX-Host: %s\r\nConnection: close\r\n\r\n"
            % (case, h, port, h)).encode()
    r = advlib.exchange("203.0.113.9", port, data, timeout=15)
    r["host"] = h
    advlib.emit(case, **r)
for case, sni in (("sni_localhost", "localhost"), ("sni_rebind", "rebind.watch.test"),
                  ("sni_meta", "meta.watch.test")):
    advlib.emit(case, **advlib.exchange("203.0.113.9", port, advlib.client_hello(sni), timeout=15))
# Straight at the metadata address: redirected, then an address flow the proxy
# would dial as is.
advlib.emit("meta_http10", **advlib.exchange("169.254.169.254", port,
            b"GET /case/meta_http10 HTTP/1.0\r\n\r\n", timeout=15))
advlib.emit("meta_raw", **advlib.exchange("169.254.169.254", port, b"\x00raw bytes\r\n", timeout=15))

advlib.emit("control", **advlib.exchange("ctl.example.com", 80,
            b"GET /case/control HTTP/1.1\r\nHost: ctl.example.com\r\nConnection: close\r\n\r\n"))
PYEOF

for cfg in plain noproxy; do
  : > "$T/svc.jsonl"
  hjail --config "$T/$cfg.json" --log "$T/audit-$cfg.jsonl" --connect-timeout 3 --user nobody -- \
    "$PY" "$T/client.py" "$TOOLS" "$svc_PORT" > "$T/$cfg.out"
  load_results "$T/$cfg.out"
  assert_contains "$(result "$T/$cfg.out" control status)" " 200 " "$cfg: the remapped control"
  for i in $(seq 0 15); do
    st=$(result "$T/$cfg.out" host_$i status)
    h=$(result "$T/$cfg.out" host_$i host)
    # A request is answered 403/400/502; a no_proxy host is relayed untouched, so a
    # refused dial resets the connection instead.
    case "$st/$(result "$T/$cfg.out" host_$i end)" in
      *" 403 "*|*" 400 "*|*" 502 "*) ;;
      /reset) [ "$cfg" = noproxy ] || fail "$cfg: Host $h: reset instead of an answer" ;;
      *) fail "$cfg: Host $h: expected 403/400/502, got '$st'" ;;
    esac
  done
  for c in sni_localhost sni_rebind sni_meta meta_raw; do
    assert_eq "$(result "$T/$cfg.out" $c bytes)" "0" "$cfg: $c: bytes back"
  done
  case "$(result "$T/$cfg.out" meta_http10 status)" in
    *" 403 "*|*" 502 "*|"") ;;
    *) fail "$cfg: meta_http10: $(result "$T/$cfg.out" meta_http10 status)" ;;
  esac
  assert_eq "$(upq svc 'sorted(r["path"] for r in reqs)')" "$(jlist /case/control)" "$cfg: requests at the host service"
  assert_eq "$(upq svc 'len([e for e in events if e["event"] == "conn"])')" "1" "$cfg: connections at the host service"
  # Most are refused by the address check itself, before any connect.
  n=$(grep -c '"reason":"blocked_address"' "$T/audit-$cfg.jsonl" || true)
  [ "$n" -ge 20 ] || fail "$cfg: only $n connections/requests audited as blocked_address"
  pass "$cfg: 16 Host spellings, 3 SNI names, metadata flows: nothing reached the host ($n blocked_address)"
done
# The rebinding names were resolved (then refused); nothing else but "localhost."
# (glibc's files backend does not match the absolute form; the answer is NXDOMAIN).
assert_eq "$(resolved 'sorted(set(q["name"] for q in qs) - {"localhost"})')" \
  "$(jlist meta.watch.test rebind.watch.test synth.watch.test zero.watch.test)" "names resolved"
