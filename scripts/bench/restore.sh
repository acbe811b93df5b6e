#!/usr/bin/env bash
# What a restart of `authproxy serve` costs with N sandboxes in its state directory,
# against attaching the same N sandboxes fresh, in the same run.
#
# For each N and repetition: N namespaces (`ip netns add`, not timed); a daemon on
# PROXY_CPU; the N sandboxes attached through the control API by ATTACH_CLIENTS
# concurrent clients on LOAD_CPU, as run.sh's attach benchmark does (the baseline:
# wall time and daemon CPU); the daemon stopped (SIGTERM: the sandboxes keep their
# rules and state) and started again on the same state directory. The restart is
# timed from the exec to
#   - the first answer of the first sandbox restored (a DNS query from its namespace),
#   - the control socket's first answer (GET /healthz), and
#   - the first answer that counts all N sandboxes attached again,
# polling every 2 ms from LOAD_CPU; the daemon's CPU (user + system, all threads) is
# read at that point. Figures are printed as ratios to the fresh attach of the same N
# in the same repetition, with the spread over repetitions.
#
# Usage: sudo scripts/bench/restore.sh [--sandboxes N[,N...]] [--reps R]
#                                      [--authproxy PATH] [--perf FILE] [--label TEXT]
#   --sandboxes LIST  sandbox counts (default 200,1000)
#   --reps R          repetitions of each count (default 3)
#   --perf FILE       record the last restart of the largest count with perf
#                     (cpu-clock, DWARF call graphs) into FILE
# Environment: PROXY_CPU (default 0), LOAD_CPU (default 1), ATTACH_CLIENTS (default 4),
# ATTACH_STATE_DIR (default /dev/shm, as run.sh: see its attach benchmark),
# RESTORE_CONFIG (a proxy_config file for every sandbox; default: one rule injecting a
# pushed secret, and a dns.remap).
set -euo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
COUNTS=200,1000
REPS=3
AUTHPROXY=""
PERF=""
LABEL=""
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
ATTACH_CLIENTS=${ATTACH_CLIENTS:-4}

usage() { sed -n '/^# Usage:/,/^# Environment/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --sandboxes) COUNTS=$2; shift ;;
    --reps) REPS=$2; shift ;;
    --authproxy) AUTHPROXY=$2; shift ;;
    --perf) PERF=$2; shift ;;
    --label) LABEL=$2; shift ;;
    -h|--help) usage ;;
    *) echo "restore.sh: unknown argument $1" >&2; usage ;;
  esac
  shift
done
[ "$(id -u)" -eq 0 ] || { echo "restore.sh: needs root (network namespaces)" >&2; exit 1; }
if [ -n "$PERF" ] && ! command -v perf >/dev/null; then
  apt-get install -y --no-install-recommends linux-perf >/dev/null
fi
if [ -z "$AUTHPROXY" ]; then
  AUTHPROXY=$top/build-release/proxy/authproxy
  echo "restore.sh: building $AUTHPROXY (Release)" >&2
  cmake -S "$top" -B "$top/build-release" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$top/build-release" -j2 --target authproxy >/dev/null
fi
[ -x "$AUTHPROXY" ] || { echo "restore.sh: no authproxy at $AUTHPROXY" >&2; exit 1; }
[ -n "$LABEL" ] || LABEL=$(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)

# One benchmark at a time: the CPUs are shared with run.sh's.
exec 9>/run/authproxy-bench.lock
flock -n 9 || { echo "restore.sh: another benchmark is running" >&2; exit 1; }

