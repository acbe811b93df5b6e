# Helpers shared by the adversarial tests, on top of tests/integration/lib.sh (source
# that first). Not a test itself: ctest only runs test_*.sh.

ADV_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# load_results FILE: parses FILE (JSON lines as printed by advlib.emit) into
# ADV_RESULTS once, so that result lookups need no Python start each. Call it in the
# test's own shell after FILE is written: lookups run in $(...) subshells, which
# cannot fill the parent's cache.
declare -gA ADV_RESULTS=() ADV_RESULTS_STAMP=()
load_results() {
  local k v
  while IFS= read -r -d '' k && IFS= read -r -d '' v; do
    ADV_RESULTS["$1|$k"]=$v
  done < <("$PY" - "$1" <<'PYEOF'
import json, sys
seen = set()
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    case = r.get("case")
    if case is None or case in seen:
        continue
    seen.add(case)
    sys.stdout.write("%s|\0present\0" % case)
    for k, v in r.items():
        v = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
        sys.stdout.write("%s|%s\0%s\0" % (case, k, v.replace("\0", "")))
PYEOF
)
  ADV_RESULTS_STAMP[$1]=$(stat -c '%s %.9Y %i' "$1")
}

# result FILE CASE FIELD: prints FIELD of the first JSON line whose "case" is CASE in
# FILE, or "missing". Lists and objects print as JSON.
result() {
  if [ "${ADV_RESULTS_STAMP[$1]:-}" != "$(stat -c '%s %.9Y %i' "$1")" ]; then
    load_results "$1"
  fi
  printf '%s\n' "${ADV_RESULTS["$1|$2|$3"]-missing}"
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

# ---- a stand-in for the host: the proxy's own namespace with a watched resolver ----
#
# host_ns_start [--answer SUFFIX=IP]...: creates a namespace (lo only) standing in
# for the host the proxy runs on. Its resolver is tests/tools/fake_resolver.py on
# 127.0.0.1:53, which logs every query the proxy's getaddrinfo makes to
# $T/resolver.jsonl. Names not listed with --answer get NXDOMAIN. Nothing a test
# run this way does can reach the real host's resolver. Sets HNS.
host_ns_start() {
  HNS=$(make_netns host)
  # A default route via lo: a packet to any address passes the output hook (and is
  # counted below) instead of failing with ENETUNREACH before it.
  ip -n "$HNS" route add default dev lo src 127.0.0.1
  ip netns exec "$HNS" nft -f - <<'NFT'
table inet watch {
  counter dns_udp { }
  counter dns_tcp { }
  counter offhost { }
  chain out {
    type filter hook output priority 0; policy accept;
    udp dport 53 counter name "dns_udp"
    tcp dport 53 tcp flags & (syn | ack) == syn counter name "dns_tcp"
    ip daddr != 127.0.0.0/8 counter name "offhost"
    ip6 daddr != ::1 counter name "offhost"
  }
}
NFT
  printf 'nameserver 127.0.0.1\noptions attempts:1 timeout:2\n' > "$T/host-resolv.conf"
  : > "$T/resolver.jsonl"
  ip netns exec "$HNS" "$PY" "$TOOLS/fake_resolver.py" --log "$T/resolver.jsonl" \
    --ready "$T/resolver.ready" "$@" 2> "$T/resolver.log" &
  PIDS+=($!)
  wait_for "[ -s '$T/resolver.ready' ]" 10
}

# host_ns_ipv4: gives $HNS a non-loopback IPv4 address (TEST-NET-1, never routed), so
# that getaddrinfo's AI_ADDRCONFIG there (the proxy's) asks for A records at all.
host_ns_ipv4() { ip -n "$HNS" addr add 192.0.2.10/32 dev lo; }

# hjail ARGS... -- CMD: authproxy jail run inside $HNS, with /etc/resolv.conf (in a
# private mount namespace) pointing at the fake resolver.
hjail() {
  ip netns exec "$HNS" unshare -m --propagation private \
    sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$T/host-resolv.conf" \
    "$AUTHPROXY" jail "$@"
}

# hserve_start [SERVE_ARG...]: serve_start inside $HNS, with /etc/resolv.conf (in a
# private mount namespace) pointing at the fake resolver.
hserve_start() {
  serve_start --wrap ip netns exec "$HNS" unshare -m --propagation private \
    sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$T/host-resolv.conf" -- "$@"
}

# hupstream NAME [CERT KEY]: start_upstream, inside $HNS (on 127.0.0.1 there, or on
# $HUP_BIND).
hupstream() {
  local name=$1 cert=${2:-} key=${3:-}
  local args=(--port-file "$T/$name.port" --log "$T/$name.jsonl" --bind "${HUP_BIND:-127.0.0.1}")
  [ -n "$cert" ] && args+=(--cert "$cert" --key "$key")
  : > "$T/$name.jsonl"
  ip netns exec "$HNS" "$PY" "$TOOLS/fake_upstream.py" "${args[@]}" 2> "$T/$name.log" &
  PIDS+=($!)
  wait_for "[ -s '$T/$name.port' ]" 10
  printf -v "${name}_PORT" '%s' "$(cat "$T/$name.port")"
}

# host_counter NAME: packets counted by the $HNS output counter NAME: dns_udp (UDP
# datagrams to port 53, from anyone to anywhere), dns_tcp (TCP connections opened to
# port 53), offhost (packets to any address but loopback).
host_counter() {
  ip netns exec "$HNS" nft list counter inet watch "$1" |
    awk '/packets/ { for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }'
}

# resolved EXPR: evaluates a Python expression over `qs`, the queries the fake
# resolver received (dicts with name, qtype, transport); prints the result.
resolved() {
  "$PY" - "$T/resolver.jsonl" "$1" <<'PYEOF'
import json, sys
qs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
r = eval(sys.argv[2])
print(r if not isinstance(r, (dict, list)) else json.dumps(r))
PYEOF
}

# serve_start [--wrap CMD... --] [SERVE_ARG...]: starts `authproxy serve` in the
# background with its state in $T/state, its control socket at $T/c.sock, a 1 s drain
# and SERVE_ARGs, logging to $T/serve.log; run under CMD when given (prlimit, ip netns
# exec ...: CMD must exec the daemon, so that the pid is the daemon's). Waits until it
# answers; sets serve_pid; defines ctl (authproxy ctl on that socket).
serve_start() {
  local wrap=()
  if [ "${1:-}" = --wrap ]; then
    shift
    while [ "$1" != -- ]; do
      wrap+=("$1")
      shift
    done
    shift
  fi
  "${wrap[@]}" "$AUTHPROXY" serve --state-dir "$T/state" --control "$T/c.sock" \
    --drain-timeout 1 "$@" >> "$T/serve.log" 2>&1 &
  serve_pid=$!
  PIDS+=($serve_pid)
  wait_for "[ -S '$T/c.sock' ] && '$AUTHPROXY' ctl --control '$T/c.sock' health >/dev/null 2>&1"
}
ctl() { "$AUTHPROXY" ctl --control "$T/c.sock" "$@"; }

# flood NS TAG KIND N [SERVER]: runs tests/tools/flood.py KIND N inside namespace NS in
# the background (FLOOD_PID; output in $T/flood-TAG.log) and waits until it has tried
# all N. KIND conns: N connections the fake upstream holds (api.example.com must point
# at it); then also waits until each has left the proxy's listener's accept queue: the
# daemon has taken it, refused it, or (out of descriptors) had libuv drop it. KIND dns:
# N DNS over TCP clients, one query each; the log's first line is how many were
# answered.
flood() {
  local ns=$1 tag=$2 kind=$3 n=$4 port
  shift 4
  rm -f "$T/$tag-sent"
  ip netns exec "$ns" "$PY" "$TOOLS/flood.py" "$kind" "$n" "$T/$tag-sent" "$@" \
    > "$T/flood-$tag.log" 2>&1 &
  PIDS+=($!)
  FLOOD_PID=$!
  wait_for "[ -e '$T/$tag-sent' ]" 60
  [ "$kind" = conns ] || return 0
  port=$(ip netns exec "$ns" ss -Hltn | awk "$LISTENER_AWK" | head -1)
  wait_for "[ \"\$(ip netns exec '$ns' ss -Hltn 'sport = :$port' | awk '{ s += \$2 } END { print s + 0 }')\" = 0 ]" 30
}
