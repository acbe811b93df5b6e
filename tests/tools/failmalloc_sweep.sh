#!/usr/bin/env bash
# failmalloc_sweep.sh SCENARIO [FROM TO [STEP]]: runs a real `authproxy jail` flow once
# per N in FROM..TO with the N-th allocation of the proxy (after the arming point)
# failing, through the LD_PRELOAD shim tests/tools/failmalloc.c, and classifies each
# run. Not a ctest test (slow, and where N lands depends on the build); a tool for
# finding out-of-memory defects. Needs root and the plain build (build/).
#
#   SCENARIO   http   plain HTTP to a host whose rule injects a header, then a denied host
#              tls    the same over intercepted TLS (sandbox CA, --upstream-ca)
#              tunnel TLS to a host with no rule (tunnelled on the SNI)
#              dns    the DNS responder (armed at the first datagram it reads)
#   FROM TO    range of N (default: 1 to the number of allocations of a clean run);
#              or "sites [DEPTH]": one N per distinct call site (DEPTH callers) of a
#              clean run
#   env: FAILMALLOC_RUN=C (fail C allocations from N on; 0: all later), KEEP=1 (keep the
#        logs of each run under $T), FAILMALLOC_THREADS=all.
#
# Each run prints one line: N, then
#   ok         the request got its answer and the upstream saw the injected header
#   refused    the client got an error (502, reset) and nothing was forwarded
#   LEAK       the upstream saw the request without the injected header, or a
#              request to the denied host
#   STUCK      a third request after the failure (tried twice: the failure may hit the
#              first try) did not get through: the failure lasted
#   CRASH      the jail died of a signal;   HANG   it did not end within 40 s
# (only the failed allocation's own request may fail: the denied host must still
# get its 403, unless the failure hit its connection). Followed by what the client got and the proxy's last log line. The shim's log (what
# allocation failed, with a backtrace) is $T/fm-N.log with KEEP=1.
#
#   tests/tools/failmalloc_sweep.sh http 1 400 | grep -v ' ok \| refused '
. "$(dirname "$0")/../integration/lib.sh"

SCEN=${1:?scenario: http, tls, tunnel or dns}
SHIM=${AUTHPROXY_BUILD:-$SRC/build}/tests/libfailmalloc.so
[ -f "$SHIM" ] || fail "$SHIM not built (cmake --build build --target failmalloc)"

make_ca "$T/ca" api.example.com denied.example.com tunnel.example.com
case $SCEN in
  http | dns) start_upstream up ;;
  tls | tunnel) start_upstream up "$T/ca/server.pem" "$T/ca/server.key" ;;
  *) fail "unknown scenario $SCEN" ;;
esac
mkdir -p "$T/secrets"
printf 'sk-fm-%s\n' "$$" > "$T/secrets/KEY"
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] } ],
  "egress": { "default": "allow", "deny": ["denied.example.com"] },
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT",
                      "denied.example.com": "127.0.0.1:$up_PORT",
                      "tunnel.example.com": "127.0.0.1:$up_PORT" } } }
EOF

case $SCEN in
  http) URL=http://api.example.com; DENY=http://denied.example.com; ARM=accept4:1 ;;
  tls) URL=https://api.example.com; DENY=https://denied.example.com; ARM=accept4:1 ;;
  tunnel) URL=https://tunnel.example.com; DENY=https://denied.example.com; ARM=accept4:1 ;;
  dns) URL=http://api.example.com; DENY=http://denied.example.com; ARM=recvmsg:1 ;;
esac
# The client: CA of the upstream for the tunnel (the proxy does not terminate it).
CLIENT_CA=
[ "$SCEN" = tunnel ] && CLIENT_CA="--cacert $T/ca/ca.pem"

