#!/usr/bin/env bash
# sysfail_serve.sh PHASE SYSCALL ERRNO [FROM TO]: system-call failure sweep of the
# daemon's attach, detach and data path, with strace's fault injection
# (`strace -f -p DAEMON -e inject=SYSCALL:error=ERRNO:when=N`). Per N in FROM..TO
# (default 1..12), a fresh `authproxy serve`, and a fresh namespace SBX with an uplink
# veth to a namespace UP, where a TCP listener answers "DIRECT" (SBX's own way out,
# as a container's namespace has one). Then, by PHASE:
#   attach   strace armed across `ctl attach` (counts restart in every thread: the
#            daemon enters a namespace in a helper thread of its own per attach)
#   detach   attach clean; strace armed across `ctl detach`
#   data     attach clean; strace armed across requests from SBX: the rule's host
#            (p, q: 200 with the credential), a host egress denies (d: 403, never
#            forwarded); STUCK here: a request after the injection's is not served
# After it (strace gone): does SBX reach UP directly, is it served (curl of a host a
# rule injects into, 200 with the credential), what is its nft table, what did ctl say.
# Then: detach (if attached), a second attach and detach of SBX, the same checks.
# Each run prints one line: N, then
#   ok        attach (detach) reported done, and it is: served (locked down)
#   refused   the call reported a failure naming a cause, and SBX is as before the
#             call (attach: not served, its own uplink as before; detach: served on)
#             or without any way out
#   LEAK      SBX reached UP directly after ctl reported it attached, or at any time
#             after the first attach (the daemon took it over: it must stay closed),
#             or the upstream saw the request without the credential
#   LIE       ctl reported success and SBX is not served / not locked down, or ctl
#             reported failure without a cause
#   STUCK     the second attach did not serve SBX
#   CRASH     the daemon died;  HANG  a command did not end in its time
#   SANITIZER the daemon's log has a sanitizer's report (AUTHPROXY=build-asan/...)
#   noinject  strace's injection never fired (N beyond the calls made)
# Netlink goes through libmnl: sendto to send, recvmsg to receive. Each strace takes
# a few seconds (a curl waits out its timeout where SBX is not served). Known on
# main: a detach whose lockdown batch fails (sendto, setns) is LIE (t=served): ctl
# reports it detached, the daemon logs a warning, SBX keeps the redirects to the
# closed listeners (no way out either way). Injections a real kernel never makes can
# abort the daemon in libuv: `write ENOSPC 1` hits libuv's eventfd first, and
# uv_async_send aborts on any failure but EAGAIN (CRASH, not the proxy's). Needs root and the plain build. Not a
# ctest test.
#
#   for sc in sendto recvmsg; do tests/tools/sysfail_serve.sh attach $sc ENOBUFS 1 18; done
. "$(dirname "$0")/../integration/lib.sh"
require_cmd strace

PHASE=${1:?attach, detach or data}
SC=${2:?syscall}
ERR=${3:?errno}
FROM=${4:-1}
TO=${5:-12}
start_upstream up
mkdir -p "$T/secrets"
cat > "$T/cfg.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] } ],
  "egress": { "default": "allow", "deny": ["denied.example.com"] },
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT",
                      "denied.example.com": "127.0.0.1:$up_PORT" } } }
EOF

# direct NS: prints DIRECT when NS reaches UP's listener (10.199.1.2:8099).
direct() {
  timeout -k 1 4 ip netns exec "$1" "$PY" -c '
import socket, sys
try:
    s = socket.create_connection(("10.199.1.2", 8099), timeout=2)
    s.settimeout(2)
    print(s.recv(16).decode().strip() or "closed")
except Exception as e:
    print(type(e).__name__)
' 2>/dev/null || echo timeout
}
served() {
  timeout -k 1 10 ip netns exec "$1" curl -sS -m 5 -o /dev/null -w '%{http_code}' \
    "http://api.example.com/$2" 2>/dev/null || true
}
table() {  # the kind of table inet authproxy in NS: none, served, lockdown
  local t
  t=$(ip netns exec "$1" nft list table inet authproxy 2>/dev/null) || { echo none; return; }
  case $t in
    *redirect* | *tproxy*) echo served ;;
    *drop*) echo lockdown ;;
    *) echo other ;;
  esac
}

one() {
  local n=$1 sbx="ap-sf$n-$$" upn="ap-sfu$n-$$" st="$T/st-$n" sock="$T/c-$n.sock"
  local pid spid rc=0 ok=0 msg d0 s0 t0 d1 s1 t1 d2 s2 again=0 tag hung="" fired
  mkdir -p -m 700 "$st"
  uplink_topology "$sbx" "$upn"
  ip netns exec "$upn" "$PY" -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8099)); s.listen(16)
while True:
    c, a = s.accept(); c.sendall(b"DIRECT\n"); c.close()
