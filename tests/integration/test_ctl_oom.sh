#!/usr/bin/env bash
# `authproxy ctl` out of memory against a working daemon: each allocation of a command
# fails in turn (tests/tools/failmalloc.c, the plain build only). What ctl prints is
# the result a script keeps (`ctl attach ... > ca.pem`, `ctl list | jq`): status 0
# only with the whole answer printed, and otherwise status 1 with a line saying why.
# A JSON answer ctl could not pretty-print used to go out as nothing with status 0,
# and an attach whose answer it could not parse printed the answer's JSON as the CA.
#
#   ap-co-PID: attached as box        host: authproxy serve --control $T/c.sock
. "$(dirname "$0")/lib.sh"

if [ ! -f "$FAILMALLOC" ]; then
  echo "SKIP: $FAILMALLOC not built (the sanitizer build has no allocation shim)"
  exit 77
fi
SOCK=$T/c.sock
mkdir -m 700 "$T/state"
"$AUTHPROXY" serve --state-dir "$T/state" --control "$SOCK" --drain-timeout 1 \
  >> "$T/serve.log" 2>&1 &
PIDS+=($!)
ctl() { timeout 20 "$AUTHPROXY" ctl --control "$SOCK" "$@"; }
wait_for "[ -S '$SOCK' ] && '$AUTHPROXY' ctl --control '$SOCK' health >/dev/null 2>&1"
cat > "$T/config.json" <<EOF2
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {K}" } ] } ] }
EOF2
printf 'sk-oom' | ctl secret-set K > /dev/null
ctl config-set agents --config "$T/config.json" > /dev/null
ns=$(make_netns co)
ctl attach box --netns "/var/run/netns/$ns" --config "$T/config.json" > /dev/null

# CHECK for sweep_allocations: KIND is json (a JSON document) or pem (a certificate).
KIND=json
whole_or_said() {
  if [ "$RC" = 0 ]; then
    case $KIND in
      json) "$PY" -c 'import json, sys; json.loads(sys.stdin.read())' <<< "$OUT" ||
              fail "$CMD with allocation $1 failing: status 0 and not JSON: '$OUT'" ;;
      pem) [[ $OUT == "-----BEGIN CERTIFICATE-----"*"-----END CERTIFICATE-----" ]] ||
             fail "$CMD with allocation $1 failing: status 0 and not a certificate: '$OUT'" ;;
    esac
  else
    assert_eq "$RC" "1" "$CMD with allocation $1 failing: status"
    [ -n "$ERR" ] || fail "$CMD with allocation $1 failing: status 1 and nothing said"
    # The daemon's answers are JSON: out of memory reading one is said as that.
    [[ $ERR != *"not JSON"* ]] ||
      fail "$CMD with allocation $1 failing: out of memory said as: $ERR"
  fi
}
for CMD in health list secrets configs "config-get agents" "get box"; do
  # shellcheck disable=SC2086
  sweep_allocations authproxy /dev/null whole_or_said "$AUTHPROXY" ctl --control "$SOCK" $CMD
done
KIND=pem
CMD="ca box"
sweep_allocations authproxy /dev/null whole_or_said "$AUTHPROXY" ctl --control "$SOCK" ca box
pass "get, list, health, secrets, configs, config-get, ca: the whole answer or status 1, said"

# attach, each allocation failing: the CA on status 0; and whatever ctl said, the
# daemon's state is one a detach clears.
ns2=$(make_netns co2)
detach_after() {
  whole_or_said "$1"
  ctl detach box2 > /dev/null 2>&1 || true
}
CMD="attach box2"
sweep_allocations authproxy /dev/null detach_after "$AUTHPROXY" ctl --control "$SOCK" \
  attach box2 --netns "/var/run/netns/$ns2" --config "$T/config.json"
pass "attach with each of its $SWEPT allocations failing: the CA, or status 1 said"
ctl detach box > /dev/null
