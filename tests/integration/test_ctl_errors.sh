#!/usr/bin/env bash
# `authproxy ctl`'s own errors, before it asks the daemon anything: a --config file it
# cannot use is named with why (too large said only "File too large", not the limit
# of a proxy_config, which the jail's --config states), arguments it cannot send are
# refused with the usage, and no daemon on the socket is said so; help or version output
# that cannot be written is status 1. No daemon runs here.
#
#   authproxy ctl --control $T/none.sock ...  (nothing listens there)
. "$(dirname "$0")/lib.sh"

SOCK=$T/none.sock
# ctl ARGS...: runs ctl; its stderr (and stdout) in OUT, its status in RC.
ctl() {
  set +e
  OUT=$(timeout 20 "$AUTHPROXY" ctl --control "$SOCK" "$@" 2>&1 < /dev/null)
  RC=$?
  set -e
}

echo '{"rules": [' > "$T/broken.json"
mkdir "$T/dir.json"
head -c $((1024 * 1024 + 1)) /dev/zero | tr '\0' ' ' > "$T/big.json"
for cmd in "update box" "config-set agents" "attach box --netns /var/run/netns/x"; do
  # shellcheck disable=SC2086
  ctl $cmd --config "$T/missing.json"
  assert_eq "$RC" "1" "$cmd: status for a missing --config"
  assert_contains "$OUT" "cannot read $T/missing.json: No such file or directory" "$cmd: missing"
  # shellcheck disable=SC2086
  ctl $cmd --config "$T/dir.json"
  assert_contains "$OUT" "cannot read $T/dir.json: Is a directory" "$cmd: a directory"
  # shellcheck disable=SC2086
  ctl $cmd --config "$T/big.json"
  assert_eq "$RC" "1" "$cmd: status for a --config over 1 MiB"
  assert_contains "$OUT" "cannot read $T/big.json: larger than 1 MiB, the limit of a proxy_config" \
    "$cmd: too large"
  # shellcheck disable=SC2086
  ctl $cmd --config "$T/broken.json"
  assert_eq "$RC" "1" "$cmd: status for a --config that is not JSON"
  assert_contains "$OUT" "$T/broken.json: invalid JSON at line 2, column 1" "$cmd: not JSON"
done
pass "a --config file missing, a directory, over 1 MiB, not JSON: named with why"

# Names that cannot be one segment of the request path are not sent at all.
echo '{}' > "$T/ok.json"
for args in "update a/b --config $T/ok.json" "update a%2f --config $T/ok.json" \
            "config-set agents --config $T/ok.json --netns /x" "update box" \
            "attach box --config $T/ok.json"; do
  # shellcheck disable=SC2086
  ctl $args
  assert_eq "$RC" "2" "status for: $args"
  assert_contains "$OUT" "authproxy ctl: usage:" "usage for: $args"
done
ctl get a/b
assert_eq "$RC" "2" "status for get a/b"
assert_contains "$OUT" "unknown command or wrong arguments: get" "get a/b"
ctl frobnicate
assert_eq "$RC" "2" "status for an unknown command"
assert_contains "$OUT" "unknown command or wrong arguments: frobnicate" "an unknown command"
pass "names that are not one path segment, missing or extra options, unknown commands: usage, status 2"

ctl update box --config "$T/ok.json"
assert_eq "$RC" "1" "status with no daemon"
assert_contains "$OUT" "cannot connect to the control socket $SOCK" "the socket is named"
assert_contains "$OUT" "is \`authproxy serve\` running?" "the cause is named"
pass "no daemon: the socket and the likely cause are named"

# Output that cannot be written is a failure, said as such, whatever printed it.
for args in "ctl --help" "jail --help" "serve --help" "version" "--version" "--help"; do
  set +e
  # shellcheck disable=SC2086
  err=$(timeout 20 "$AUTHPROXY" $args 2>&1 > /dev/full)
  rc=$?
  set -e
  assert_eq "$rc" "1" "status of $args with standard output unwritable"
  assert_contains "$err" "cannot write to standard output: No space left on device" "$args: said"
done
pass "help and version output unwritable: status 1, and why"

# Out of memory (tests/tools/failmalloc.c; the plain build only), each allocation of a
# command failing in turn before it reaches the absent daemon: status 1 and a line
# saying so. A request body ctl could not build used to end it with status 1 and
# nothing said.
if [ -f "$FAILMALLOC" ]; then
  echo '{"rules": [{"name": "a", "match_hosts": ["x.com"],
    "headers": [{"name": "X", "type": "plaintext", "value": "v"}]}]}' > "$T/ok.json"
  printf 'secret-value' > "$T/secret"
  said_oom() {
    assert_eq "$RC" "1" "$cmd with allocation $1 failing: status"
    case "$ERR" in
      *"out of memory"* | *"Cannot allocate memory"* | *"cannot connect to the control socket $SOCK"*) ;;
      *) fail "$cmd with allocation $1 failing: '$ERR'" ;;
    esac
  }
  for cmd in "attach box --netns /var/run/netns/x --config $T/ok.json" \
             "config-set agents --config $T/ok.json" "update box --config $T/ok.json" \
             "secret-set K --from-file $T/secret"; do
    # shellcheck disable=SC2086
    sweep_allocations authproxy /dev/null said_oom "$AUTHPROXY" ctl --control "$SOCK" $cmd
  done
  pass "each allocation of attach, config-set, update and secret-set failing: said"
fi