' &
  local lpid=$!
  ctl() { timeout -k 2 20 "$AUTHPROXY" ctl --control "$sock" "$@"; }
  "$AUTHPROXY" serve --state-dir "$st" --control "$sock" --drain-timeout 1 -v \
    > "$T/serve-$n.log" 2>&1 &
  pid=$!
  wait_for "[ -S '$sock' ] && '$AUTHPROXY' ctl --control '$sock' health >/dev/null 2>&1" 10
  printf 'sk-%s' "$$" | ctl secret-set KEY > /dev/null
  d0=$(direct "$sbx")
  if [ "$PHASE" != attach ]; then
    ctl attach box --netns "/var/run/netns/$sbx" --config "$T/cfg.json" > /dev/null
  fi
  strace -f -qq -p "$pid" -e trace="$SC" -e inject="$SC:error=$ERR:when=$n" \
    -o "$T/strace-$n.log" 2> /dev/null &
  spid=$!
  wait_for "grep -q '^TracerPid:[[:space:]]*$spid\$' /proc/$pid/status" 5
  if [ "$PHASE" = attach ]; then
    msg=$(ctl attach box --netns "/var/run/netns/$sbx" --config "$T/cfg.json" 2>&1 > /dev/null) &&
      ok=1 || rc=$?
  elif [ "$PHASE" = detach ]; then
    msg=$(ctl detach box 2>&1 > /dev/null) && ok=1 || rc=$?
  else
    # data: two requests to the rule's host, one to the denied host, one more.
    msg="p=$(served "$sbx" "p-$n") d=$(timeout -k 1 10 ip netns exec "$sbx" curl -sS -m 5 \
      -o /dev/null -w '%{http_code}' "http://denied.example.com/d-$n" 2>/dev/null || true)"
    msg="$msg q=$(served "$sbx" "q-$n")"
    ok=1
  fi
  [ $rc -ne 124 ] && [ $rc -ne 137 ] || hung="ctl-hung"
  kill "$spid" 2> /dev/null || true
  wait "$spid" 2> /dev/null || true
  fired=$(grep -c "(INJECTED)" "$T/strace-$n.log" || true)
  sleep 0.2
  t1=$(table "$sbx") d1=$(direct "$sbx") s1=$(served "$sbx" "a-$n")
  # Then: whatever the state, a detach and a fresh attach must work, and closes again.
  ctl detach box > /dev/null 2>&1 || true
  d2=$(direct "$sbx")
  if ctl attach box --netns "/var/run/netns/$sbx" --config "$T/cfg.json" > /dev/null 2>&1; then
    again=1
  fi
  s2=$(served "$sbx" "g-$n")
  ctl detach box > /dev/null 2>&1 || true
  local d3
  d3=$(direct "$sbx")
  if kill -0 "$pid" 2> /dev/null; then
    kill "$pid"
    wait "$pid" 2> /dev/null || true
    alive=1
  else
    wait "$pid" 2> /dev/null && rc=0 || rc=$?
    alive=0
  fi
  kill "$lpid" 2> /dev/null || true; wait "$lpid" 2> /dev/null || true
  ip netns del "$sbx" || true; ip netns del "$upn" || true
  local up
  up=$("$PY" - "$T/up.jsonl" "$n" "$$" <<'PYEOF'
import json, sys
log, n, pid = sys.argv[1:4]
out = []
for l in open(log):
    r = json.loads(l)
    if r.get("event") != "request" or not r["path"].endswith("-" + n):
        continue
    auth = [v for k, v in r["headers"] if k.lower() == "authorization"]
    if r["path"].startswith("/d-"):
        out.append("DENIED-HOST-REACHED:NOCRED")
        continue
    out.append(r["path"][1] + ("" if auth == ["Bearer sk-" + pid] else ":NOCRED"))
print(",".join(out))
PYEOF
)
  local state="t=$t1 direct=$d1 served=$s1 | after-detach direct=$d2 | again=$again served=$s2 | final direct=$d3"
  if grep -q "Sanitizer" "$T/serve-$n.log"; then tag=SANITIZER
  elif [ $alive = 0 ]; then tag=CRASH
  elif [ -n "$hung" ]; then tag=HANG
  elif [[ $up == *NOCRED* ]]; then tag=LEAK
  elif [ "$PHASE" = attach ] && [ $ok = 1 ] && [ "$d1" = DIRECT ]; then tag=LEAK
  elif [ "$PHASE" != attach ] && [ "$d1" = DIRECT ]; then tag=LEAK
  elif [ "$d2" = DIRECT ] && { [ $ok = 1 ] || [ "$PHASE" = detach ]; }; then tag=LEAK
  elif [ "$d3" = DIRECT ]; then tag=LEAK
  elif [ "$fired" = 0 ]; then tag=noinject
  elif [ "$PHASE" = data ] && [ "$s1" != 200 ]; then tag=STUCK
  elif [ "$PHASE" = data ] && [[ $msg == *d=200* ]]; then tag=LEAK
  elif [ "$PHASE" = data ] && [[ $msg == *p=200*d=403*q=200* ]]; then tag=ok
  elif [ "$PHASE" = data ]; then tag=refused
  elif [ $ok = 1 ] && [ "$PHASE" = attach ] && [ "$s1" != 200 ]; then tag=LIE
  elif [ $ok = 1 ] && [ "$PHASE" = detach ] && [ "$t1" != lockdown ]; then tag=LIE
  elif [ $ok = 0 ] && [ -z "$msg" ]; then tag=LIE
  elif [ $again = 0 ] || [ "$s2" != 200 ]; then tag=STUCK
  elif [ $ok = 1 ]; then tag=ok
  else tag=refused
  fi
  printf '%s %s %s:%s ok=%s pre=%s %s up[%s] ctl[%s] log[%s]\n' "$n" "$tag" "$SC" "$ERR" "$ok" \
    "$d0" "$state" "$up" "$(tr '\n' ' ' <<< "$msg" | cut -c1-200)" \
    "$(grep -E 'warn|error' "$T/serve-$n.log" | tail -n 2 | cut -c1-200 | tr '\n' ' ' || true)"
}

for ((n = FROM; n <= TO; n++)); do one "$n"; done
