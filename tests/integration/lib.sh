# shellcheck shell=bash
# Helpers shared by the integration tests (source it after `set -euo pipefail`):
# privilege checks, namespaces and background processes that are cleaned up on exit,
# bounded waits, and check/fail reporting. Every wait is bounded in count and time.

LIB_NETNS=()   # namespaces this test created (deleted on exit)
LIB_PIDS=()    # processes this test started (killed on exit)
LIB_TMP=""     # private temporary directory (removed on exit)
LIB_CHECKS=0

# Exit 77 (ctest: skipped) unless root.
require_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "SKIP: needs root (network namespaces, nf_tables)"
    exit 77
  fi
}

# Exit 77 unless every named command exists.
require_cmd() {
  local c
  for c in "$@"; do
    if ! command -v "$c" >/dev/null 2>&1; then
      echo "SKIP: $c not installed"
      exit 77
    fi
  done
}

lib_cleanup() {
  local rc=$? pid ns
  set +e
  for pid in "${LIB_PIDS[@]}"; do
    kill "$pid" 2>/dev/null
  done
  for pid in "${LIB_PIDS[@]}"; do
    wait "$pid" 2>/dev/null
  done
  for ns in "${LIB_NETNS[@]}"; do
    ip netns del "$ns" 2>/dev/null
  done
  [ -n "$LIB_TMP" ] && rm -rf "$LIB_TMP"
  exit "$rc"
}

# Sets up the private temporary directory and the cleanup trap.
lib_init() {
  LIB_TMP=$(mktemp -d "${TMPDIR:-/tmp}/authproxy-test.XXXXXX")
  trap lib_cleanup EXIT
  trap 'exit 130' INT TERM
}

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# check DESCRIPTION CMD...: runs CMD; reports and exits on failure.
check() {
  local what=$1
  shift
  LIB_CHECKS=$((LIB_CHECKS + 1))
  if "$@"; then
    echo "ok $LIB_CHECKS - $what"
  else
    fail "$what (command: $*)"
  fi
}

# check_not DESCRIPTION CMD...: CMD must fail.
check_not() {
  local what=$1
  shift
  LIB_CHECKS=$((LIB_CHECKS + 1))
  if "$@"; then
    fail "$what (command unexpectedly succeeded: $*)"
  else
    echo "ok $LIB_CHECKS - $what"
  fi
}

# netns_new NAME: creates a namespace that is deleted on exit (lo left down).
netns_new() {
  ip netns add "$1"
  LIB_NETNS+=("$1")
}

# in_ns NAME CMD...: runs CMD inside namespace NAME.
in_ns() {
  local ns=$1
  shift
  ip netns exec "$ns" "$@"
}

# veth_pair NS_A IF_A NS_B IF_B: a veth pair between two namespaces, both ends up.
veth_pair() {
  ip link add "$2" netns "$1" type veth peer name "$4" netns "$3"
  ip -n "$1" link set "$2" up
  ip -n "$3" link set "$4" up
}

# bg_start LOGFILE CMD...: starts CMD in the background with stdout+stderr to LOGFILE;
# the pid is killed on exit and left in BG_PID.
bg_start() {
  local log=$1
  shift
  "$@" >"$log" 2>&1 &
  BG_PID=$!
  LIB_PIDS+=("$BG_PID")
}

# bg_stop PID: stops a process started with bg_start and waits for it.
bg_stop() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# wait_until SECONDS DESCRIPTION CMD...: polls CMD every 50 ms until it succeeds, at
# most SECONDS; fails the test on timeout.
wait_until() {
  local limit=$1 what=$2 i
  shift 2
  for ((i = 0; i < limit * 20; i++)); do
    if "$@"; then
      return 0
    fi
    sleep 0.05
  done
  fail "timed out after ${limit}s waiting for $what"
}

# file_has FILE PATTERN: FILE contains a line matching the extended regex PATTERN.
file_has() {
  grep -Eq -- "$2" "$1" 2>/dev/null
}
