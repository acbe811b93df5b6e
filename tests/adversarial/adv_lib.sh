# Helpers shared by the adversarial tests, on top of tests/integration/lib.sh (source
# that first). Not a test itself: ctest only runs test_*.sh.

ADV_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# result FILE CASE FIELD: prints FIELD of the JSON line whose "case" is CASE in FILE
# (as printed by advlib.emit), or "missing".
result() {
  "$PY" - "$1" "$2" "$3" <<'PYEOF'
import json, sys
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    if r.get("case") == sys.argv[2]:
        v = r.get(sys.argv[3], "missing")
        print(json.dumps(v) if isinstance(v, (list, dict)) else v)
        break
else:
    print("missing")
PYEOF
}

# assert_no_upstream_answer FILE CASE: the sandbox got a 4xx/5xx from the proxy
# itself, or a reset / closed / refused connection; never an upstream's 200 or 101.
assert_no_upstream_answer() {
  local status
  status=$(result "$1" "$2" status)
  case "$status" in
    *" 200 "*|*" 101 "*|missing) fail "$2: the sandbox got '$status'" ;;
  esac
}

# proxy_rss_kb PID: resident set size of a process in KiB (VmRSS).
proxy_rss_kb() {
  awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# proxy_rchar PID: bytes the process has read through system calls so far.
proxy_rchar() {
  awk '/^rchar:/ { print $2 }' "/proc/$1/io"
}

# wait_quiet PID SECONDS: waits until the process has read nothing new for 1 s (the
# flow it serves is stalled by backpressure), at most SECONDS; fails on timeout.
wait_quiet() {
  local pid=$1 secs=$2 i last now same=0
  last=$(proxy_rchar "$pid")
  for ((i = 0; i < secs * 10; i++)); do
    sleep 0.1
    now=$(proxy_rchar "$pid")
    if [ "$now" = "$last" ]; then
      same=$((same + 1))
      [ $same -ge 10 ] && return 0
    else
      same=0
      last=$now
    fi
  done
  fail "process $pid kept reading for ${secs}s; no backpressure stall observed"
}

# listener_port_of_jail: run inside a jail: prints the proxy's TCP listener port (the
# port of the LISTEN socket on 0.0.0.0 that is not the DNS port).
# Usage inside CMD: ss -Hltn | awk ...; kept here as the awk program for reuse.
LISTENER_AWK='$4 ~ /^0\.0\.0\.0:/ { split($4, a, ":"); if (a[2] != "53") print a[2] }'
