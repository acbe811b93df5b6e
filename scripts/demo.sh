#!/usr/bin/env bash
# authproxy in one minute, with no internet: a fake "api.openai.com" on 127.0.0.1
# (HTTPS, signed by a throwaway CA), and `authproxy jail` running curl against it.
# The sandbox has no API key in its environment or files, yet the upstream receives
# `Authorization: Bearer sk-demo-...`: authproxy intercepted the TLS connection with
# the sandbox's own CA and injected the header from a secret the sandbox cannot read.
#
# Run as root on Debian: scripts/bootstrap.sh && scripts/demo.sh
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
if [ "$(id -u)" -ne 0 ]; then
  echo "demo: run as root (authproxy jail creates a network namespace): sudo $0" >&2
  exit 1
fi
# Built (or brought up to date with the sources) every time: a binary left from an
# older checkout would demonstrate old code.
echo "demo: building authproxy ..."
[ -f "$top/build/CMakeCache.txt" ] || cmake -S "$top" -B "$top/build" >/dev/null
cmake --build "$top/build" -j "$(nproc)" --target authproxy >/dev/null
authproxy=$top/build/proxy/authproxy

work=$(mktemp -d /tmp/authproxy-demo.XXXXXX)
upstream_pid=
cleanup() {
  # Under set -e a failing last command of an && list would end the trap early
  # (wait returns the killed upstream's 143) and leave $work, keys included.
  if [ -n "$upstream_pid" ]; then
    kill "$upstream_pid" 2>/dev/null || true
    wait "$upstream_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A throwaway CA and a certificate for api.openai.com, for the fake upstream.
. "$top/scripts/common.sh"
make_ca "$work" api.openai.com

python3 "$top/tests/tools/fake_upstream.py" --port-file "$work/port" --log "$work/upstream.jsonl" \
  --cert "$work/server.pem" --key "$work/server.key" 2>"$work/upstream.err" &
upstream_pid=$!
wait_for "[ -s '$work/port' ]" 5
port=$(cat "$work/port")

# The secret lives outside the sandbox, in a secrets directory only root can read.
mkdir -m 700 "$work/secrets"
secret="sk-demo-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
printf '%s\n' "$secret" > "$work/secrets/OPENAI_API_KEY"

cat > "$work/config.json" <<EOF
{
  "rules": [
    { "name": "openai-api", "match_hosts": ["api.openai.com"],
      "headers": [ { "name": "Authorization", "type": "workspace_secret",
                     "value": "Bearer {OPENAI_API_KEY}" } ] }
  ],
  "dns": { "remap": { "api.openai.com": "127.0.0.1:$port" } }
}
EOF

echo "== proxy_config (secrets stay templates):"
"$authproxy" config show "$work/config.json" --secrets-dir "$work/secrets"
echo
echo "== inside the sandbox: authproxy jail --user nobody -- sh -c '...'"
"$authproxy" jail --config "$work/config.json" --secrets-dir "$work/secrets" \
  --upstream-ca "$work/ca.pem" --user nobody -- sh -c '
    echo "   environment mentions the key: $(env | grep -c sk-demo || true) times"
    echo "   secrets directory readable:   $(ls '"$work/secrets"' >/dev/null 2>&1 && echo yes || echo no)"
    echo "   curl https://api.openai.com/v1/models (no key, no proxy variables):"
    curl -sS https://api.openai.com/v1/models | sed "s/^/     /"
  '
echo
echo "== what the upstream received:"
python3 - "$work/upstream.jsonl" "$secret" <<'PY'
import json, sys
reqs = [json.loads(l) for l in open(sys.argv[1]) if '"request"' in l]
for r in reqs:
    print("   %s %s  (TLS, SNI %s)" % (r["method"], r["target"], r["sni"]))
    for k, v in r["headers"]:
        print("     %s: %s" % (k, v))
ok = any(v == "Bearer " + sys.argv[2] for r in reqs for k, v in r["headers"]
         if k.lower() == "authorization")
print("\n== %s" % ("the upstream got the injected key; the sandbox never saw it" if ok
                    else "FAILED: the header was not injected"))
sys.exit(0 if ok else 1)
PY
