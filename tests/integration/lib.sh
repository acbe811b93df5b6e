# Shared helpers for integration tests (bash). Source it first thing:
#   . "$(dirname "$0")/../integration/lib.sh"
# Tests need root (they create network namespaces); without it they exit 77 (skip).
# Every test gets a private directory $T, and everything it starts through these
# helpers is killed (by pid) and removed on exit.

set -euo pipefail

SRC=${AUTHPROXY_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
AUTHPROXY=${AUTHPROXY:-$SRC/build/proxy/authproxy}
# The build tree of the test tools (ctest sets it; by hand, the tree of $AUTHPROXY).
BUILD=${AUTHPROXY_BUILD:-$(cd "$(dirname "$AUTHPROXY")/.." && pwd)}
TOOLS=$SRC/tests/tools
# AUTHPROXY_WRAPPER (scripts/memcheck.sh): a program run in place of $AUTHPROXY, with
# the same arguments; it finds the binary it wraps in AUTHPROXY_WRAPPED.
if [ -n "${AUTHPROXY_WRAPPER:-}" ]; then
  export AUTHPROXY_WRAPPED=$AUTHPROXY
  AUTHPROXY=$AUTHPROXY_WRAPPER
fi
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: $(basename "$0") needs root (network namespaces)"
  exit 77
fi
if [ ! -x "$AUTHPROXY" ]; then
  echo "FAIL: authproxy binary not found at $AUTHPROXY (build first)" >&2
  exit 1
fi

T=$(mktemp -d /tmp/authproxy-it.XXXXXX)
chmod 755 "$T"
# The nft tables of the host's own namespace: a test must leave them as it found them
# (cleanup checks), or every later test runs under rules it left behind (a container
# runtime's iptables-nft tables, say, or a table meant for a test's namespace).
host_nft_tables() { nft list tables 2>/dev/null | sort; }
HOST_NFT_TABLES=$(host_nft_tables)
PIDS=()
NETNS=()
CLEANUP_HOOKS=()

cleanup() {
  local rc=$? left
  set +e
  for hook in "${CLEANUP_HOOKS[@]}"; do eval "$hook"; done
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  for ns in "${NETNS[@]}"; do ip netns del "$ns" 2>/dev/null; done
  # make_netns often runs in a command substitution (a subshell), where it cannot add
  # to NETNS: its names end in -$$, so find them by name.
  for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }' | grep -E "^ap-.*-$$\$"); do
    ip netns del "$ns" 2>/dev/null
  done
  left=$(comm -13 <(printf '%s\n' "$HOST_NFT_TABLES") <(host_nft_tables) | tr '\n' ' ')
  if [ -n "$left" ]; then
    echo "FAIL: $(basename "$0") left nft tables in the host namespace: ${left% }" \
      "(delete them, and make the test clean up)" >&2
    [ $rc -eq 0 ] && rc=1
  fi
  if [ $rc -ne 0 ] && [ -z "${KEEP_TMP:-}" ]; then
    echo "--- logs of the failed test ($T):"
    for f in "$T"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 40 "$f"; }; done
  fi
  rm -rf "$T"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }
# built_with asan|tsan: $AUTHPROXY was built with that sanitizer (AUTHPROXY_SANITIZE,
# AUTHPROXY_TSAN). Not `ldd | grep -q`: grep's early exit can fail ldd with SIGPIPE,
# and pipefail the test's check.
built_with() { [[ "$(ldd "${AUTHPROXY_WRAPPED:-$AUTHPROXY}" 2>/dev/null)" == *"lib$1"* ]]; }

assert_eq() { [ "$1" = "$2" ] || fail "${3:-values differ}: expected '$2', got '$1'"; }
assert_contains() { case "$1" in *"$2"*) ;; *) fail "${3:-missing text}: '$2' not in: $1" ;; esac; }
assert_not_contains() { case "$1" in *"$2"*) fail "${3:-unexpected text}: '$2' found in: $1" ;; *) ;; esac; }