# one N: runs the jail; prints the classification.
one() {
  local n=$1 out rc tag saw reasons
  : > "$T/up.jsonl"
  rm -f "$T/fm-$n.log"
  out=$(FAILMALLOC_EXE=authproxy FAILMALLOC_ARM=$ARM FAILMALLOC_NTH=$n \
    FAILMALLOC_LOG="$T/fm-$n.log" LD_PRELOAD="$SHIM" \
    timeout -k 5 40 "$AUTHPROXY" jail -v --config "$T/config.json" --secrets-dir "$T/secrets" \
      --log "$T/audit-$n.jsonl" --upstream-ca "$T/ca/ca.pem" --user nobody --idle-timeout 5 --connect-timeout 5 -- \
      sh -c "curl -sS -m 10 $CLIENT_CA -o /dev/null -w 'a=%{http_code} ' $URL/p-$n 2>&1;
             curl -sS -m 10 -o /dev/null -w 'd=%{http_code} ' $DENY/d-$n 2>&1;
             curl -sS -m 10 $CLIENT_CA -o /dev/null -w 'r=%{http_code}' $URL/r-$n 2>&1 ||
             curl -sS -m 10 $CLIENT_CA -o /dev/null -w ' r=%{http_code}' $URL/r-$n 2>&1" \
      2> "$T/jail-$n.log") && rc=0 || rc=$?
  saw=$("$PY" - "$T/up.jsonl" "$n" "sk-fm-$$" "$SCEN" <<'PYEOF'
import json, sys
log, n, secret, scen = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
reqs = [json.loads(l) for l in open(log) if l.strip()]
conns = [r for r in reqs if r.get("event") == "conn"]
reqs = [r for r in reqs if r.get("event") == "request"]
res = []
for r in reqs:
    auth = [v for k, v in r["headers"] if k.lower() == "authorization"]
    if r["path"] == "/d-" + n:
        res.append("LEAK:denied-host-forwarded")
    elif r["path"] in ("/p-" + n, "/r-" + n):
        if scen == "tunnel":
            res.append("fwd" if r["path"][1] == "p" else "again")
        elif auth != ["Bearer " + secret]:
            res.append("LEAK:no-credential(%r)" % auth)
        else:
            res.append("fwd" if r["path"][1] == "p" else "again")
    else:
        res.append("LEAK:unexpected-path(%s)" % r["path"])
if scen != "tunnel" and any(c.get("sni") == "denied.example.com" for c in conns):
    res.append("LEAK:denied-host-dialled")
print(" ".join(res))
PYEOF
)
  case $rc in
    124 | 137) tag=HANG ;;
    *) if [ "$rc" -gt 128 ] && [ "$rc" -ne 125 ] && ! grep -q "child exited" "$T/jail-$n.log"; then
         # 128+N is also CMD killed by a signal: the jail says so itself.
         tag=CRASH
       elif [[ $saw == *LEAK* ]]; then tag=LEAK
       elif [[ $saw != *again* ]] || [[ $out != *r=200* ]]; then tag=STUCK
       elif [[ $saw == fwd* ]] && [[ $out == *a=200* ]] && [[ $out == *d=403* ]]; then tag=ok
       else tag=refused
       fi ;;
  esac
  reasons=$("$PY" -c '
import json, sys
print(",".join(str(r.get("reason") or r.get("status") or "-") for r in map(json.loads, open(sys.argv[1])) if r.get("type") != "x"))' \
    "$T/audit-$n.jsonl" 2>/dev/null || true)
  printf '%s %s rc=%s client[%s] upstream[%s] audit[%s] log[%s]\n' "$n" "$tag" "$rc" \
    "$(echo "$out" | tr '\n' ' ' | cut -c1-120)" "$saw" "$reasons" \
    "$(grep -v '^{' "$T/jail-$n.log" | grep -v 'detached\|jail: [0-9]* conn' | tail -n 1 | cut -c1-200 || true)"
  case $tag in
    ok | refused) [ -n "${KEEP:-}" ] || rm -f "$T/jail-$n.log" "$T/fm-$n.log" "$T/audit-$n.jsonl" ;;
  esac
}

FROM=${2:-}
TO=${3:-}
if [ "$FROM" = sites ]; then
  # One N per distinct call site (the allocation's callers, DEPTH frames, default 4)
  # of a clean run: each site fails once, in far fewer runs than every N.
  FAILMALLOC_EXE=authproxy FAILMALLOC_ARM=$ARM FAILMALLOC_LOG="$T/trace.log" FAILMALLOC_TRACE=1 \
    LD_PRELOAD="$SHIM" "$AUTHPROXY" jail --config "$T/config.json" --secrets-dir "$T/secrets" \
      --upstream-ca "$T/ca/ca.pem" --user nobody -- \
      sh -c "curl -sS $CLIENT_CA -o /dev/null $URL/p-0; curl -sS $CLIENT_CA -o /dev/null $DENY/d-0" \
      > /dev/null 2>&1 || true
  mapfile -t NS < <(awk -v d="${TO:-4}" '$1 == "trace" {
      sig = ""; for (i = 4; i < 4 + d && i <= NF; i++) sig = sig " " $i
      if (!(sig in seen)) { seen[sig] = 1; print $2 } }' "$T/trace.log")
  echo "# $SCEN: ${#NS[@]} distinct call sites of $(grep -c '^trace' "$T/trace.log") allocations"
  [ -n "${COUNT_ONLY:-}" ] && exit 0
  for n in "${NS[@]}"; do one "$n"; done
  exit 0
fi
if [ -z "$FROM" ]; then
  # A clean run (no allocation fails) counts the allocations after the arming point.
  FAILMALLOC_EXE=authproxy FAILMALLOC_ARM=$ARM FAILMALLOC_LOG="$T/count.log" \
    LD_PRELOAD="$SHIM" "$AUTHPROXY" jail --config "$T/config.json" --secrets-dir "$T/secrets" \
      --upstream-ca "$T/ca/ca.pem" --user nobody -- \
      sh -c "curl -sS $CLIENT_CA -o /dev/null $URL/p-0; curl -sS $CLIENT_CA -o /dev/null $DENY/d-0" \
      > /dev/null 2>&1 || true
  FROM=1
  TO=$(sed -n 's/.*exit: \([0-9]*\) counted.*/\1/p' "$T/count.log" | head -n 1)
  echo "# $SCEN: $TO allocations after $ARM in a clean run"
fi
[ -n "${COUNT_ONLY:-}" ] && exit 0
for ((n = FROM; n <= TO; n += ${4:-1})); do one "$n"; done
if [ -n "${KEEP:-}" ]; then
  CLEANUP_HOOKS+=("echo 'logs kept in $T' >&2; cp -r '$T' '$T.kept'")
fi
