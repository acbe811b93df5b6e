#!/usr/bin/env python3
"""Soak driver for `authproxy serve`: does anything grow or drift over many cycles?

Usage (as root, from the repository, after building):
  scripts/soak.py [--build build] [--cycles 40] [--minutes 30] [--transient 4]
                  [--out /tmp/soak-XXXX] [--pause 2]

It starts one daemon (with small bounds, so that they are reached: --idle-timeout 3,
--leaf-cache 64, --dns-max-names 256), fake upstreams and a fake credential callback on
127.0.0.1, and two sandboxes attached for the whole run. Each cycle then:
  - rotates a pushed secret and replaces a stored config;
  - attaches --transient sandboxes (fresh namespaces; by inline config, by stored
    config name, by /proc/PID/ns/net of a process that then exits, and one name that
    comes back every cycle), and every other cycle one by /proc/PID/ns/net that is
    detached by DELETE while its process lives on;
  - runs a traffic client inside every sandbox's namespace: DNS over UDP and TCP with
    new names, intercepted HTTPS (keep-alive and new connections, new names for the
    leaf cache), plain HTTP, tunnels, no_proxy, refused names and addresses, callback
    hosts that answer, fail and hang (TTL 1 s), aborted requests, a slow reader, a
    server-speaks-first protocol, and connections left idle until the idle timeout;
  - PATCHes every sandbox's config (two configs in turn), rotates the audit log
    (rename + SIGHUP), detaches the transient sandboxes and deletes their namespaces;
  - waits until every connection has closed and records an "idle" sample.
A thread also samples every 30 s. Samples (RSS, fds, threads, /metrics gauges and
counters, state directory files, namespaces, host nft tables) go to OUT/samples.jsonl,
one line per cycle is printed, and the first and last idle samples at the end. Compare
idle samples once the bounded caches are full (about cycle 20): a steady state is
fine, growth per cycle is a defect. Traffic goes only to loopback and to namespaces it
creates; every loop is bounded in count and time; on exit (or SIGINT, SIGTERM) it
stops the daemon with SIGTERM, kills the pids it started, by pid, and deletes its
namespaces.

  scripts/soak.py traffic ...   is the client run inside a namespace (internal).

Every --gdb-every cycles, at an idle point, gdb counts the event loop's handles and
timers (from proxy_cmd_serve's frame) and runs AUTHPROXY_SOAK_GDB, by default
`call (void)malloc_stats()`, whose per-arena "in use bytes" go to OUT/serve.log. Under
an ASan build, `printf "ALLOC %lu\\n", (unsigned long)__sanitizer_get_current_allocated_bytes()`
records the exact live heap ("allocated"), which glibc's figures (thread caches
included) are not.
AUTHPROXY_SOAK_ENV="ASAN_OPTIONS=detect_leaks=1" gives the daemon that environment:
LeakSanitizer reports at its SIGTERM exit, in OUT/serve.log, and its exit status is
printed. AUTHPROXY_SOAK_WRAP="valgrind --leak-check=full" runs the daemon under that
command (use --gdb-every 0 then).
"""
import argparse
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(SRC, "tests", "tools")
DYN = 300  # pool of d<i>.dyn.example.com names, each remapped to the TLS upstream