T=$(mktemp -d /tmp/authproxy-restore.XXXXXX)
STATE=$(mktemp -d "${ATTACH_STATE_DIR:-/dev/shm}/authproxy-restore.XXXXXX")
# The driver below deletes what it made; this catches an interrupted run.
cleanup() {
  local rc=$?
  set +e
  [ ! -s "$T/pid" ] || kill "$(cat "$T/pid")" 2>/dev/null
  ip netns list | awk -v p="apb-r" -v s="-$$" '
    index($1, p) == 1 && substr($1, length($1) - length(s) + 1) == s { print "netns del " $1 }' |
    ip -batch - 2>/dev/null
  rm -rf "$T" "$STATE"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PYTHONPATH=$top/clients/python python3 - "$AUTHPROXY" "$T" "$STATE" "$COUNTS" \
  "$REPS" "$PROXY_CPU" "$LOAD_CPU" "$ATTACH_CLIENTS" "$$" "$PERF" "$LABEL" \
  "${RESTORE_CONFIG:-}" <<'PY'
import json, os, signal, socket, statistics, subprocess, sys, threading, time
from authproxy_client import Client

(ap, tmp, state, counts, reps, proxy_cpu, load_cpu, clients, tag, perf, label,
 cfg_file) = sys.argv[1:]
counts = [int(n) for n in counts.split(",")]
reps, clients = int(reps), int(clients)
sock = os.path.join(tmp, "control.sock")
tick = os.sysconf("SC_CLK_TCK")
os.sched_setaffinity(0, {int(load_cpu)})
if cfg_file:
    config = json.load(open(cfg_file))
else:
    config = {"rules": [{"name": "api", "match_hosts": ["api.bench"],
                         "headers": [{"name": "Authorization", "type": "workspace_secret",
                                      "value": "Bearer {KEY}"}]}],
              "dns": {"remap": {"api.bench": "10.231.1.2:443"}}}

# A DNS query for api.bench to the sandbox's resolver, until one is answered; prints
# the time of the answer (time.monotonic, the same clock in every namespace).
PROBE = r'''
import socket, sys, time
q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03api\x05bench\x00\x00\x01\x00\x01"
print("ready", flush=True)
end = time.monotonic() + 300
while time.monotonic() < end:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.002)
    try:
        s.connect(("127.0.0.53", 53))
        s.send(q)
        if s.recv(512)[:2] == q[:2]:
            print(time.monotonic())
            sys.exit(0)
    except OSError:
        time.sleep(0.002)
    finally:
        s.close()
sys.exit(1)
'''

def cpu_ms(pid):
    with open("/proc/%d/stat" % pid) as f:
        rest = f.read().rsplit(") ", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) * 1000.0 / tick

def health():
    """The daemon's /healthz answer, or None while its socket does not answer."""
    try:
        return Client(sock, timeout=5).health()
    except (OSError, Exception):
        return None

def start(record=None):
    cmd = ["taskset", "-c", proxy_cpu, ap, "serve", "--state-dir", state,
           "--control", sock]
    if record:
        cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "4000",
               "--call-graph", "dwarf,16384", "-o", record, "--"] + cmd
    log = open(os.path.join(tmp, "serve.log"), "a")
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stderr=log, stdout=log)
    return p, t0

def daemon_pid(p):
    """The authproxy process: p itself, or perf's child."""
    if os.path.basename(p.args[0]) != "perf":
        return p.pid
    for _ in range(1000):
        try:
            kids = open("/proc/%d/task/%d/children" % (p.pid, p.pid)).read().split()
            if kids:
                return int(kids[0])
        except OSError:
            pass
        time.sleep(0.002)
    sys.exit("restore.sh: perf started no daemon")

def stop(p):
    p.send_signal(signal.SIGTERM) if os.path.basename(p.args[0]) != "perf" else \
        os.kill(daemon_pid(p), signal.SIGTERM)
    if p.wait(timeout=120) != 0:
        sys.exit("restore.sh: the daemon exited %d; see %s/serve.log" % (p.returncode, tmp))

def wait_until(pred, limit):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        v = pred()
        if v:
            return v, time.monotonic()
        time.sleep(0.002)
    sys.exit("restore.sh: timed out; see %s/serve.log" % tmp)

def netns(op, n):
    subprocess.run(["ip", "-batch", "-"], check=True, text=True,
                   input="".join("netns %s apb-r%d-%s\n" % (op, i, tag) for i in range(n)))

