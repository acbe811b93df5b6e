#!/usr/bin/env bash
# Would splice(2) make authproxy's tunnels faster? Downloads of MIB MiB over loopback
# in a namespace this script creates: direct, through a relay that copies through a
# 256 KiB buffer (what the proxy does), and through one that splices via a pipe. The
# relays run on PROXY_CPU (default 0), the source and the downloader on LOAD_CPU
# (default 1), as in run.sh. Rounds alternate the three paths; medians and ratios to
# direct are printed. Needs root (a network namespace) and a C compiler.
#
#   scripts/bench/splice.sh [ROUNDS [MIB]]     (defaults 5 rounds of 3 downloads, 100 MiB)
#   PIPE_KIB=256 scripts/bench/splice.sh       the splicing relay's pipe size (default 1024)
set -euo pipefail

bench=$(cd "$(dirname "$0")" && pwd)
. "$bench/../common.sh"
ROUNDS=${1:-5}
MIB=${2:-100}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
[ "$(id -u)" = 0 ] || { echo "splice.sh: needs root (it creates a network namespace)" >&2; exit 1; }

T=$(mktemp -d /tmp/authproxy-splice.XXXXXX)
NS=ap-splice-$$
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT

PIPE_KIB=${PIPE_KIB:-1024}
cc -O2 -Wall -DPIPE_BYTES=$((PIPE_KIB * 1024)) -o "$T/splicebench" "$bench/splicebench.c"
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
run() { ip netns exec "$NS" taskset -c "$1" "$T/splicebench" "${@:2}"; }
# In the background as one simple command each, so that $! is the server itself (ip
# and taskset exec it), and with their own output, so that none holds ours open.
start() {
  ip netns exec "$NS" taskset -c "$1" "$T/splicebench" "${@:2}" > /dev/null &
  PIDS+=($!)
}
start "$LOAD_CPU" source 9001 "$MIB"
start "$PROXY_CPU" relay 9002 9001 copy
start "$PROXY_CPU" relay 9003 9001 splice
for port in 9001 9002 9003; do
  wait_for "ip netns exec $NS ss -Hltn 'sport = :$port' | grep -q ."
done

for ((r = 0; r < ROUNDS; r++)); do
  run "$LOAD_CPU" sink 9001 3 >> "$T/direct"
  run "$LOAD_CPU" sink 9002 3 >> "$T/copy"
  run "$LOAD_CPU" sink 9003 3 >> "$T/splice"
done

python3 - "$T" "$MIB" "$PIPE_KIB" <<'PY'
import statistics, sys
t, mib, pipe = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = {k: statistics.median(float(x) for x in open("%s/%s" % (t, k))) for k in ("direct", "copy", "splice")}
print("%s MiB downloads over loopback, median MiB/s (ratio to direct):" % mib)
for k, label in (("direct", "direct"), ("copy", "relay, read/write 256 KiB"), ("splice", "relay, splice via a %d KiB pipe" % pipe)):
    print("  %-32s %7.0f  %.2fx" % (label, m[k], m[k] / m["direct"]))
print("splice / copy: %.2fx" % (m["splice"] / m["copy"]))
PY