# The allocation-failure shim (tests/tools/failmalloc.c); the sanitizer build has none.
FAILMALLOC=$BUILD/tests/libfailmalloc.so

# sweep_allocations EXE STDIN CHECK CMD...: runs CMD (standard input from the file
# STDIN) once for each allocation the program named EXE makes in it, that allocation
# failing, until a run makes no allocation past the failing one. After each run,
# CHECK N runs with the status in RC, standard output in OUT and error in ERR. Sets
# SWEPT to the allocations swept. Needs $FAILMALLOC.
sweep_allocations() {
  local exe=$1 in=$2 check=$3 n
  shift 3
  for ((n = 1; n <= 500; n++)); do
    : > "$T/sweep.log"
    set +e
    FAILMALLOC_EXE=$exe FAILMALLOC_NTH=$n FAILMALLOC_LOG="$T/sweep.log" \
      LD_PRELOAD="$FAILMALLOC" timeout 20 "$@" < "$in" > "$T/sweep.out" 2> "$T/sweep.err"
    RC=$?
    set -e
    grep -q "allocation #$n of" "$T/sweep.log" || break
    OUT=$(cat "$T/sweep.out")
    ERR=$(cat "$T/sweep.err")
    "$check" "$n"
  done
  [ "$n" -gt 1 ] && [ "$n" -le 500 ] ||
    fail "$*: the allocation sweep ended at $n: $(cat "$T/sweep.log")"
  SWEPT=$((n - 1))
}

# A network namespace that is deleted on exit; name carries the test's pid.
make_netns() {
  local ns="ap-$1-$$"
  # A namespace of this name is a dead run's (this pid is ours while we live) that
  # was killed before its trap ran: it would make `ip netns add` fail.
  ip netns del "$ns" 2>/dev/null || true
  ip netns add "$ns"
  NETNS+=("$ns")
  ip -n "$ns" link set lo up
  echo "$ns"
}

# wait_for COND [SECS] and make_ca DIR NAME... (a test CA and a server certificate).
. "$SRC/scripts/common.sh"

# start_tcp_server NAME [--in NS] [ARG...]: tests/tools/tcp_server.py (with ARGs: a
# banner, a delay, how it replies) on 127.0.0.1, of namespace NS when given; sets
# ${NAME}_PORT.
start_tcp_server() {
  local name=$1 wrap=()
  shift
  if [ "${1:-}" = --in ]; then
    wrap=(ip netns exec "$2")
    shift 2
  fi
  "${wrap[@]}" "$PY" "$TOOLS/tcp_server.py" "$T/$name.port" "$@" 2> "$T/$name.log" &
  PIDS+=($!)
  wait_for "[ -s '$T/$name.port' ]" 10
  printf -v "${name}_PORT" '%s' "$(cat "$T/$name.port")"
}

# upstream_chain_refused WHY: serves $T/chain.pem (its leaf's key in $T/leaf.key) as
# the upstream of api.example.com, which a rule intercepts, and requires that curl in
# a jail gets 502 (audited upstream_tls_failed) and that the jail's log says WHY.
upstream_chain_refused() {
  local out
  start_tcp_server chain --cert "$T/chain.pem" --key "$T/leaf.key" --reply none
  cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Team", "type": "plaintext", "value": "agents" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$chain_PORT" } } }
EOF
  out=$(jail -v --config "$T/config.json" --log "$T/audit.jsonl" --user nobody -- \
    curl -sS -m 20 -o /dev/null -w "%{http_code}" https://api.example.com/ 2> "$T/jail.log")
  assert_eq "$out" "502" "the answer"
  assert_contains "$(cat "$T/audit.jsonl")" '"reason":"upstream_tls_failed"' "the audit reason"
  assert_contains "$(cat "$T/jail.log")" "$1" \
    "the log line (a chain refused only after mbedTLS checked it has none)"
}