def one(n, record):
    netns("add", n)
    try:
        p, t0 = start()
        open(os.path.join(tmp, "pid"), "w").write(str(p.pid))
        wait_until(health, 30)
        Client(sock).set_secret("KEY", "secret-%s" % tag)
        errors = []
        def work(first):
            c = Client(sock, timeout=120)
            for i in range(first, n, clients):
                try:
                    c.attach("r%d" % i, "/var/run/netns/apb-r%d-%s" % (i, tag), config)
                except Exception as e:
                    errors.append("r%d: %s" % (i, e))
        threads = [threading.Thread(target=work, args=(j,)) for j in range(clients)]
        c0 = cpu_ms(p.pid)
        t1 = time.monotonic()
        for t in threads: t.start()
        for t in threads: t.join()
        fresh_ms = (time.monotonic() - t1) * 1000
        fresh_cpu = cpu_ms(p.pid) - c0
        if errors:
            sys.exit("restore.sh: attach failed: %d errors, first: %s" % (len(errors), errors[0]))
        stop(p)

        # The first sandbox restored (names sort r0, r1, r10, ...): a client in its
        # namespace asks the sandbox's DNS responder every 2 ms until it answers.
        probe = subprocess.Popen(["ip", "netns", "exec", "apb-r0-%s" % tag, sys.executable,
                                  "-c", PROBE], stdout=subprocess.PIPE, text=True)
        assert probe.stdout.readline().strip() == "ready"
        p, t0 = start(record)
        pid = daemon_pid(p)
        open(os.path.join(tmp, "pid"), "w").write(str(pid))
        h, t_sock = wait_until(health, 300)
        h, t_all = wait_until(lambda: (lambda h: h if h and h["sandboxes"] >= n else None)(
            health()), 300)
        cpu = cpu_ms(pid)
        t_first = float(probe.communicate(timeout=60)[0])
        if h["sandboxes"] != n or h["not_attached"] != 0:
            sys.exit("restore.sh: %d of %d re-attached, %d not: see %s/serve.log" %
                     (h["sandboxes"], n, h["not_attached"], tmp))
        stop(p)
        # The sandboxes are gone with their namespaces: the next repetition starts
        # from an empty state directory.
        subprocess.run(["sh", "-c", "rm -rf %s/*" % state], check=True)
        return dict(n=n, fresh_ms=fresh_ms, fresh_cpu=fresh_cpu,
                    sock_ms=(t_sock - t0) * 1000, all_ms=(t_all - t0) * 1000, cpu=cpu,
                    first_ms=(t_first - t0) * 1000)
    finally:
        netns("del", n)

runs = []
for n in counts:
    for r in range(reps):
        record = perf if perf and n == max(counts) and r == reps - 1 else None
        m = one(n, record)
        runs.append(m)
        print("n=%d rep %d: fresh %.0f ms (%.0f ms CPU); restart: first sandbox answers "
              "%.0f ms, socket %.0f ms, all attached %.0f ms (%.0f ms CPU)" % (
              n, r + 1, m["fresh_ms"], m["fresh_cpu"], m["first_ms"], m["sock_ms"],
              m["all_ms"], m["cpu"]), file=sys.stderr)

def spread(xs, fmt):
    xs = sorted(xs)
    return (fmt % statistics.median(xs)) + " (" + (fmt % xs[0]) + "-" + (fmt % xs[-1]) + ")"

print("\nRestart with N sandboxes in the state directory, %s; %d repetitions, median "
      "(min-max);\nratios to a fresh attach of the same N in the same repetition.\n"
      % (label, reps))
print("| N | fresh attach, per sandbox: wall / CPU | restart to the first sandbox's DNS "
      "answer | to the control socket | to all attached | per sandbox: wall / CPU | "
      "ratio to fresh: wall / CPU |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for n in counts:
    rs = [m for m in runs if m["n"] == n]
    print("| %d | %s / %s ms | %s ms | %s ms | %s ms | %s / %s ms | %sx / %sx |" % (
        n, spread([m["fresh_ms"] / n for m in rs], "%.2f"),
        spread([m["fresh_cpu"] / n for m in rs], "%.2f"),
        spread([m["first_ms"] for m in rs], "%.0f"),
        spread([m["sock_ms"] for m in rs], "%.0f"),
        spread([m["all_ms"] for m in rs], "%.0f"),
        spread([m["all_ms"] / n for m in rs], "%.2f"),
        spread([m["cpu"] / n for m in rs], "%.2f"),
        spread([m["all_ms"] / m["fresh_ms"] for m in rs], "%.2f"),
        spread([m["cpu"] / m["fresh_cpu"] for m in rs], "%.2f")))
PY
