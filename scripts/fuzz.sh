#!/usr/bin/env bash
# Fuzzes the parsers with libFuzzer: builds every tests/fuzz/fuzz_<target>.c with
# clang, AddressSanitizer and UndefinedBehaviorSanitizer (build-fuzz/), runs each
# target for SECONDS with its seed corpus (tests/fuzz/corpus/<target>/) and its
# dictionary (tests/fuzz/<target>.dict, if there is one), and reports what it found.
#
#   scripts/fuzz.sh                    every target, 60 s each
#   scripts/fuzz.sh 300 dns httphead   those two, 5 minutes each
#   FUZZ_MERGE=1 scripts/fuzz.sh 600   also merge inputs that add coverage into the
#                                      seed corpus (minimized; review before committing)
#
# New inputs go to build-fuzz/fuzz-out/<target>/corpus (seeds are never modified
# unless FUZZ_MERGE=1); crashes, leaks, timeouts and out-of-memory inputs go to
# build-fuzz/fuzz-out/<target>/artifacts. Exits 1 if any target found one. A crasher,
# once fixed, belongs in tests/fuzz/corpus/<target>/ so that ctest replays it on every
# run (fuzz-replay/<target>). Targets run one after another; the build uses -j2.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build="$top/build-fuzz"
seconds=60
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then
  seconds=$1
  shift
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$top"/tests/fuzz/fuzz_*.c; do
    t=$(basename "$f" .c)
    targets+=("${t#fuzz_}")
  done
fi
for t in "${targets[@]}"; do
  if [ ! -f "$top/tests/fuzz/fuzz_$t.c" ]; then
    echo "fuzz.sh: no target '$t' (tests/fuzz/fuzz_$t.c); targets:" \
      "$(cd "$top/tests/fuzz" && ls fuzz_*.c | sed 's/^fuzz_//; s/\.c$//' | tr '\n' ' ')" >&2
    exit 2
  fi
done
if ! command -v clang >/dev/null 2>&1; then
  echo "fuzz.sh: clang is needed for libFuzzer (apt-get install clang)" >&2
  exit 2
fi

echo "=== building ${targets[*]} in $build (clang, libFuzzer, ASan+UBSan)"
CC=clang cmake -S "$top" -B "$build" -DAUTHPROXY_FUZZ=ON -DAUTHPROXY_SANITIZE=ON \
  -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build "$build" -j 2 --target $(printf 'fuzz_%s ' "${targets[@]}") >/dev/null

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
found=0
summary=()
for t in "${targets[@]}"; do
  bin="$build/tests/fuzz_$t"
  out="$build/fuzz-out/$t"
  seeds="$top/tests/fuzz/corpus/$t"
  mkdir -p "$out/corpus" "$out/artifacts" "$seeds"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$out/artifacts/")
  [ -f "$top/tests/fuzz/$t.dict" ] && args+=(-dict="$top/tests/fuzz/$t.dict")
  before=$(ls "$out/artifacts" | wc -l)
  echo "=== fuzz_$t: ${seconds}s, $(ls "$seeds" | wc -l) seeds"
  set +e
  "$bin" "${args[@]}" "$out/corpus" "$seeds" > "$out/log" 2>&1
  rc=$?
  set -e
  # A target that crashes while loading its corpus prints no statistics: report it
  # below rather than let pipefail end the script without a word.
  execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$out/log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$out/log" | tail -1 | awk '{ print $2 }' || true)
  corpus=$(ls "$out/corpus" | wc -l)
  new=$(( $(ls "$out/artifacts" | wc -l) - before ))
  line="fuzz_$t: ${execs:-?} runs, coverage ${cov:-?} edges, working corpus $corpus inputs"
  if [ $rc -ne 0 ] || [ $new -gt 0 ]; then
    found=1
    line="$line, FOUND $new artifact(s) (exit $rc)"
    echo "$line"
    grep -E 'ERROR: |SUMMARY: |runtime error|Test unit written' "$out/log" | head -20 | sed 's/^/    /'
    for a in $(ls -t "$out/artifacts" | head -n "$((new > 0 ? new : 1))"); do
      echo "    reproduce: $bin $out/artifacts/$a"
      echo "    after the fix: cp $out/artifacts/$a $seeds/"
    done
  else
    echo "$line, nothing found"
  fi
  summary+=("$line")
  if [ "${FUZZ_MERGE:-0}" = 1 ]; then
    n0=$(ls "$seeds" | wc -l)
    "$bin" -merge=1 "$seeds" "$out/corpus" > "$out/merge.log" 2>&1 || true
    echo "    merged $(( $(ls "$seeds" | wc -l) - n0 )) inputs into $seeds"
  fi
done
echo "=== summary"
printf '%s\n' "${summary[@]}"
exit $found
