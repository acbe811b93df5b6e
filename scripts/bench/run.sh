#!/usr/bin/env bash
# Benchmarks authproxy against a direct path to the same origin, in one run.
#
#   apb-lgd-N (direct load generator)                       apb-org-N (origin)
#   +------------------------------+                        +----------------------+
#   | wrk / connbench    (LOAD_CPU)| --- veth 10.231.2.0/24 ---> 10.231.2.2        |
#   +------------------------------+                        |                      |
#                                                           | nginx, 1 process     |
#   apb-lgp-N (jailed load generator)    host netns         |  :8080 http          |
#   +------------------------------+   +----------------+   |  :8443 https, resume |
#   | wrk / connbench    (LOAD_CPU)|   | authproxy jail |   |  :8444 https, no     |
#   | lo + nft redirect --> listener ==> --netns apb-lgp| --- veth 10.231.1.0/24 --> 10.231.1.2 |
#   | resolver: 127.0.0.53 (jail)  |   |     (PROXY_CPU)|   |           (LOAD_CPU) |
#   +------------------------------+   +----------------+   +----------------------+
#
# Both load generators reach the origin across exactly one veth pair. The proxied path
# adds only the proxy: the nftables redirect over the jail's loopback into the proxy's
# listener (a socket in apb-lgp served by the jail process in the host namespace), and
# the proxy's own connection to the origin (dns.remap sends every bench name to
# 10.231.1.2). The direct generator resolves the same names to 10.231.2.2 through
# /etc/netns/apb-lgd-N/hosts; the jailed one asks the jail's DNS responder and gets
# synthetic addresses, as any sandboxed program would.
#
# Names: api.bench matches a rule that injects a header, so it is intercepted (TLS
# terminated with the sandbox CA, re-encrypted to nginx, verified against the test CA
# given as --upstream-ca); tunnel.bench has no rule and is tunnelled after the SNI;
# n<i>.mint.bench are intercepted names used once each (leaf minting). Plain HTTP always
# goes through the HTTP engine.
#
# The proxy is pinned to PROXY_CPU, nginx and the load generators share LOAD_CPU, so a
# perfectly cheap proxy would leave the proxied figures equal to the direct ones. Each
# measurement alternates direct and proxied and is repeated REPS times; the tables
# show medians. Results: scripts/bench/results/latest.md (and stdout).
#
# Usage: sudo scripts/bench/run.sh [--reps N] [--duration SEC] [--idle-conns N]
#                                  [--mint-names N] [--attach N] [--only LIST]
#                                  [--authproxy PATH] [--busy-poll USEC]
#                                  [--profile SCENARIO] [--callgrind] [--label TEXT]
#                                  [--haproxy]
#   --only LIST       comma-separated scenario ids (see SCENARIOS below, and idle, mint,
#                     attach)
#   --attach N        sandboxes attached to one daemon (default 1000)
#   --profile ID      record the proxy with perf (cpu-clock, DWARF call graphs) during
#                     the proxied run of one scenario: results/perf-ID.data
#   --label TEXT      names the build in the report (default: git describe)
#   --busy-poll USEC  runs the proxy with --busy-poll USEC (default 0: off, the
#                     proxy's default), and says so in the report
#   --haproxy         also runs every load through HAProxy (Debian's haproxy, installed
#                     when missing), configured for the same work on the same CPU, and
#                     reports it beside authproxy: see "HAProxy" below
#   --callgrind       instead of timing, run the proxy under valgrind's callgrind and
#                     count its instructions per request for a fixed amount of each
#                     load (deterministic, unlike time on a shared machine):
#                     results/callgrind.md, and callgrind-ID.out for callgrind_annotate
# Environment: PROXY_CPU (default 0), LOAD_CPU (default 1), ATTACH_CLIENTS (concurrent
# API clients of the attach benchmark, default 4), ATTACH_STATE_DIR (where its daemon
# keeps its state; default /dev/shm), BENCH_CC (TCP congestion control on every route
# the measured connections use, both paths alike; default cubic, the kernel's own
# default; see "congestion control" below).
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
bench=$top/scripts/bench
REPS=3
DURATION=5
IDLE_CONNS=10000
MINT_NAMES=200
ATTACH_N=1000
ATTACH_CLIENTS=${ATTACH_CLIENTS:-4}
ONLY=""
PROFILE=""
CALLGRIND=""
IDLE_SETTLE=5
AUTHPROXY=""
LABEL=""
BUSY_POLL=0
HAPROXY=""
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BENCH_CC=${BENCH_CC:-cubic}

usage() { sed -n '/^# Usage:/,/^# Environment/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) REPS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --idle-conns) IDLE_CONNS=$2; shift ;;
    --mint-names) MINT_NAMES=$2; shift ;;
    --attach) ATTACH_N=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --profile) PROFILE=$2; shift ;;
    --callgrind) CALLGRIND=1 ;;
    --label) LABEL=$2; shift ;;
    --authproxy) AUTHPROXY=$2; shift ;;
    --busy-poll) BUSY_POLL=$2; shift ;;
    --haproxy) HAPROXY=1 ;;
    -h|--help) usage ;;
    *) echo "run.sh: unknown argument $1" >&2; usage ;;
  esac
  shift
