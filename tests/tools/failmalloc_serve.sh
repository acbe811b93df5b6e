#!/usr/bin/env bash
# failmalloc_serve.sh [FROM TO [STEP] | sites [DEPTH]]: as failmalloc_sweep.sh, for the
# daemon. Per N, a fresh `authproxy serve` under tests/tools/failmalloc.c, with two
# secrets pushed, armed at the connection of the attach that follows, runs:
#   ctl attach box (a rule injecting "Authorization: Bearer {KEY1}", a denied host),
#   curl in the namespace: the rule's host, then the denied host,
#   ctl update box (now Bearer {KEY2}), curl the rule's host again,
#   ctl detach box, curl once more (must not get out),
# with the N-th allocation after arming failing. Each run prints one line:
#   ok / refused  what happened is what ctl and the proxy said happened
#   LEAK     the upstream saw a request without the credential, a request to the denied
#            host, a credential of the other config than the one ctl reported in
#            force, or a request after a detach ctl reported done
#   CRASH    the daemon died;  HANG  a command did not end within its time
#   STUCK    after the failure, a new attach (of a second namespace) does not work
# Needs root and the plain build.
#
#   tests/tools/failmalloc_serve.sh sites | grep -v ' ok \| refused '
. "$(dirname "$0")/../integration/lib.sh"

SHIM=${AUTHPROXY_BUILD:-$SRC/build}/tests/libfailmalloc.so
[ -f "$SHIM" ] || fail "$SHIM not built (cmake --build build --target failmalloc)"
start_upstream up
NS=$(make_netns fm)
NS2=$(make_netns fm2)
cfg() {  # KEY -> config
  cat <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {$1}" } ] } ],
  "egress": { "default": "allow", "deny": ["denied.example.com"] },
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT", "denied.example.com": "127.0.0.1:$up_PORT" } } }
EOF
}
cfg KEY1 > "$T/cfg1.json"
cfg KEY2 > "$T/cfg2.json"

