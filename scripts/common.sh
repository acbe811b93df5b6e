# Shell helpers shared by the tests (tests/integration/lib.sh), the benchmark and the
# demo; sourced.

# cpu_ticks PID: CPU clock ticks (getconf CLK_TCK a second) that process PID has
# used, user and system, all its threads.
cpu_ticks() {
  local line rest
  read -r line < "/proc/$1/stat"
  rest=${line##*) }
  # shellcheck disable=SC2086
  set -- $rest
  echo $(( ${12} + ${13} ))
}

# ctest_args_after_dashes "$@": a hand-run tool's arguments, [-- CTEST_ARGS...], into
# the array CTEST_ARGS; anything else is a usage error (status 2).
ctest_args_after_dashes() {
  CTEST_ARGS=()
  [ $# -gt 0 ] || return 0
  if [ "$1" != -- ]; then
    echo "usage: $0 [-- CTEST_ARGS...]" >&2
    exit 2
  fi
  shift
  CTEST_ARGS=("$@")
}

# proc_status PID FIELD: the value of FIELD (e.g. VmRSS, voluntary_ctxt_switches) in
# /proc/PID/status, without its unit.
proc_status() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# wait_for COND [SECS]: polls the shell condition COND every 50 ms for at most SECS
# seconds (default 10); on timeout says what it waited for and exits 1.
wait_for() {
  local cond=$1 secs=${2:-10} i
  for ((i = 0; i < secs * 20; i++)); do
    if eval "$cond"; then return 0; fi
    sleep 0.05
  done
  echo "FAIL: timed out after ${secs}s waiting for: $cond" >&2
  exit 1
}

# make_ca DIR NAME...: a throwaway test CA (DIR/ca.pem, DIR/ca.key, ECDSA P-256, two
# days) and one server certificate it signed (DIR/server.pem, DIR/server.key) for the
# given DNS names (the first is the subject CN) and 127.0.0.1.
make_ca() {
  local dir=$1; shift
  local san="IP:127.0.0.1" n
  for n in "$@"; do san="$san,DNS:$n"; done
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=authproxy test CA $$" -keyout "$dir/ca.key" -out "$dir/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    "$san" > "$dir/ext.cnf"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 2 -extfile "$dir/ext.cnf" -out "$dir/server.pem" 2>/dev/null
}
