#!/usr/bin/env bash
# Data races and lock-order inversions in the test suite, found by ThreadSanitizer.
#
#   scripts/tsan.sh                 whole suite (root: integration tests too)
#   scripts/tsan.sh -- -R callback  extra arguments after -- go to ctest
#
# Builds build-tsan/ with -DAUTHPROXY_TSAN=ON and runs ctest. The threads it watches
# are libuv's pool (the CAs made ahead, resolver lookups, credential callbacks' work),
# the namespace helper thread of each attach and the nf_tables socket closer, beside
# the event loop. Every process of a test, daemons and jails included, writes its
# reports to build-tsan/tsan/report.PID (its stderr is often a log the test deletes).
# Exits 1 when a test failed or any report was written, listing them.
#
# A hand-run tool, not part of scripts/test.sh: it would double the suite's time.
# Tests that cannot run under it skip (the allocation shims, the memory-trim figures,
# busy polling's sleep counts, a fork of a threaded process that starts threads).
# Reports name frames of libuv, mbedTLS and glibc without line numbers (they are not
# instrumented); their accesses are seen through the calls into them.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
dir=$top/build-tsan
jobs=$(nproc 2>/dev/null || echo 2)
. "$top/scripts/common.sh"
ctest_args_after_dashes "$@"

cmake -S "$top" -B "$dir" -DAUTHPROXY_TSAN=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DAUTHPROXY_WERROR=ON > /dev/null
cmake --build "$dir" -j "$jobs"
rm -rf "$dir/tsan"
mkdir -p "$dir/tsan"

# One test at a time: the instrumented daemons are several times slower, and the
# tests' bounded waits were sized for the plain build.
status=0
TSAN_OPTIONS="log_path=$dir/tsan/report halt_on_error=0 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" \
  ctest --test-dir "$dir" --output-on-failure -j 1 "${CTEST_ARGS[@]}" || status=1

reports=$(find "$dir/tsan" -type f -name 'report.*' | sort)
if [ -n "$reports" ]; then
  echo
  echo "ThreadSanitizer reports ($(echo "$reports" | wc -l)):"
  for f in $reports; do
    echo "--- $f"
    grep -E '^(WARNING|ERROR|==[0-9]+==)' "$f" | head -n 5
  done
  status=1
else
  echo "no ThreadSanitizer report"
fi
exit "$status"
