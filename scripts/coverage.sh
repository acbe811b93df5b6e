#!/usr/bin/env bash
# Line and branch coverage of the test suite: which code no test runs.
#
#   scripts/coverage.sh                 whole suite (root: integration tests too)
#   scripts/coverage.sh -- -R unit      extra arguments after -- go to ctest
#
# Builds build-cov/ with gcov instrumentation (-DAUTHPROXY_COVERAGE=ON, Debug),
# clears the counters of any earlier run, runs ctest, and writes a summary per file
# of proxy/, rules/ and netns/ to build-cov/coverage.txt (the "Missing" column lists
# the lines no test ran) and an annotated HTML tree to build-cov/coverage/index.html.
# Needs gcovr (Debian package gcovr). A hand-run tool, not part of scripts/test.sh:
# coverage is for finding what no test pins, not a figure to hold a commit to.
#
# Counters are written when a process exits (or before its _exit, see
# proxy/coverage.h). A process killed by a signal writes none (test_serve ends one
# daemon with SIGKILL), nor does one running as another user (setpriv, --user): what
# only such processes ran reads as unrun. Check a gap against the tests before
# writing one.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dir=$top/build-cov
jobs=$(nproc 2>/dev/null || echo 2)
. "$top/scripts/common.sh"
ctest_args_after_dashes "$@"
if ! command -v gcovr > /dev/null; then
  echo "$0: gcovr not found: apt-get install gcovr" >&2
  exit 1
fi

cmake -S "$top" -B "$dir" -DAUTHPROXY_COVERAGE=ON -DCMAKE_BUILD_TYPE=Debug > /dev/null
cmake --build "$dir" -j "$jobs"
find "$dir" -name '*.gcda' -delete
status=0
(cd "$dir" && ctest -j "$jobs" "${CTEST_ARGS[@]}") || status=$?

mkdir -p "$dir/coverage"
filters=(--filter "$top/proxy/" --filter "$top/rules/" --filter "$top/netns/")
gcovr -r "$top" "$dir" "${filters[@]}" --exclude-throw-branches \
  --txt "$dir/coverage.txt" --html-details "$dir/coverage/index.html" --print-summary
echo "coverage: per-file summary in $dir/coverage.txt, annotated source in $dir/coverage/index.html"
[ "$status" -eq 0 ] || echo "coverage: some tests failed (ctest status $status); the figures count what ran"
exit "$status"