# one N [TRACE]: a daemon's life; prints the classification.
one() {
  local n=$1
  local st="$T/state-$n" sock="$T/c-$n.sock" pid rc out tag notes=() saw
  local attach_ok=0 update_ok=0 detach_ok=0 i
  : > "$T/up.jsonl"
  mkdir -p -m 700 "$st"
  ctl() { timeout -k 2 20 "$AUTHPROXY" ctl --control "$sock" "$@"; }
  cl() { timeout -k 2 15 ip netns exec "$1" curl -sS -m 8 -o /dev/null -w '%{http_code}' "$2" 2>/dev/null || true; }
  rm -f "$T/arm"
  FAILMALLOC_EXE=authproxy FAILMALLOC_ARM="file:$T/arm" FAILMALLOC_NTH=$n \
    FAILMALLOC_LOG="$T/fm-$n.log" FAILMALLOC_TRACE=${2:-} LD_PRELOAD="$SHIM" \
    "$AUTHPROXY" serve --state-dir "$st" --control "$sock" --log "$T/audit-$n.jsonl" \
      --drain-timeout 1 -v > "$T/serve-$n.log" 2>&1 &
  pid=$!
  for ((i = 0; i < 200; i++)); do
    [ -S "$sock" ] && ctl health > /dev/null 2>&1 && break
    sleep 0.05
  done
  # Secrets before arming; the attach's accepted connection arms.
  printf 'sk1-%s' "$$" | ctl secret-set KEY1 > /dev/null
  printf 'sk2-%s' "$$" | ctl secret-set KEY2 > /dev/null
  : > "$T/arm"
  ctl attach box --netns "/var/run/netns/$NS" --config "$T/cfg1.json" > /dev/null 2>> "$T/ctl-$n.log" &&
    attach_ok=1
  out="attach=$attach_ok a=$(cl "$NS" "http://api.example.com/p-$n") d=$(cl "$NS" "http://denied.example.com/d-$n")"
  ctl update box --config "$T/cfg2.json" > /dev/null 2>> "$T/ctl-$n.log" && update_ok=1
  out="$out update=$update_ok u=$(cl "$NS" "http://api.example.com/u-$n")"
  ctl detach box > /dev/null 2>> "$T/ctl-$n.log" && detach_ok=1
  out="$out detach=$detach_ok x=$(cl "$NS" "http://api.example.com/x-$n")"
  # Later work still possible: a second namespace attached, and served.
  # (Twice if need be: the failure may have hit the first try itself.)
  if ctl attach box2 --netns "/var/run/netns/$NS2" --config "$T/cfg1.json" > /dev/null 2>> "$T/ctl-$n.log" ||
     ctl attach box2 --netns "/var/run/netns/$NS2" --config "$T/cfg1.json" > /dev/null 2>> "$T/ctl-$n.log"; then
    out="$out again=$(cl "$NS2" "http://api.example.com/g-$n")"
    [[ $out == *again=200* ]] || out="$out again2=$(cl "$NS2" "http://api.example.com/g-$n")"
  fi
  ctl detach box2 > /dev/null 2>&1 || true
  if kill -0 "$pid" 2> /dev/null; then
    kill "$pid"
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2> /dev/null || break
      sleep 0.05
    done
    if kill -0 "$pid" 2> /dev/null; then
      kill -9 "$pid"
      notes+=("daemon-did-not-stop")
    fi
    wait "$pid" 2> /dev/null && rc=0 || rc=$?
  else
    wait "$pid" 2> /dev/null && rc=0 || rc=$?
    notes+=("daemon-died-rc=$rc")
  fi
  saw=$("$PY" - "$T/up.jsonl" "$n" "$$" "$update_ok" "$detach_ok" <<'PYEOF'
import json, sys
log, n, pid, update_ok, detach_ok = sys.argv[1:6]
res = []
for r in (json.loads(l) for l in open(log) if l.strip()):
    if r.get("event") != "request":
        continue
    auth = [v for k, v in r["headers"] if k.lower() == "authorization"]
    p = r["path"]
    if p == "/d-" + n:
        res.append("LEAK:denied-host")
    elif p == "/x-" + n:
        res.append("LEAK:after-detach" if detach_ok == "1" else "x-after-failed-detach")
    elif p in ("/p-" + n, "/g-" + n):
        res.append(p[1] if auth == ["Bearer sk1-" + pid] else "LEAK:%s:%r" % (p, auth))
    elif p == "/u-" + n:
        want = "sk2-" if update_ok == "1" else "sk1-"
        if auth == ["Bearer " + want + pid]:
            res.append("u")
        elif update_ok != "1" and auth == ["Bearer sk2-" + pid]:
            res.append("u-new-config-though-update-failed")
        else:
            res.append("LEAK:u:%r" % auth)
    else:
        res.append("LEAK:path:" + p)
print(" ".join(res))
PYEOF
)
  if [[ " ${notes[*]} " == *daemon-died* ]]; then
    if [ "$rc" -gt 128 ]; then tag=CRASH; else tag=EXIT; fi
  elif [[ $saw == *LEAK* ]]; then tag=LEAK
  elif [[ " ${notes[*]} " == *did-not-stop* ]]; then tag=HANG
  elif [[ $out != *again=200* ]] && [[ $out != *again2=200* ]]; then tag=STUCK
  elif [ $attach_ok = 1 ] && [ $update_ok = 1 ] && [ $detach_ok = 1 ] &&
       [[ $out == *a=200*d=403*u=200* ]]; then tag=ok
  else tag=refused
  fi
  printf '%s %s %s upstream[%s] %s ctl[%s] log[%s]\n' "$n" "$tag" "$out" "$saw" "${notes[*]}" \
    "$(tr '\n' ' ' < "$T/ctl-$n.log" | cut -c1-160)" \
    "$(grep -E 'warn|error' "$T/serve-$n.log" | tail -n 2 | cut -c1-220 | tr '\n' ' ' || true)"
  case $tag in
    ok | refused) [ -n "${KEEP:-}" ] || rm -rf "$T/fm-$n.log" "$T/serve-$n.log" "$T/audit-$n.jsonl" "$st" ;;
  esac
}

FROM=${1:-sites}
if [ "$FROM" = sites ]; then
  KEEP=1 one 0 1 > /dev/null
  mapfile -t NS_LIST < <(awk -v d="${2:-4}" '$1 == "trace" {
      sig = ""; for (i = 4; i < 4 + d && i <= NF; i++) sig = sig " " $i
      if (!(sig in seen)) { seen[sig] = 1; print $2 } }' "$T/fm-0.log")
  echo "# serve: ${#NS_LIST[@]} distinct call sites of $(grep -c '^trace' "$T/fm-0.log") allocations"
  [ -n "${COUNT_ONLY:-}" ] && exit 0
  for n in "${NS_LIST[@]}"; do one "$n"; done
else
  for ((n = FROM; n <= ${2:?TO}; n += ${3:-1})); do one "$n"; done
fi
if [ -n "${KEEP:-}" ]; then
  CLEANUP_HOOKS+=("echo 'logs kept in $T.kept' >&2; cp -r '$T' '$T.kept'")
fi