# start_callback [--in NS] [ARG...]: tests/tools/fake_callback.py (with ARGs) on
# 127.0.0.1, of namespace NS when given, logging to $T/cb.jsonl; sets CB to its port.
start_callback() {
  local wrap=()
  if [ "${1:-}" = --in ]; then
    wrap=(ip netns exec "$2")
    shift 2
  fi
  : > "$T/cb.jsonl"
  "${wrap[@]}" "$PY" "$TOOLS/fake_callback.py" --log "$T/cb.jsonl" --port-file "$T/cb.port" \
    "$@" 2> "$T/cb.log" &
  PIDS+=($!)
  wait_for "[ -s '$T/cb.port' ]" 10
  CB=$(cat "$T/cb.port")
}

# start_upstream NAME [CERT KEY]: a fake upstream on 127.0.0.1; sets ${NAME}_PORT and
# logs requests as JSON lines to $T/NAME.jsonl.
start_upstream() {
  local name=$1 cert=${2:-} key=${3:-}
  local args=(--port-file "$T/$name.port" --log "$T/$name.jsonl")
  [ -n "$cert" ] && args+=(--cert "$cert" --key "$key")
  : > "$T/$name.jsonl"
  "$PY" "$TOOLS/fake_upstream.py" "${args[@]}" 2> "$T/$name.log" &
  PIDS+=($!)
  wait_for "[ -s '$T/$name.port' ]" 10
  printf -v "${name}_PORT" '%s' "$(cat "$T/$name.port")"
}

# Queries an upstream log with a Python expression over `reqs` (request records)
# and `events` (all records); prints the result.
upq() {
  "$PY" - "$T/$1.jsonl" "$2" <<'PYEOF'
import json, sys
events = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
reqs = [e for e in events if e.get("event") == "request"]
def hdr(r, name):
    return [v for k, v in r["headers"] if k.lower() == name.lower()]
r = eval(sys.argv[2])
print(r if not isinstance(r, (dict, list)) else json.dumps(r))
PYEOF
}

