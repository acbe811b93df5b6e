#!/usr/bin/env bash
# Runs the whole test suite twice: a release-like build with warnings as errors, then
# a build with AddressSanitizer and UndefinedBehaviorSanitizer. Exits non-zero if
# anything fails. Integration tests need root and are skipped (not passed) without it.
#
#   scripts/test.sh                 both passes
#   scripts/test.sh --fast          first pass only
#   scripts/test.sh -- -R unit      extra arguments after -- go to ctest
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
jobs=$(nproc 2>/dev/null || echo 2)
passes=(plain asan)
ctest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --fast) passes=(plain) ;;
    --asan-only) passes=(asan) ;;
    --) shift; ctest_args=("$@"); break ;;
    *) echo "usage: $0 [--fast|--asan-only] [-- CTEST_ARGS...]" >&2; exit 2 ;;
  esac
  shift
done

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:handle_abort=1:detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

status=0
for pass in "${passes[@]}"; do
  dir="$top/build"
  opts=(-DAUTHPROXY_WERROR=ON)
  if [ "$pass" = asan ]; then
    dir="$top/build-asan"
    opts+=(-DAUTHPROXY_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug)
  fi
  echo "=== test pass: $pass ($dir)"
  cmake -S "$top" -B "$dir" "${opts[@]}" >/dev/null
  cmake --build "$dir" -j "$jobs"
  if ! (cd "$dir" && ctest --output-on-failure -j "$jobs" "${ctest_args[@]}"); then
    echo "=== test pass $pass: FAILED"
    status=1
  fi
done
exit $status