done

if [ "$(id -u)" -ne 0 ]; then
  echo "run.sh: needs root (network namespaces, nftables)" >&2
  exit 1
fi

# ---- tools: the benchmark installs its own; CI never needs them ----
need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v cc >/dev/null || need+=(gcc)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
command -v python3 >/dev/null || need+=(python3)
if [ -n "$PROFILE" ] && ! command -v perf >/dev/null; then need+=(linux-perf); fi
if [ -n "$CALLGRIND" ] && ! command -v valgrind >/dev/null; then need+=(valgrind); fi
if [ -n "$HAPROXY" ] && ! command -v haproxy >/dev/null; then need+=(haproxy); fi
if [ ${#need[@]} -gt 0 ]; then
  echo "run.sh: installing ${need[*]}"
  # Packages such as haproxy start their service on installation; nothing here wants
  # that (the benchmark runs its own instances), so a policy that refuses service
  # starts is in place for the installation unless the machine already has one.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    trap 'rm -f "$policy"' EXIT
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
  fi
  rc=0
  apt-get install -y --no-install-recommends "${need[@]}" >/dev/null || rc=$?
  if [ -n "$policy" ]; then rm -f "$policy"; trap - EXIT; fi
  [ $rc -eq 0 ] || exit $rc
fi

if [ -z "$AUTHPROXY" ]; then
  AUTHPROXY=$top/build-release/proxy/authproxy
  echo "run.sh: building $AUTHPROXY (Release)"
  cmake -S "$top" -B "$top/build-release" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$top/build-release" -j2 --target authproxy >/dev/null
fi
[ -x "$AUTHPROXY" ] || { echo "run.sh: no authproxy at $AUTHPROXY" >&2; exit 1; }

# One benchmark at a time: the addresses and CPUs are shared.
exec 9>/run/authproxy-bench.lock
flock -n 9 || { echo "run.sh: another benchmark is running" >&2; exit 1; }

T=$(mktemp -d /tmp/authproxy-bench.XXXXXX)
chmod 755 "$T"
LGD=apb-lgd-$$
LGP=apb-lgp-$$
LGH=apb-lgh-$$
ORG=apb-org-$$
PIDS=()
HAPROXY_PID=""
ATTACH_NS=""
ATTACH_STATE=""
NGINX_PID=""
PROXY_PID=""

cleanup() {
  local rc=$?
  set +e
  exec 7>&- 2>/dev/null
  # A stopped HAProxy would hold its SIGTERM until continued.
  [ -z "$HAPROXY_PID" ] || kill -CONT "$HAPROXY_PID" 2>/dev/null
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  for ns in "$LGD" "$LGP" "$LGH" "$ORG"; do ip netns del "$ns" 2>/dev/null; done
  if [ -n "$ATTACH_NS" ]; then
    for ((i = 0; i < ATTACH_N; i++)); do echo "netns del apb-a$i-$$"; done |
      ip -batch - 2>/dev/null
  fi
  ip link del "apb-h-$$" 2>/dev/null
  ip link del "apb-x-$$" 2>/dev/null
  rm -rf "/etc/netns/$LGD" "/etc/netns/$LGP" "/etc/netns/$LGH"
  rmdir /etc/netns 2>/dev/null
  if [ $rc -ne 0 ]; then
    for f in "$T"/*.log; do [ -s "$f" ] && { echo "== $f"; tail -n 20 "$f"; }; done
  fi
  rm -rf "$T" "$ATTACH_STATE"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
. "$top/scripts/common.sh" # wait_for, make_ca, cpu_ticks, proc_status

selected() {
  [ -z "$ONLY" ] && return 0
  case ",$ONLY," in *",$1,"*) return 0 ;; esac
  return 1
}

# ---- certificates: a test CA and one ECDSA P-256 server certificate ----
make_ca "$T/ca" api.bench tunnel.bench '*.mint.bench'

# ---- the origin's content ----
mkdir -p "$T/www" "$T/nginx"
head -c 1024 /dev/urandom > "$T/www/1k"
head -c $((1 << 20)) /dev/urandom > "$T/www/1m"
head -c $((100 << 20)) /dev/urandom > "$T/www/100m"

# ---- namespaces ----
for ns in "$LGD" "$LGP" "$ORG"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
# origin <-> host (the proxy's side)
ip link add "apb-h-$$" type veth peer name "apb-o1-$$"
ip link set "apb-o1-$$" netns "$ORG"
ip addr add 10.231.1.1/24 dev "apb-h-$$"
ip link set "apb-h-$$" up
ip -n "$ORG" addr add 10.231.1.2/24 dev "apb-o1-$$"
ip -n "$ORG" link set "apb-o1-$$" up
# origin <-> direct load generator
ip link add "apb-d-$$" netns "$LGD" type veth peer name "apb-o2-$$" netns "$ORG"
ip -n "$LGD" addr add 10.231.2.1/24 dev "apb-d-$$"
ip -n "$LGD" link set "apb-d-$$" up
ip -n "$ORG" addr add 10.231.2.2/24 dev "apb-o2-$$"
ip -n "$ORG" link set "apb-o2-$$" up
# HAProxy's load generator <-> host (--haproxy). HAProxy listens in the host namespace,
# on PROXY_CPU, and reaches the origin across apb-h as authproxy does. It has two
# addresses: 10.231.3.1 terminates TLS (api.bench) and 10.231.3.3 passes it through
# (tunnel.bench), so that both take port 8443 as the load generator asks for them.
if [ -n "$HAPROXY" ]; then
  ip netns add "$LGH"
  ip -n "$LGH" link set lo up
  ip link add "apb-x-$$" type veth peer name "apb-l-$$" netns "$LGH"
  ip addr add 10.231.3.1/24 dev "apb-x-$$"
  ip addr add 10.231.3.3/24 dev "apb-x-$$"
  ip link set "apb-x-$$" up
  ip -n "$LGH" addr add 10.231.3.2/24 dev "apb-l-$$"
  ip -n "$LGH" link set "apb-l-$$" up
fi

# ---- congestion control ----
# New namespaces inherit the host's default congestion control, which may be BBR (it
# is on the machine of scripts/bench/RESULTS.md). On these veth and loopback links
# BBR measures a minimum RTT of a few microseconds, while ACKs that cross CPUs take
# 100-300 µs; its model then caps the window and its pacing at a fraction of the link:
# nginx's socket toward the proxy was seen estimating 13.6 Mbit/s and sending 64 KiB
# every 40 ms. The direct path, whose ends share a CPU, is spared, so BBR measured the
# host's TCP rather than the proxy. Every route a measured connection takes (origin
# to either client, the sandbox's loopback, the host to the origin) gets BENCH_CC;
# BENCH_CC=bbr measures with BBR. (Without a route's choice, the proxy's sockets toward
# the sandbox use cubic or reno whatever the namespace's default: proxy/sandbox.c.)
if ! grep -qw -- "$BENCH_CC" /proc/sys/net/ipv4/tcp_available_congestion_control; then
  echo "run.sh: congestion control $BENCH_CC is not available here (have:" \
    "$(cat /proc/sys/net/ipv4/tcp_available_congestion_control)); set BENCH_CC" >&2
  exit 1
fi
set_cc() { # NETNS|"" ROUTE...
  local ns=$1; shift
  if [ -n "$ns" ]; then ip -n "$ns" route replace "$@" congctl "$BENCH_CC"
  else ip route replace "$@" congctl "$BENCH_CC"; fi
}
set_cc "$ORG" 10.231.1.0/24 dev "apb-o1-$$" proto kernel scope link src 10.231.1.2
set_cc "$ORG" 10.231.2.0/24 dev "apb-o2-$$" proto kernel scope link src 10.231.2.2
set_cc "$LGD" 10.231.2.0/24 dev "apb-d-$$" proto kernel scope link src 10.231.2.1
set_cc "" 10.231.1.0/24 dev "apb-h-$$" proto kernel scope link src 10.231.1.1
set_cc "$LGP" local 127.0.0.0/8 dev lo proto kernel scope host src 127.0.0.1 table local
set_cc "$LGP" local 127.0.0.1 dev lo proto kernel scope host src 127.0.0.1 table local
if [ -n "$HAPROXY" ]; then
  set_cc "$LGH" 10.231.3.0/24 dev "apb-l-$$" proto kernel scope link src 10.231.3.2
  set_cc "" 10.231.3.0/24 dev "apb-x-$$" proto kernel scope link src 10.231.3.1
fi

mkdir -p "/etc/netns/$LGD" "/etc/netns/$LGP"
{
  echo "127.0.0.1 localhost"
  echo "10.231.2.2 api.bench tunnel.bench"
  for ((i = 0; i < MINT_NAMES; i++)); do echo "10.231.2.2 n$i.mint.bench"; done
} > "/etc/netns/$LGD/hosts"
echo "127.0.0.1 localhost" > "/etc/netns/$LGP/hosts"
if [ -n "$HAPROXY" ]; then
  mkdir -p "/etc/netns/$LGH"
  printf '127.0.0.1 localhost\n10.231.3.1 api.bench\n10.231.3.3 tunnel.bench\n' \
    > "/etc/netns/$LGH/hosts"
fi
echo "nameserver 127.0.0.53" > "/etc/netns/$LGP/resolv.conf"

# ---- nginx ----
cat > "$T/nginx/nginx.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
worker_rlimit_nofile 65536;
pid $T/nginx/nginx.pid;
error_log $T/nginx.log warn;
events { worker_connections 30000; }
http {
  access_log off;
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 600s;
  keepalive_requests 100000000;
  client_body_temp_path $T/nginx/body;
  proxy_temp_path $T/nginx/proxy;
  fastcgi_temp_path $T/nginx/fastcgi;
  uwsgi_temp_path $T/nginx/uwsgi;
  scgi_temp_path $T/nginx/scgi;
  ssl_certificate $T/ca/server.pem;
  ssl_certificate_key $T/ca/server.key;
  server { listen 8080 backlog=8192; root $T/www; }
  server {
    listen 8443 ssl backlog=8192; root $T/www;
    ssl_session_cache shared:bench:10m;
    ssl_session_tickets on;
  }
  server {
    listen 8444 ssl backlog=8192; root $T/www;
    ssl_session_cache off;
    ssl_session_tickets off;
  }
}
EOF
# The proxy holds two descriptors per connection (the jail's one sandbox may use all
# but 128 of its limit). Root may raise the hard limit; without CAP_SYS_RESOURCE it
# is the ceiling, and the idle measurement shrinks to fit.
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt 65536 ]; then
  ulimit -Hn 65536 2>/dev/null || true
fi
ulimit -n "$(ulimit -Hn)"
max_idle=$(( ($(ulimit -n) - 200) / 2 ))
if [ "$IDLE_CONNS" -gt "$max_idle" ]; then
  echo "run.sh: open-file limit $(ulimit -n): idle measurement uses $max_idle connections"
  IDLE_CONNS=$max_idle
fi
ip netns exec "$ORG" taskset -c "$LOAD_CPU" nginx -c "$T/nginx/nginx.conf" -p "$T/nginx" \
  2> "$T/nginx.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_for "ip netns exec $ORG ss -Hltn 'sport = :8444' | grep -q ." 10

# ---- authproxy ----
{
  printf '{ "rules": [ { "name": "bench", "match_hosts": ["api.bench", "*.mint.bench"],\n'
  printf '    "headers": [ { "name": "X-Bench", "type": "plaintext", "value": "1" } ] } ],\n'
  printf '  "dns": { "remap": { "api.bench": "10.231.1.2", "tunnel.bench": "10.231.1.2"'
  for ((i = 0; i < MINT_NAMES; i++)); do printf ', "n%d.mint.bench": "10.231.1.2"' "$i"; done
  printf ' } } }\n'
} > "$T/config.json"
proxy_cmd=("$AUTHPROXY" jail --netns "/var/run/netns/$LGP" --config "$T/config.json"
           --upstream-ca "$T/ca/ca.pem" --max-conns 60000 --leaf-cache 4096 --user nobody
           --busy-poll "$BUSY_POLL" -- sleep 1000000)
if [ -n "$CALLGRIND" ]; then
  proxy_cmd=(valgrind --tool=callgrind --callgrind-out-file="$T/cg.out" "${proxy_cmd[@]}")
fi
# Its temporary directory (resolver file, CA bundle) under $T, removed with it.
TMPDIR=$T taskset -c "$PROXY_CPU" "${proxy_cmd[@]}" 2> "$T/authproxy.log" &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
wait_for "ip netns exec $LGP ss -Hltn 'sport = :53' | grep -q ." 60
wait_for "ip netns exec $LGP nft list table inet authproxy >/dev/null 2>&1" 10

# ---- HAProxy (--haproxy): the same work, configured as its users would ----
# One thread on PROXY_CPU. Plain HTTP and the intercepted names: HTTP mode, the same
# X-Bench header set on every request, TLS terminated with the test CA's server
# certificate (OpenSSL) and re-encrypted to nginx with the origin verified against the
# test CA and SNI api.bench; idle server connections reused by every client (http-reuse
# always), as authproxy's upstream pool does. tunnel.bench: TCP mode, routed by the
# ClientHello's SNI as authproxy routes it, bytes relayed. HAProxy reuses TLS sessions
# toward the origin and offers tickets and a session cache to clients by default.
# HAProxy is stopped (SIGSTOP) outside its own runs: its busy-polling never sleeps, and
# would take the proxy's CPU from authproxy's runs.
if [ -n "$HAPROXY" ]; then
  mkdir -p "$T/haproxy"
  cat "$T/ca/server.pem" "$T/ca/server.key" > "$T/haproxy/server.pem"
  tls_bind="ssl crt $T/haproxy/server.pem"
  up_tls="ssl verify required ca-file $T/ca/ca.pem sni str(api.bench)"
  # With --busy-poll, HAProxy polls too (its own busy-polling, which never sleeps).
  hap_busy=""
  [ "$BUSY_POLL" = 0 ] || hap_busy="busy-polling"
  # http_site NAME PORT [BIND_OPTS SERVER_OPTS]: HTTP mode on PORT with the header set,
  # in front of the origin's PORT with idle connections shared by every client.
  http_site() {
    cat <<EOF
frontend $1
  mode http
  bind 10.231.3.1:$2 ${3:-}
  http-request set-header X-Bench 1
  default_backend $1
backend $1
  mode http
  http-reuse always
  server origin 10.231.1.2:$2 ${4:-}
EOF
  }
  {
    cat <<EOF
global
  nbthread 1
  maxconn 4000
  $hap_busy
defaults
  timeout connect 5s
  timeout client 600s
  timeout server 600s
EOF
    http_site http 8080
    http_site https 8443 "$tls_bind" "$up_tls"
    http_site https_nocache 8444 "$tls_bind" "$up_tls"
    cat <<EOF
frontend tunnel
  mode tcp
  bind 10.231.3.3:8443
  tcp-request inspect-delay 5s
  tcp-request content accept if { req.ssl_hello_type 1 }
  use_backend tunnel if { req.ssl_sni -i tunnel.bench }
backend tunnel
  mode tcp
  server origin 10.231.1.2:8443
EOF
  } > "$T/haproxy/haproxy.cfg"
  taskset -c "$PROXY_CPU" haproxy -db -f "$T/haproxy/haproxy.cfg" 2> "$T/haproxy.log" &
  HAPROXY_PID=$!
  PIDS+=("$HAPROXY_PID")
  wait_for "ss -Hltn 'sport = :8444' | grep -q 10.231.3.1" 10
fi
# haproxy_only PATH: HAProxy runs during its own path's runs only.
haproxy_only() {
  [ -n "$HAPROXY_PID" ] || return 0
  if [ "$1" = haproxy ]; then kill -CONT "$HAPROXY_PID"; else kill -STOP "$HAPROXY_PID"; fi
}

# ---- the load generators ----
cc -O2 -o "$T/connbench" "$bench/connbench.c" -lssl -lcrypto -lpthread
cat > "$T/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests":%d,"duration_us":%d,"bytes":%d,"errors":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
LUA

ns_of() {
  case $1 in direct) echo "$LGD" ;; haproxy) echo "$LGH" ;; *) echo "$LGP" ;; esac
}
# The process whose CPU, memory and counters a path's runs record (the direct path
# records the proxy's, which stays idle).
pid_of() { [ "$1" = haproxy ] && echo "$HAPROXY_PID" || echo "$PROXY_PID"; }
PATHS=(direct proxy)
[ -z "$HAPROXY" ] || PATHS+=(haproxy)

proxy_cpu() { cpu_ticks "$PROXY_PID"; }
CLK_TCK=$(getconf CLK_TCK)
proxy_kb() { proc_status "$PROXY_PID" "$1"; }

# The proxy's read and write system calls (read, readv, write, writev and the like;
# not epoll_wait) from /proc/PID/io, and its context switches from every thread's
# status. Both are kept by the kernel anyway: counting syscalls with perf's
# raw_syscalls tracepoint would send every task's system calls through the tracing
# slow path, the load generator's and nginx's included, during the proxied runs only.
proxy_counters() {  # PID: prints "RWCALLS SWITCHES"
  local rw sw t
  rw=$(awk '$1 == "syscr:" || $1 == "syscw:" { n += $2 } END { print n + 0 }' \
       "/proc/$1/io")
  sw=0
  for t in /proc/"$1"/task/*; do
    sw=$((sw + $(awk '/^(non)?voluntary_ctxt_switches:/ { n += $2 } END { print n + 0 }' \
                 "$t/status" 2>/dev/null || echo 0)))
  done
  echo "$rw $sw"
}
counters_start() { read -r RW0 SW0 < <(proxy_counters "$1"); }
# counters_stop PID: sets COUNTERS to ',"rwcalls":N,"cswitches":N'.
counters_stop() {
  local rw sw
  read -r rw sw < <(proxy_counters "$1")
  COUNTERS=",\"rwcalls\":$((rw - RW0)),\"cswitches\":$((sw - SW0))"
}

RESULTS=$T/results.jsonl
: > "$RESULTS"

# record SCENARIO PATH REP JSON CPU_TICKS [EXTRA]: appends one result line.
record() {
  local cpu_s
  cpu_s=$(awk -v t="$5" -v h="$CLK_TCK" 'BEGIN { printf "%.3f", t / h }')
  printf '{"scenario":"%s","path":"%s","rep":%s,"cpu_s":%s,"rss_kb":%s%s,"m":%s}\n' \
    "$1" "$2" "$3" "$cpu_s" "$(proc_status "$(pid_of "$2")" VmRSS)" "${6:-}" "$4" \
    >> "$RESULTS"
}

# check_result WHAT JSON: fails on no requests or more than 0.1% errors.
check_result() {
  python3 -c 'import json,sys; m=json.loads(sys.argv[1]); n=m.get("requests",0); e=m.get("errors",0); sys.exit(0 if n > 0 and e * 1000 <= n else 1)' "$2" ||
    { echo "run.sh: $1: errors or no requests: $2" >&2; exit 1; }
}

# run_load SCENARIO PATH REP CMD...: runs a load generator in PATH's namespace on
# LOAD_CPU; records its JSON line with the proxy's (or HAProxy's) CPU time, reads and
# writes, and context switches over the run.
run_load() {
  local scen=$1 path=$2 rep=$3; shift 3
  local ns out json c0 c1 perf_pid="" extra="" pid
  ns=$(ns_of "$path")
  pid=$(pid_of "$path")
  haproxy_only "$path"
  if [ "$path" = proxy ] && [ "$PROFILE" = "$scen" ] && [ "$rep" = 1 ]; then
    perf record -e cpu-clock -F 2000 --call-graph dwarf,16384 -p "$PROXY_PID" \
      -o "$bench/results/perf-$scen.data" >/dev/null 2>&1 &
    perf_pid=$!
    sleep 0.5
  elif [ "$path" != direct ]; then
    counters_start "$pid"
  fi
  c0=$(cpu_ticks "$pid")
  out=$(ip netns exec "$ns" taskset -c "$LOAD_CPU" "$@" 2>> "$T/load.log") || {
    echo "run.sh: $scen ($path) failed: $out" >&2; tail -n 5 "$T/load.log" >&2; exit 1; }
  c1=$(cpu_ticks "$pid")
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid"; wait "$perf_pid" || true
  elif [ "$path" != direct ]; then
    counters_stop "$pid"
    extra=$COUNTERS
  fi
  json=$(sed -n 's/^WRK //p; /^{/p' <<<"$out" | tail -n 1)
  check_result "$scen ($path)" "$json"
  record "$scen" "$path" "$rep" "$json" $((c1 - c0)) "$extra"
}

wrk_run() { echo wrk -t1 -c"$1" -d"${DURATION}s" -s "$T/report.lua" "$2"; }
cb="$T/connbench rate"

# The latency of small requests on one connection while another connection of the
# same client downloads as fast as it can (both intercepted on the proxied path): what
# one bulk transfer costs every other connection sharing the proxy's loop. The bulk
# load's own figures are not recorded.
cat > "$T/beside_bulk.sh" <<'SH'
#!/bin/sh
# beside_bulk.sh DURATION REPORT_LUA URL BULK_URL
wrk -t1 -c1 -d"$(($1 + 2))s" "$4" > /dev/null 2>&1 &
bulk=$!
sleep 1
wrk -t1 -c1 -d"$1s" -s "$2" "$3"
kill "$bulk" 2> /dev/null
wait "$bulk" 2> /dev/null
exit 0
SH
chmod +x "$T/beside_bulk.sh"

# Scenarios: id | load generator command (the same for both paths).
SCENARIOS=(
  "http_ka|$(wrk_run 16 http://api.bench:8080/1k)"
  "http_lat|$(wrk_run 1 http://api.bench:8080/1k)"
  "https_ka|$(wrk_run 16 https://api.bench:8443/1k)"
  "https_lat_bulk|$T/beside_bulk.sh $DURATION $T/report.lua https://api.bench:8443/1k https://api.bench:8443/100m"
  "https_new_cold|$cb --tls -a api.bench:8444 -p /1k -c 16 -d $DURATION"
  "https_new_warm|$cb --tls --resume -a api.bench:8443 -p /1k -c 16 -d $DURATION"
  "http_1m|$(wrk_run 4 http://api.bench:8080/1m)"
  "https_1m|$(wrk_run 4 https://api.bench:8443/1m)"
  "tunnel_1m|$(wrk_run 4 https://tunnel.bench:8443/1m)"
  "tunnel_100m|$(wrk_run 1 https://tunnel.bench:8443/100m)"
)
# The same work in fixed amounts, for instruction counts under callgrind.
COUNTED=(
  "http_ka|$cb --keep-alive -a api.bench:8080 -p /1k -c 16 -n 4000 -d 600"
  "https_ka|$cb --keep-alive --tls -a api.bench:8443 -p /1k -c 16 -n 4000 -d 600"
  "https_new_cold|$cb --tls -a api.bench:8444 -p /1k -c 4 -n 100 -d 600"
  "https_new_warm|$cb --tls --resume -a api.bench:8443 -p /1k -c 4 -n 100 -d 600"
  "http_1m|$cb --keep-alive -a api.bench:8080 -p /1m -c 2 -n 40 -d 600"
  "https_1m|$cb --keep-alive --tls -a api.bench:8443 -p /1m -c 2 -n 40 -d 600"
  "tunnel_1m|$cb --keep-alive --tls -a tunnel.bench:8443 -p /1m -c 2 -n 40 -d 600"
)

# Sanity: every path answers; the proxied one through the proxy.
for path in "${PATHS[@]}"; do
  haproxy_only "$path"
  ip netns exec "$(ns_of $path)" "$T/connbench" rate --tls -a api.bench:8443 -p /1k \
    -d 60 -n 5 >/dev/null 2>> "$T/load.log" ||
    { echo "run.sh: the $path path does not work" >&2; exit 1; }
done
haproxy_only none

REV=${LABEL:-$(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)}
mkdir -p "$bench/results"

if [ -n "$CALLGRIND" ]; then
  # Instructions in user space (authproxy, libuv, mbedTLS, libc) per request, from
  # callgrind's counters zeroed before and dumped after each fixed amount of work. Each
  # load runs twice, N and then 2N requests, and the difference is reported: what the
  # first requests of each client cost apart (new connections of a keep-alive load,
  # the first full handshake of a resuming client) cancels out.
  echo "run.sh: authproxy $REV under callgrind"
  n=0
  cg_run() {  # CMD...: runs the load; sets CG ("IR JSON")
    local out
    # vgdb's FIFOs are in the proxy's TMPDIR ($T), where callgrind_control must look.
    TMPDIR=$T callgrind_control -z "$PROXY_PID" >/dev/null 2>&1
    out=$(ip netns exec "$LGP" taskset -c "$LOAD_CPU" "$@" 2>> "$T/load.log") || true
    TMPDIR=$T callgrind_control -d "$PROXY_PID" >/dev/null 2>&1
    n=$((n + 1))
    wait_for "[ -s '$T/cg.out.$n' ]" 30
    check_result "callgrind" "$out"
    CG="$(awk '/^summary:/ { print $2 }' "$T/cg.out.$n") $out"
  }
  for s in "${COUNTED[@]}"; do
    id=${s%%|*}
    cmd=${s#*|}
    selected "$id" || continue
    count=$(sed -n 's/.* -n \([0-9]*\).*/\1/p' <<<"$cmd")
    # shellcheck disable=SC2086
    cg_run $cmd
    one=$CG
    # shellcheck disable=SC2086
    cg_run ${cmd/ -n $count / -n $((2 * count)) }
    two=$CG
    cp "$T/cg.out.$n" "$bench/results/callgrind-$id.out"
    m=$(python3 -c 'import json, sys
a, b = sys.argv[1].split(" ", 1), sys.argv[2].split(" ", 1)
ma, mb = json.loads(a[1]), json.loads(b[1])
print(json.dumps({"requests": mb["requests"] - ma["requests"], "ir": int(b[0]) - int(a[0])}))' \
      "$one" "$two")
    record "$id" proxy 1 "$m" 0 ",\"ir\":$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["ir"])' "$m")"
    printf '.'
  done
  echo
  python3 "$bench/report.py" "$RESULTS" --callgrind --rev "$REV" \
    > "$bench/results/callgrind.md"
  cp "$RESULTS" "$bench/results/callgrind.jsonl"
  cat "$bench/results/callgrind.md"
  exit 0
fi

# What a wakeup across CPUs costs on this machine, for reading the figures: a proxied
# request crosses between the proxy's CPU and the load CPU four times.
XCPU=$("$T/connbench" pingpong -n 20000 "$PROXY_CPU" "$LOAD_CPU" | sed 's/.*://; s/}//')
SAMECPU=$("$T/connbench" pingpong -n 20000 "$LOAD_CPU" "$LOAD_CPU" | sed 's/.*://; s/}//')

echo "run.sh: authproxy $REV, $REPS repetitions of ${DURATION}s"
for ((rep = 1; rep <= REPS; rep++)); do
  for s in "${SCENARIOS[@]}"; do
    id=${s%%|*}
    cmd=${s#*|}
    selected "$id" || continue
    for path in "${PATHS[@]}"; do
      # shellcheck disable=SC2086
      run_load "$id" "$path" "$rep" $cmd
    done
    printf '.'
  done
done
echo
haproxy_only none
HWM_KB=$(proxy_kb VmHWM)
HAPROXY_HWM_KB=0
[ -z "$HAPROXY" ] || HAPROXY_HWM_KB=$(proc_status "$HAPROXY_PID" VmHWM)

# ---- first contact with a name: leaf minting ----
# The same names twice: first contact (a leaf is minted for each), then cached leaves.
if selected mint; then
  for path in direct proxy; do
    for pass in new cached; do
      c0=$(proxy_cpu)
      out=$(ip netns exec "$(ns_of $path)" taskset -c "$LOAD_CPU" "$T/connbench" mint \
            -a n0.mint.bench:8444 -f "n%d.mint.bench" -n "$MINT_NAMES" 2>> "$T/load.log")
      c1=$(proxy_cpu)
      record "mint_$pass" "$path" 1 "$out" $((c1 - c0))
    done
  done
fi

# ---- idle connections: proxy memory per connection ----
idle_run() {
  local scen=$1 name=$2 kb0 kb1 pid line
  rm -f "$T/idle.in" "$T/idle.out"
  mkfifo "$T/idle.in"
  kb0=$(proxy_kb VmRSS)
  ip netns exec "$LGP" taskset -c "$LOAD_CPU" "$T/connbench" idle --tls -a "$name:8443" \
    -p /1k -n "$IDLE_CONNS" < "$T/idle.in" > "$T/idle.out" 2>> "$T/load.log" &
  pid=$!
  exec 7> "$T/idle.in"
  wait_for "grep -q '^ready' '$T/idle.out'" 900
  line=$(cat "$T/idle.out")
  [ "$line" = "ready $IDLE_CONNS" ] || { echo "run.sh: $scen: $line" >&2; exit 1; }
  # Idle means idle: past the moment the proxy may release per-request state.
  sleep "$IDLE_SETTLE"
  kb1=$(proxy_kb VmRSS)
  exec 7>&-
  wait "$pid"
  printf '{"scenario":"%s","path":"proxy","rep":1,"cpu_s":0,"rss_kb":%s,"m":{"conns":%s,"rss0_kb":%s,"rss1_kb":%s}}\n' \
    "$scen" "$kb1" "$IDLE_CONNS" "$kb0" "$kb1" >> "$RESULTS"
  # Let the proxy see the closes before the next measurement.
  wait_for "[ \$(ip netns exec $LGP ss -Htn state established | wc -l) -lt 10 ]" 60
}
if selected idle; then
  idle_run idle_tunnel tunnel.bench
  idle_run idle_icpt api.bench
fi

# ---- the daemon: attaching many sandboxes ----
# ATTACH_N namespaces made beforehand (not timed), one `authproxy serve` on PROXY_CPU,
# then every sandbox attached through the control API by ATTACH_CLIENTS concurrent
# clients (each attach makes the sandbox's CA, installs its nf_tables rules and
# sockets in the namespace, and seals its state to disk); RSS before and after.
attach_run() {
  local rep=$1 i pid kb0 kb1 ms cpu0 cpu1
  for ((i = 0; i < ATTACH_N; i++)); do echo "netns add apb-a$i-$$"; done | ip -batch -
  ATTACH_NS=1
  mkdir -p "$T/serve"
  # The daemon's state on tmpfs, as /run would hold it: this VM's root file system is
  # ext4 without a journal, where creating a file scans the inode table for recently
  # deleted inodes (a fifth of the attach CPU after a few runs), which measures the
  # disk's history rather than the daemon. Set ATTACH_STATE_DIR to measure a disk.
  ATTACH_STATE=$(mktemp -d "${ATTACH_STATE_DIR:-/dev/shm}/authproxy-bench.XXXXXX")
  taskset -c "$PROXY_CPU" "$AUTHPROXY" serve --state-dir "$ATTACH_STATE" \
    --control "$T/serve/control.sock" 2> "$T/serve.log" &
  pid=$!
  PIDS+=("$pid")
  wait_for "[ -S '$T/serve/control.sock' ] && '$AUTHPROXY' ctl --control '$T/serve/control.sock' health >/dev/null 2>&1" 30
  kb0=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$pid/status")
  cpu0=$(cpu_ticks "$pid")
  # The clock runs from the first request to the last answer, inside the client: the
  # interpreter's start is not the daemon's time.
  ms=$(PYTHONPATH=$top/clients/python taskset -c "$LOAD_CPU" python3 - "$T/serve/control.sock" \
    "$ATTACH_N" "$ATTACH_CLIENTS" "$$" <<'PY'
import sys, threading, time
from authproxy_client import Client
sock, n, k, tag = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
errors = []
def work(first):
    c = Client(sock)
    for i in range(first, n, k):
        try:
            pem = c.attach("b%d" % i, "/var/run/netns/apb-a%d-%s" % (i, tag), {})
            assert pem.startswith("-----BEGIN CERTIFICATE-----")
        except Exception as e:  # reported below; the benchmark fails
            errors.append("b%d: %s" % (i, e))
threads = [threading.Thread(target=work, args=(j,)) for j in range(k)]
t0 = time.monotonic()
for t in threads: t.start()
for t in threads: t.join()
print(int((time.monotonic() - t0) * 1000))
if errors:
    sys.exit("attach failed: %d errors, first: %s" % (len(errors), errors[0]))
PY
  )
  cpu1=$(cpu_ticks "$pid")
  sleep 1
  kb1=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$pid/status")
  printf '{"scenario":"attach","path":"proxy","rep":%s,"cpu_s":0,"rss_kb":%s,"m":{"sandboxes":%s,"clients":%s,"ms":%s,"cpu_ms":%s,"rss0_kb":%s,"rss1_kb":%s}}\n' \
    "$rep" "$kb1" "$ATTACH_N" "$ATTACH_CLIENTS" "$ms" \
    $(( (cpu1 - cpu0) * 1000 / CLK_TCK )) "$kb0" "$kb1" >> "$RESULTS"
  kill "$pid"
  wait "$pid" || true
  # The next repetition attaches fresh namespaces to a fresh daemon.
  for ((i = 0; i < ATTACH_N; i++)); do echo "netns del apb-a$i-$$"; done | ip -batch -
  rm -rf "$ATTACH_STATE" "$T/serve"
}
if selected attach; then
  for ((rep = 1; rep <= REPS; rep++)); do attach_run "$rep"; done
fi

python3 "$bench/report.py" "$RESULTS" --hwm-kb "$HWM_KB" --reps "$REPS" \
  --duration "$DURATION" --proxy-cpu "$PROXY_CPU" --load-cpu "$LOAD_CPU" --rev "$REV" \
  --xcpu-us "$XCPU" --samecpu-us "$SAMECPU" --cc "$BENCH_CC" --busy-poll "$BUSY_POLL" \
  --haproxy-hwm-kb "$HAPROXY_HWM_KB" > "$bench/results/latest.md"
cp "$RESULTS" "$bench/results/latest.jsonl"
cat "$bench/results/latest.md"