# api_config SECRET: the config several tests start from. $T/secrets/KEY holds SECRET, and
# $T/config.json injects "Authorization: Bearer {KEY}" into requests to api.example.com,
# which dns.remap sends to the upstream `up` (start_upstream up first).
api_config() {
  mkdir -p "$T/secrets"
  printf '%s\n' "$1" > "$T/secrets/KEY"
  cat > "$T/config.json" <<EOF
{ "rules": [ { "name": "api", "allow_plain_http": true, "match_hosts": ["api.example.com"],
    "headers": [ { "name": "Authorization", "type": "workspace_secret", "value": "Bearer {KEY}" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$up_PORT" } } }
EOF
}

# start_upload_upstream [ARGS...]: the TLS upload upstream (tests/tools/upload_upstream.py,
# ARGS passed on) for api.example.com, certified by a test CA made in $T/ca, logging to
# $T/up.jsonl; sets up_PORT, for api_config.
start_upload_upstream() {
  make_ca "$T/ca" api.example.com
  "$PY" "$TOOLS/upload_upstream.py" --port-file "$T/up.port" --log "$T/up.jsonl" \
    --cert "$T/ca/server.pem" --key "$T/ca/server.key" "$@" 2> "$T/up.log" &
  PIDS+=($!)
  wait_for "[ -s '$T/up.port' ]"
  up_PORT=$(cat "$T/up.port")
}

# jlist VALUE...: the JSON list upq prints for these strings (`jlist` alone: []).
jlist() { "$PY" -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@"; }

# jail ARGS... -- CMD: runs authproxy jail; output of CMD on stdout.
jail() { "$AUTHPROXY" jail "$@"; }

# late_loop PID STOPPED SENT [CHECK]: makes the event loop of proxy PID late, on purpose
# and deterministically. It stops PID (SIGSTOP), creates the file STOPPED for the client
# to send, waits for the client's file SENT, keeps PID stopped 1.5 s more, past the
# timeouts under test (500 ms sniffing, --idle-timeout 1), and resumes it. The timers
# then run before the loop has read what was sent. The stop must come before those
# timeouts ran out, which a loaded machine may miss: with CHECK, a shell condition
# that holds only if it did (evaluated while PID is stopped), a stop that came too
# late lets the client go and resumes PID at once, and late_loop returns 1 (the
# caller tries again).
late_loop() {
  kill -STOP "$1"
  CLEANUP_HOOKS+=("kill -CONT $1 2>/dev/null")
  if [ -n "${4:-}" ] && ! eval "$4"; then
    : > "$2"
    wait_for "[ -e '$3' ]"
    kill -CONT "$1"
    return 1
  fi
  : > "$2"
  wait_for "[ -e '$3' ]"
  sleep 1.5
  kill -CONT "$1"
}

# dialing PORT [NS]: whether this namespace (or NS) has a TCP connection to port PORT
# that is opening or open (SYN-SENT, ESTABLISHED, CLOSE-WAIT): a stopped proxy's dial
# or callback call that has not timed out (a timeout closes it).
dialing() {
  local wrap=()
  [ -n "${2:-}" ] && wrap=(ip netns exec "$2")
  "${wrap[@]}" ss -Htn state syn-sent state established state close-wait \
    "( dport = :$1 )" | grep -q .
}

# stop_in_time PID PORT [NS]: stops PID (SIGSTOP) for a test that makes its loop late
# past a timeout (a dial's, a callback call's), which the stop must come before. 0 if
# PID's connection to PORT (in NS) is still open, so that the timeout has not run out;
# else the stop came too late (a loaded machine): PID is resumed, and 1 tells the
# caller to try its scenario again. The open connection is the proof, not the time
# taken, so a proxy that times out too early fails every try.
stop_in_time() {
  kill -STOP "$1"
  CLEANUP_HOOKS+=("kill -CONT $1 2>/dev/null")
  dialing "$2" "${3:-}" && return 0
  kill -CONT "$1"
  echo "note: pid $1 stopped too late, after its timeout ran out; trying again" >&2
  return 1
}

# held_jail DIR PIECES [JAIL_ARG...]: in the background, tests/tools/tls_held.py (its
# first flight in PIECES pieces, each once DIR/go.K exists) on 127.0.0.1, and an
# authproxy jail (a 2 s --connect-timeout, and JAIL_ARGs) whose curl asks
# https://api.example.com/, which a rule intercepts and dns.remap sends to it. Sets
# port (tls_held's) and jail_pid; curl's output in DIR/out, the jail's log in
# DIR/jail.log. Needs make_ca "$T/ca" api.example.com.
held_jail() {
  local d=$1 pieces=$2
  shift 2
  mkdir -p "$d"
  "$PY" "$TOOLS/tls_held.py" "$d" "$T/ca/server.pem" "$T/ca/server.key" "$pieces" \
    2> "$d/held.log" &
  PIDS+=($!)
  wait_for "[ -s '$d/up.port' ]"
  port=$(cat "$d/up.port")
  cat > "$d/config.json" <<EOF
{ "rules": [ { "name": "api", "match_hosts": ["api.example.com"],
    "headers": [ { "name": "X-Team", "type": "plaintext", "value": "agents" } ] } ],
  "dns": { "remap": { "api.example.com": "127.0.0.1:$port" } } }
EOF
  jail_curl "$d" "$d/config.json" https://api.example.com/ --upstream-ca "$T/ca/ca.pem" \
    --connect-timeout 2 "$@"
}

# jail_curl DIR CONFIG URL [JAIL_ARG...]: in the background, authproxy jail (CONFIG,
# --user nobody, JAIL_ARGs) whose curl asks URL; its output, with " code=N", in
# DIR/out, the jail's log in DIR/jail.log. Sets jail_pid.
jail_curl() {
  local d=$1 config=$2 url=$3
  shift 3
  "$AUTHPROXY" jail --config "$config" --user nobody "$@" -- \
    curl -sS -m 60 -w " code=%{http_code}" "$url" > "$d/out" 2> "$d/jail.log" &
  jail_pid=$!
  PIDS+=("$jail_pid")
}

# late_tries FUNCTION: runs FUNCTION 1, 2, 3 (the try's number) until it returns 0;
# a FUNCTION that returns 1 had its stop_in_time come too late. Fails after three.
late_tries() {
  local n
  for n in 1 2 3; do
    "$1" "$n" && return 0
  done
  fail "$1: the proxy was never stopped before its timeout ran out, in 3 tries"
}

# ---- netns-level helpers (used by tests that drive netns/ directly) ----

LIB_CHECKS=0
LIB_TMP=$T

# Kept for tests that ask explicitly; sourcing this file already did both.
require_root() { :; }
lib_init() { :; }

# require_netns_tool: sets TOOL to the built tests/tools/netns_tool (in the build
# directory ctest names, else ../../build), or fails.
require_netns_tool() {
  TOOL=$BUILD/tests/netns_tool
  [ -x "$TOOL" ] || fail "$TOOL not built"
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
  NETNS+=("$1")
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

# uplink_topology SBX UP [GST]: the capture tests' hosts. SBX gets an uplink veth
# (up0) to UP (up1): 10.199.1.0/24 and fd00:199:1::/64, SBX .1 and UP .2, SBX's default
# routes via UP. With GST, a guest behind SBX (gw0 to g0): 10.199.2.0/24 and
# fd00:199:2::/64, SBX .1 and GST .2, GST's default routes via SBX. Creates the
# namespaces (deleted on exit), lo up in each.
uplink_topology() {
  local sbx=$1 up=$2 gst=${3:-} ns
  for ns in "$sbx" "$up" $gst; do
    netns_new "$ns"
    ip -n "$ns" link set lo up
  done
  veth_pair "$sbx" up0 "$up" up1
  ip -n "$sbx" addr add 10.199.1.1/24 dev up0
  ip -n "$sbx" addr add fd00:199:1::1/64 dev up0 nodad
  ip -n "$up" addr add 10.199.1.2/24 dev up1
  ip -n "$up" addr add fd00:199:1::2/64 dev up1 nodad
  ip -n "$sbx" route add default via 10.199.1.2
  ip -n "$sbx" -6 route add default via fd00:199:1::2
  [ -n "$gst" ] || return 0
  veth_pair "$sbx" gw0 "$gst" g0
  ip -n "$sbx" addr add 10.199.2.1/24 dev gw0
  ip -n "$sbx" addr add fd00:199:2::1/64 dev gw0 nodad
  ip -n "$gst" addr add 10.199.2.2/24 dev g0
  ip -n "$gst" addr add fd00:199:2::2/64 dev g0 nodad
  ip -n "$gst" route add default via 10.199.2.1
  ip -n "$gst" -6 route add default via fd00:199:2::1
}

# answers NS EXPECTED CMD...: netns_tool's client (TOOL), run in NS, prints EXPECTED
# (a line regex).
answers() {
  local ns=$1 want=$2 out
  shift 2
  out=$(in_ns "$ns" "$TOOL" "$@" 2>&1) || return 1
  grep -Eqx -- "$want" <<<"$out"
}

# silent NS CMD...: netns_tool's client gets no answer within QUICK ms (250 unless
# the test sets QUICK).
silent() {
  local ns=$1
  shift
  ! NETNS_TOOL_WAIT_MS=${QUICK:-250} in_ns "$ns" "$TOOL" "$@" >/dev/null 2>&1
}

# bg_start LOGFILE CMD...: starts CMD in the background with stdout+stderr to LOGFILE;
# the pid is killed on exit and left in BG_PID.
bg_start() {
  local log=$1
  shift
  "$@" >"$log" 2>&1 &
  BG_PID=$!
  PIDS+=("$BG_PID")
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