# ---------------------------------------------------------------- traffic client
def traffic(a):
    """Runs inside a sandbox's namespace. Every failure is expected somewhere (a
    denied host, a failing callback): count outcomes, never raise."""
    out = {}

    def note(k):
        out[k] = out.get(k, 0) + 1

    sctx = ssl.create_default_context(cafile=a.ca)  # the sandbox CA
    uctx = ssl.create_default_context(cafile=a.upstream_ca)  # tunnels see the upstream

    def http(host, path, tls=None, port=None, conn_close=True, sock=None, timeout=8):
        port = port or (443 if tls else 80)
        try:
            s = sock or socket.create_connection((host, port), timeout=timeout)
            if tls and sock is None:
                s = tls.wrap_socket(s, server_hostname=host)
            s.settimeout(timeout)
            s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (
                path, host, "Connection: close\r\n" if conn_close else "")).encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = s.recv(65536)
                if not d:
                    break
                buf += d
            status = buf[9:12].decode() if buf.startswith(b"HTTP/1.") else "none"
            head, _, body = buf.partition(b"\r\n\r\n")
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":")[1])
            while len(body) < n:
                d = s.recv(65536)
                if not d:
                    break
                body += d
            note("%s %s" % (host.split(".")[0] if not host[0] == "d" else "dyn", status))
            if conn_close:
                s.close()
            return s
        except (OSError, ssl.SSLError, ValueError) as e:
            note("%s err:%s" % (host.split(".")[0], type(e).__name__))
            return None

    def dns(name, tcp=False):
        q = struct.pack(">HHHHHH", os.getpid() & 0xffff, 0x0100, 1, 0, 0, 0)
        for label in name.split("."):
            q += bytes([len(label)]) + label.encode()
        q += b"\x00" + struct.pack(">HH", 1, 1)
        try:
            if tcp:
                s = socket.create_connection(("127.0.0.53", 53), timeout=3)
                s.sendall(struct.pack(">H", len(q)) + q)
                r = s.recv(4096)
                s.close()
                rcode = r[5] & 15 if len(r) > 5 else -1
            else:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.settimeout(3)
                s.sendto(q, ("127.0.0.53", 53))
                r = s.recv(4096)
                s.close()
                rcode = r[3] & 15
            note("dns%s rcode:%d" % ("-tcp" if tcp else "", rcode))
        except OSError as e:
            note("dns err:%s" % type(e).__name__)

    idle = []

    def hold_idle():
        # Connections left idle: the proxy's idle timeout (3 s) must close each.
        s = http("api.example.com", "/", tls=sctx, conn_close=False)
        if s:
            idle.append(s)
        s = http("plain.example.com", "/", conn_close=False)
        if s:
            idle.append(s)
        for host, port in (("api.example.com", 443), ("tun.example.com", 443)):
            try:
                idle.append(socket.create_connection((host, port), timeout=5))
            except OSError:
                note("idle err")
        try:
            t = uctx.wrap_socket(socket.create_connection(("tun.example.com", 443),
                                                          timeout=5),
                                 server_hostname="tun.example.com")
            idle.append(t)
        except (OSError, ssl.SSLError):
            note("idle tunnel err")
        deadline = time.time() + a.idle_timeout + 8
        for s in idle:
            try:
                s.settimeout(max(0.1, deadline - time.time()))
                while s.recv(65536):
                    pass
                note("idle closed")
            except socket.timeout:
                note("idle NOT closed")
            except (OSError, ssl.SSLError):
                note("idle closed")
            s.close()

    th = threading.Thread(target=hold_idle)
    th.start()
    c = a.cycle
    for i in range(a.names):
        dns("n%d-%d.new.example.com" % (c, i), tcp=(i % 5 == 0))
    # Intercepted HTTPS: keep-alive, then new connections, then names for the leaf cache.
    s = None
    for i in range(5):
        s = http("api.example.com", "/ka/%d" % i, tls=sctx, conn_close=(i == 4), sock=s)
    for i in range(3):
        http("api.example.com", "/new/%d" % i, tls=sctx)
    for i in range(a.leaves):
        http("d%d.dyn.example.com" % ((c * a.leaves + i) % DYN), "/", tls=sctx)
    # New names by SNI alone (to an address the responder never gave out), so the leaf
    # cache fills even once the DNS table is full.
    for i in range(a.leaves):
        name = "d%d.dyn.example.com" % ((c * a.leaves + i + DYN // 2) % DYN)
        try:
            s = sctx.wrap_socket(socket.create_connection(("192.0.2.1", 443), timeout=8),
                                 server_hostname=name)
            http(name, "/", sock=s)
        except (OSError, ssl.SSLError) as e:
            note("sni err:%s" % type(e).__name__)
    # Plain HTTP, no_proxy, tunnels, denials.
    for i in range(3):
        http("plain.example.com", "/p/%d" % i)
    http("np.example.com", "/bypass")
    http("tun.example.com", "/", tls=uctx)
    http("evil.example.com", "/")
    try:
        socket.create_connection(("10.66.1.1", 80), timeout=3).close()
        note("denied-ip connected")
    except OSError:
        note("denied-ip refused")
    # Callback hosts.
    for h in ("ok", "fail", "hang", "ok"):
        http("%s.corp.example" % h, "/cb")
    # Aborted requests: an answer being thought about, and a big one read slowly.
    for host, path, tls in (("plain.example.com", "/think?delay=2", None),
                            ("api.example.com", "/slow?delay=2", sctx)):
        try:
            s = socket.create_connection((host, 443 if tls else 80), timeout=5)
            if tls:
                s = tls.wrap_socket(s, server_hostname=host)
            s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode())
            time.sleep(0.3)
            s.close()
            note("aborted")
        except (OSError, ssl.SSLError):
            note("aborted err")
    try:
        s = sctx.wrap_socket(socket.create_connection(("api.example.com", 443), timeout=5),
                             server_hostname="api.example.com")
        s.sendall(b"GET /big?bytes=4000000 HTTP/1.1\r\nHost: api.example.com\r\n\r\n")
        for _ in range(10):
            s.recv(16384)
            time.sleep(0.05)
        s.close()
        note("slow reader")
    except (OSError, ssl.SSLError):
        note("slow reader err")
    # A server that speaks first.
    try:
        s = socket.create_connection(("smtp.example.com", 2525), timeout=5)
        s.settimeout(5)
        note("banner " + s.recv(100)[:3].decode(errors="replace"))
        s.close()
    except OSError as e:
        note("banner err:%s" % type(e).__name__)
    th.join(a.idle_timeout + 15)
    print(json.dumps(out, sort_keys=True))


# ---------------------------------------------------------------- the driver
class Soak:
    def __init__(self, a):
        self.a = a
        self.pids = []
        self.netns = []
        self.T = a.out or tempfile.mkdtemp(prefix="soak-")
        os.makedirs(self.T, exist_ok=True)
        self.binary = os.path.join(a.build, "proxy", "authproxy")
        self.sock = os.path.join(self.T, "control.sock")
        self.state = os.path.join(self.T, "state")
        self.samples = open(os.path.join(self.T, "samples.jsonl"), "a")
        self.daemon = None
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.cycle = 0

    def spawn(self, argv, log, env=None):
        p = subprocess.Popen(argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                             env=env, start_new_session=True)
        self.pids.append(p)
        return p

    def wait_file(self, path, secs=10):
        for _ in range(secs * 20):
            if os.path.exists(path) and os.path.getsize(path) > 0:
                return open(path).read().strip()
            time.sleep(0.05)
        raise RuntimeError("timed out waiting for " + path)

    def ctl(self, *args, check=True, inp=None):
        r = subprocess.run([self.binary, "ctl", "--control", self.sock] + list(args),
                           capture_output=True, text=True, input=inp, timeout=30)
        if check and r.returncode != 0:
            raise RuntimeError("ctl %s: %s %s" % (args, r.stdout, r.stderr))
        return r.stdout

    def setup(self):
        T = self.T
        pki = os.path.join(T, "pki")
        names = "api.example.com tun.example.com *.dyn.example.com".split()
        subprocess.run(["bash", "-c", '. "$0/scripts/common.sh"; make_ca "$@"', SRC, pki]
                       + names, check=True)
        self.upstream_ca = os.path.join(pki, "ca.pem")
        py = sys.executable
        ports = {}
        for name, extra in (("up", []), ("tls", ["--cert", pki + "/server.pem",
                                                 "--key", pki + "/server.key"])):
            self.spawn([py, TOOLS + "/fake_upstream.py", "--port-file", T + "/%s.port" % name,
                        "--log", "/dev/null"] + extra, T + "/%s.log" % name)
        self.spawn([py, TOOLS + "/tcp_server.py", T + "/smtp.port", "--banner",
                    "220 soak\\r\\n", "--reply", "none"], T + "/smtp.log")
        self.spawn([py, TOOLS + "/fake_callback.py", "--log", "/dev/null", "--port-file",
                    T + "/cb.port", "--host-mode", "fail.corp.example=status:500",
                    "--host-mode", "hang.corp.example=hang"], T + "/cb.log")
        for name in ("up", "tls", "smtp", "cb"):
            ports[name] = int(self.wait_file(T + "/%s.port" % name))
        self.ports = ports
        os.makedirs(T + "/secrets", exist_ok=True)
        with open(T + "/secrets/KEY", "w") as f:
            f.write("soak-secret-%d\n" % os.getpid())
        for variant in ("a", "b"):
            with open(T + "/config-%s.json" % variant, "w") as f:
                json.dump(self.config(variant), f)
        env = dict(os.environ)
        for kv in filter(None, os.environ.get("AUTHPROXY_SOAK_ENV", "").split()):
            k, _, v = kv.partition("=")
            env[k] = v
        wrap = os.environ.get("AUTHPROXY_SOAK_WRAP", "").split()
        self.daemon = self.spawn(
            wrap + [self.binary, "serve", "--state-dir", self.state, "--control", self.sock,
             "--secrets-dir", T + "/secrets", "--upstream-ca", self.upstream_ca,
             "--log", T + "/audit.jsonl", "--idle-timeout", str(self.a.idle_timeout),
             "--drain-timeout", "1", "--leaf-cache", "64", "--dns-max-names", "256",
             "--log-interval", "2"], T + "/serve.log", env=env)
        for _ in range(400):
            if os.path.exists(self.sock) and \
                    subprocess.run([self.binary, "ctl", "--control", self.sock, "health"],
                                   capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("daemon did not start; see " + T + "/serve.log")
        self.ctl("secret-set", "ROT", inp="rot-0")
        self.ctl("config-set", "stored", "--config", T + "/config-a.json")
        self.keep = []
        for i in range(2):
            self.keep.append(self.attach("keep%d" % i, "a"))

    def config(self, variant):
        up, tls = "127.0.0.1:%d" % self.ports["up"], "127.0.0.1:%d" % self.ports["tls"]
        remap = {"api.example.com": tls, "plain.example.com": up, "tun.example.com": tls,
                 "np.example.com": up, "evil.example.com": up,
                 "smtp.example.com": "127.0.0.1:%d" % self.ports["smtp"]}
        for h in ("ok", "fail", "hang"):
            remap[h + ".corp.example"] = up
        for i in range(DYN):
            remap["d%d.dyn.example.com" % i] = tls
        deny = ["evil.example.com", "10.66.0.0/16",
                {"hosts": ["plain.example.com"], "methods": ["DELETE"]}]
        if variant == "b":
            deny.append("tun.example.com")  # closes open tunnels at the PATCH
        return {
            "rules": [{"name": "api", "allow_plain_http": True,
                       "match_hosts": ["api.example.com", "plain.example.com",
                                       "*.dyn.example.com"],
                       "headers": [{"name": "Authorization", "type": "workspace_secret",
                                    "value": "Bearer {KEY}"},
                                   {"name": "X-Variant", "type": "plaintext",
                                    "value": variant},
                                   {"name": "X-Rot", "type": "workspace_secret",
                                    "value": "{ROT}"}]}],
            "no_proxy": ["np.example.com"],
            "callback": {"url": "http://127.0.0.1:%d/creds" % self.ports["cb"],
                         "match_hosts": ["*.corp.example"], "allow_plain_http": True,
                         "ttl_seconds": 1, "timeout_ms": 800},
            "egress": {"default": "allow", "deny": deny},
            "dns": {"remap": remap}}

    def make_netns(self, tag):
        ns = "soak-%s-%d" % (tag, os.getpid())
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "netns", "add", ns], check=True)
        self.netns.append(ns)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        return ns

    def attach(self, name, how):
        """how: 'a' inline config, 'stored' by config name, 'pid' by /proc/PID/ns/net."""
        rec = {"name": name, "how": how, "proc": None}
        if how == "pid":
            p = subprocess.Popen(["unshare", "-n", "sh", "-c",
                                  "ip link set lo up; exec sleep 120"])
            self.pids.append(p)
            rec["proc"] = p
            path = "/proc/%d/ns/net" % p.pid
            for _ in range(100):  # until unshare has exec'd into its own namespace
                if os.readlink(path) != os.readlink("/proc/self/ns/net"):
                    break
                time.sleep(0.02)
            time.sleep(0.1)  # lo up
        else:
            rec["ns"] = self.make_netns(name)
            path = "/var/run/netns/" + rec["ns"]
        rec["netns_path"] = path
        args = ["attach", name, "--netns", path]
        args += ["--config-name", "stored"] if how == "stored" else \
            ["--config", self.T + "/config-a.json"]
        ca = self.ctl(*args)
        rec["ca"] = self.T + "/%s-ca.pem" % name
        with open(rec["ca"], "w") as f:
            f.write(ca)
        return rec

    def run_traffic(self, rec):
        exe = ["nsenter", "--net=" + rec["netns_path"]]
        r = subprocess.run(exe + [sys.executable, os.path.abspath(__file__), "traffic",
                                  "--ca", rec["ca"], "--upstream-ca", self.upstream_ca,
                                  "--cycle", str(self.cycle),
                                  "--idle-timeout", str(self.a.idle_timeout)],
                           capture_output=True, text=True, timeout=120)
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            return {"traffic failed": r.stderr[-300:]}

    def detach(self, rec):
        if rec.get("delete_first"):
            self.ctl("detach", rec["name"])
            rec["proc"].kill()
            rec["proc"].wait()
            return
        if rec["how"] == "pid":
            rec["proc"].kill()  # the daemon detaches it when the process exits
            rec["proc"].wait()
            for _ in range(100):
                if '"%s"' % rec["name"] not in self.ctl("list"):
                    return
                time.sleep(0.05)
            print("warning: %s not detached after its process exited" % rec["name"])
            return
        self.ctl("detach", rec["name"])
        subprocess.run(["ip", "netns", "del", rec["ns"]], capture_output=True)
        self.netns.remove(rec["ns"])

    def metrics(self):
        m = {}
        try:
            for line in self.ctl("metrics").splitlines():
                if line and not line.startswith("#"):
                    k, _, v = line.rpartition(" ")
                    m[k] = float(v)
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        return m

    def sample(self, kind, gdb=False):
        pid = self.daemon.pid
        try:
            with open("/proc/%d/status" % pid) as f:
                st = dict(l.split(":", 1) for l in f)
            rss = int(st["VmRSS"].split()[0])
            fds = len(os.listdir("/proc/%d/fd" % pid))
            threads = int(st["Threads"])
        except (OSError, KeyError):
            return None
        m = self.metrics()
        closed = sum(v for k, v in m.items()
                     if k.startswith("authproxy_connections_closed_total{"))
        files = []
        for root, _, fs in os.walk(self.state):
            files += [os.path.relpath(os.path.join(root, f), self.state) for f in fs]
        nets = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True,
                                text=True).stdout
        s = {"t": round(time.time(), 1), "kind": kind, "cycle": self.cycle,
             "rss_kb": rss, "fds": fds, "threads": threads,
             "state_files": len(files), "netns": nets.count("soak-"),
             "host_nft_tables": len(tables.splitlines()),
             "open_after_accept": m.get("authproxy_connections_accepted_total", 0) - closed}
        for k in ("authproxy_connections_active", "authproxy_sandboxes",
                  "authproxy_dns_names", "authproxy_cert_cache_entries",
                  "authproxy_upstream_pooled", "authproxy_write_queued_bytes",
                  "authproxy_connections_accepted_total",
                  "authproxy_requests_total", "authproxy_audit_records_total",
                  "authproxy_audit_dropped_total", "authproxy_callback_calls_total",
                  "authproxy_cert_minted_total", "authproxy_sandboxes_not_attached"):
            s[k.replace("authproxy_", "")] = m.get(k)
        if gdb:
            s.update(self.handles())
        with self.lock:
            self.samples.write(json.dumps(s) + "\n")
            self.samples.flush()
        return s

    GDB = """set pagination off
set confirm off
thread 1
frame function proxy_cmd_serve
set $n = 0
set $h = (void **)d->loop.handle_queue[0]
while $h != (void **)&d->loop.handle_queue && $n < 1000000
  set $n = $n + 1
  set $h = (void **)$h[0]
end
printf "HANDLES %d %u %u %u\\n", $n, d->loop.active_handles, d->loop.timer_heap.nelts, \
  d->loop.active_reqs.count
@EXTRA@
detach
quit
"""

    def handles(self):
        """The event loop's handles (all, active), timers and requests, read with gdb
        from the daemon's serve frame (it is stopped for about a second)."""
        path = self.T + "/handles.gdb"
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(self.GDB.replace("@EXTRA@", os.environ.get(
                    "AUTHPROXY_SOAK_GDB", "call (void)malloc_stats()")))
        try:
            r = subprocess.run(["gdb", "-q", "-batch", "-x", path, "-p",
                                str(self.daemon.pid)], capture_output=True, text=True,
                               timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return {}
        got = {}
        for line in r.stdout.splitlines():
            if line.startswith("ALLOC "):  # from AUTHPROXY_SOAK_GDB, if it prints one
                got["allocated"] = int(line.split()[1])
            if line.startswith("HANDLES "):
                n = [int(x) for x in line.split()[1:]]
                got.update({"handles": n[0], "active_handles": n[1], "timers": n[2],
                            "reqs": n[3]})
        return got

    def sampler(self):
        while not self.stop.wait(30):
            self.sample("periodic")

    def wait_idle(self, secs=30):
        for _ in range(secs * 4):
            m = self.metrics()
            closed = sum(v for k, v in m.items()
                         if k.startswith("authproxy_connections_closed_total{"))
            if m.get("authproxy_connections_active", 1) == 0 and \
                    m.get("authproxy_connections_accepted_total", 0) == closed:
                return True
            time.sleep(0.25)
        return False

    def run(self):
        a = self.a
        self.setup()
        threading.Thread(target=self.sampler, daemon=True).start()
        self.wait_idle()
        base = self.sample("idle", gdb=bool(a.gdb_every))
        print("start:", json.dumps(base))
        s = base
        deadline = time.time() + a.minutes * 60
        variants = ("a", "b")
        for self.cycle in range(1, a.cycles + 1):
            if time.time() > deadline or self.daemon.poll() is not None:
                break
            # Control-plane churn: a pushed secret rotated, a stored config replaced.
            self.ctl("secret-set", "ROT", inp="rot-%d" % self.cycle)
            self.ctl("config-set", "stored", "--config",
                     self.T + "/config-%s.json" % ("a", "b")[self.cycle % 2])
            tr = []
            for i in range(a.transient):
                how = ("a", "stored", "pid", "a")[i % 4]
                # One name comes back every cycle (a runtime that reuses names).
                name = "reuse" if i == 3 else "c%d-%d" % (self.cycle, i)
                tr.append(self.attach(name, how))
            if self.cycle % 2 == 0:
                # Attached by /proc/PID/ns/net, detached by DELETE while PID lives on.
                tr.append(self.attach("c%d-pidctl" % self.cycle, "pid"))
                tr[-1]["delete_first"] = True
            outcomes = {}
            threads = []
            results = []
            for rec in self.keep + tr:
                t = threading.Thread(target=lambda r=rec: results.append(self.run_traffic(r)))
                t.start()
                threads.append(t)
                time.sleep(0.2)
            # Mid-traffic: PATCH every sandbox, rotate the audit log.
            time.sleep(1)
            v = variants[self.cycle % 2]
            for rec in self.keep + tr:
                self.ctl("update", rec["name"], "--config", self.T + "/config-%s.json" % v,
                         check=False)
            log = self.T + "/audit.jsonl"
            if os.path.exists(log):
                os.replace(log, log + ".1")
            self.daemon.send_signal(signal.SIGHUP)
            for t in threads:
                t.join(150)
            for r in results:
                for k, n in r.items():
                    outcomes[k] = outcomes.get(k, 0) + (n if isinstance(n, int) else 1)
            for rec in tr:
                self.detach(rec)
            if os.path.exists(log + ".1"):
                os.unlink(log + ".1")
            idle = self.wait_idle()
            s = self.sample("idle", gdb=a.gdb_every and self.cycle % a.gdb_every == 0)
            print("cycle %d idle=%s rss=%s fds=%s handles=%s timers=%s state=%s names=%s "
                  "certs=%s pooled=%s active=%s sandboxes=%s | %s" % (
                      self.cycle, idle, s["rss_kb"], s["fds"], s.get("handles"),
                      s.get("timers"), s["state_files"],
                      s["dns_names"], s["cert_cache_entries"], s["upstream_pooled"],
                      s["connections_active"], s["sandboxes"],
                      " ".join("%s=%d" % kv for kv in sorted(outcomes.items()))))
            sys.stdout.flush()
            time.sleep(a.pause)
        print("end:  ", json.dumps(s))

    def cleanup(self):
        self.stop.set()
        if self.daemon and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                rc = self.daemon.wait(30)
                print("daemon exit status", rc)
            except subprocess.TimeoutExpired:
                print("daemon did not stop in 30 s")
        for p in self.pids:
            if p.poll() is None:
                p.kill()
        for p in self.pids:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        for ns in self.netns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        print("output in", self.T)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "traffic":
        ap = argparse.ArgumentParser()
        ap.add_argument("traffic")
        ap.add_argument("--ca", required=True)
        ap.add_argument("--upstream-ca", required=True)
        ap.add_argument("--cycle", type=int, default=0)
        ap.add_argument("--idle-timeout", type=int, default=3)
        ap.add_argument("--names", type=int, default=10)
        ap.add_argument("--leaves", type=int, default=3)
        traffic(ap.parse_args())
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(SRC, "build"))
    ap.add_argument("--cycles", type=int, default=40)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--transient", type=int, default=4)
    ap.add_argument("--idle-timeout", type=int, default=3)
    ap.add_argument("--pause", type=float, default=2)
    ap.add_argument("--gdb-every", type=int, default=3,
                    help="count the loop's handles and timers with gdb every N cycles")
    ap.add_argument("--out")
    a = ap.parse_args()
    s = Soak(a)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    try:
        s.run()
    except KeyboardInterrupt:
        print("interrupted")
    finally:
        s.cleanup()


if __name__ == "__main__":
    main()
