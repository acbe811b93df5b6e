#!/usr/bin/env bash
# Reads of uninitialised memory, which ASan does not see, and invalid accesses, found by
# valgrind's memcheck in the test suite.
#
#   scripts/memcheck.sh                   whole suite (root: integration tests too)
#   scripts/memcheck.sh -- -R jail_http   extra arguments after -- go to ctest
#
# Builds build-memcheck/ (RelWithDebInfo) and runs, under valgrind:
# - the unit tests and the fuzz corpus replays, each whole, with the processes they fork;
# - every authproxy process the integration and adversarial tests start (daemons, jails,
#   ctl, the CNI plugin, the OCI hook), through the stand-in build-memcheck/memcheck/bin/
#   authproxy that tests/integration/lib.sh runs in its place (AUTHPROXY_WRAPPER). The
#   programs a jail starts are not followed; they are not ours.
# Every process writes its report to build-memcheck/memcheck/vg.PID. Exits 1 when a
# report holds an error or a test failed, listing them.
#
# A hand-run tool, like scripts/tsan.sh: valgrind runs a program 20-50 times slower.
# One test at a time, and still the tests that count time or memory (resident sizes,
# sleeps of a busy loop) or preload an allocation shim can fail or skip for valgrind's
# sake; read a failed test's output before its report. Leaks are not checked (the
# ASan+UBSan pass of scripts/test.sh runs LeakSanitizer).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dir=$top/build-memcheck
out=$dir/memcheck
jobs=$(nproc 2>/dev/null || echo 2)
. "$top/scripts/common.sh"
ctest_args_after_dashes "$@"

if ! command -v valgrind > /dev/null; then
  [ "$(id -u)" = 0 ] || { echo "memcheck.sh: install valgrind" >&2; exit 1; }
  apt-get install -y --no-install-recommends valgrind > /dev/null
fi
cmake -S "$top" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAUTHPROXY_WERROR=ON > /dev/null
cmake --build "$dir" -j "$jobs"
rm -rf "$out"
mkdir -p "$out/bin/cni"
# Tests run authproxy as other users too (a jail started by an unprivileged account).
chmod 1777 "$out"

# mount(2) with a NULL file system type (a bind mount, a remount) is valid; memcheck
# checks the argument as a string regardless.
cat > "$out/suppressions" <<'EOF'
{
   mount-without-fstype
   Memcheck:Param
   mount(type)
   fun:mount
   ...
}
EOF
vg=(valgrind --tool=memcheck --track-origins=yes --leak-check=no --trace-children=no
    --suppressions="$out/suppressions" --log-file="$out/vg.%p")

# The stand-in: the binary lib.sh gives it (AUTHPROXY_WRAPPED), under valgrind. Called
# through a link named authproxy-cni (test_cni), it runs the binary as that name too.
ln -s "$dir/proxy/authproxy" "$out/bin/cni/authproxy-cni"
{
  echo '#!/bin/sh'
  echo '# scripts/memcheck.sh: authproxy under valgrind, for tests/integration/lib.sh'
  echo 'bin=$AUTHPROXY_WRAPPED'
  echo "[ \"\${0##*/}\" != authproxy-cni ] || bin=$out/bin/cni/authproxy-cni"
  printf 'exec'
  printf ' %q' "${vg[@]}"
  echo ' "$bin" "$@"'
} > "$out/bin/authproxy"
chmod 755 "$out/bin/authproxy"

status=0
# Unit tests and fuzz replays: each ctest command as it is, under valgrind.
tests=$(ctest --test-dir "$dir" --show-only=json-v1 -L 'unit|fuzz' "${CTEST_ARGS[@]}" |
  python3 -c 'import json, shlex, sys
for t in json.load(sys.stdin)["tests"]:
    print(t["name"], shlex.join(t["command"]))')
while read -r name cmd; do
  [ -n "$name" ] || continue
  eval "set -- $cmd"
  if (cd "$dir/tests" && "${vg[@]}" --error-exitcode=99 "$@" > "$out/${name//\//_}.out" 2>&1); then
    echo "ok    $name"
  else
    echo "FAIL  $name (output: $out/${name//\//_}.out)"
    status=1
  fi
done <<< "$tests"

# Integration and adversarial tests: authproxy under valgrind through the stand-in.
AUTHPROXY_WRAPPER=$out/bin/authproxy \
  ctest --test-dir "$dir" --output-on-failure -j 1 -L 'integration|adversarial' \
    "${CTEST_ARGS[@]}" || status=1

# A report without errors ends "ERROR SUMMARY: 0 errors"; one whose process exec'd
# (a jail's CMD) or was killed has no summary, and counts only if it holds an error.
bad=$(grep -L 'ERROR SUMMARY: 0 errors' "$out"/vg.* 2>/dev/null |
  xargs -r grep -l -E '^==[0-9]+== +(at|by) 0x' || true)
if [ -n "$bad" ]; then
  echo
  echo "memcheck reports with errors ($(echo "$bad" | wc -l)):"
  for f in $bad; do
    echo "--- $f"
    grep -E '^==[0-9]+== (Invalid|Conditional|Use of uninit|Syscall param|Mismatched|Source and dest|Argument|Jump to)' "$f" |
      sed 's/^==[0-9]*== //' | sort | uniq -c | head -n 8
  done
  status=1
else
  echo "no memcheck error in $(find "$out" -name 'vg.*' | wc -l) processes"
fi
exit "$status"
