#!/usr/bin/env bash
# sysfail_jail.sh SYSCALL ERRNO [FROM TO]: system-call failure sweep of `authproxy
# jail` starting CMD, with strace's fault injection (`strace -f -e
# inject=SYSCALL:error=ERRNO:when=N`). strace counts each process and thread on its
# own, so the N-th call fails in each of them: the jail's, its namespace helper
# threads', the warden's, CMD's child before exec and CMD's own. CMD records the
# network namespace it runs in, then curls a host whose rule injects a credential.
# Each run prints one line: N, then
#   ok        CMD ran in the jail's namespace and its request got 200 with the credential
#   refused   the jail failed, naming a cause, and CMD did not run; or CMD ran in the
#             jail's namespace and its request failed (the injection hit curl or the
#             proxy) without being forwarded bare
#   LEAK      CMD ran in the host's namespace (the caller's: a network that bypasses
#             the proxy), or the upstream saw the request without the credential
#   LIE       the jail failed without a message, or exited 0 though CMD did not run
#             (also when the injection hit CMD's own first step: read err[])
#   HANG      the jail did not end within 40 s
#   noinject  the injection never fired
# Injections a real kernel never makes can abort the process in libuv (a write(2)
# to its eventfd failing other than EAGAIN: uv_async_send aborts): not the
# proxy's to handle. Needs root and the plain build. Not a ctest test.
#
#   tests/tools/sysfail_jail.sh setns EPERM 1 3
. "$(dirname "$0")/../integration/lib.sh"
require_cmd strace

SC=${1:?syscall}
ERR=${2:?errno}
FROM=${3:-1}
TO=${4:-12}
start_upstream up
mkdir -p "$T/secrets"
printf 'sk-sj-%s\n' "$$" > "$T/secrets/KEY"
cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
HOST_NS=$(stat -L -c %i /proc/self/ns/net)

one() {
  local n=$1 rc=0 out tag fired ns saw
  : > "$T/up.jsonl"
  rm -f "$T/ns-$n"
  out=$(timeout -k 5 40 strace -f -qq -o "$T/strace-$n.log" -e trace="$SC" \
    -e inject="$SC:error=$ERR:when=$n" \
    "$AUTHPROXY" jail --config "$T/config.json" --secrets-dir "$T/secrets" -- \
    sh -c "stat -L -c %i /proc/self/ns/net > $T/ns-$n;
           curl -sS -m 8 -o /dev/null -w 'a=%{http_code}' http://api.example.com/p-$n" \
    2> "$T/jail-$n.log") || rc=$?
  fired=$(grep -c "(INJECTED)" "$T/strace-$n.log" || true)
  ns=$(cat "$T/ns-$n" 2> /dev/null || echo none)
  saw=$("$PY" -c '
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    if r.get("event") == "request":
        auth = [v for k, v in r["headers"] if k.lower() == "authorization"]
        print("cred" if auth == ["Bearer " + sys.argv[2]] else "NOCRED", end=" ")
' "$T/up.jsonl" "sk-sj-$$")
  if [ $rc = 124 ] || [ $rc = 137 ]; then tag=HANG
  elif [ "$ns" = "$HOST_NS" ] || [[ $saw == *NOCRED* ]]; then tag=LEAK
  elif [ "$ns" = none ] && [ $rc = 0 ]; then tag=LIE
  elif [ "$ns" = none ] && ! grep -Eq "^authproxy( jail)?: " "$T/jail-$n.log"; then tag=LIE
  elif [ "$fired" = 0 ]; then tag=noinject
  elif [ "$out" = a=200 ] && [ "$saw" = "cred " ]; then tag=ok
  else tag=refused
  fi
  printf '%s %s %s:%s rc=%s ran=%s out[%s] upstream[%s] err[%s]\n' "$n" "$tag" "$SC" "$ERR" \
    "$rc" "$([ "$ns" = none ] && echo no || echo yes)" "$out" "$saw" \
    "$(grep -v '^[0-9-]*T[0-9:.]*Z .* info: ' "$T/jail-$n.log" | tail -n 2 | cut -c1-200 | tr '\n' ' ')"
}

for ((n = FROM; n <= TO; n++)); do one "$n"; done
