#!/usr/bin/env python3
"""Turns the benchmark's JSON lines (scripts/bench/run.sh) into a markdown report:
medians over repetitions, ratios of the proxied path to the direct one, the issue's
targets, and the proxy's CPU and memory."""
import argparse
import json
import re
import os
import platform
import statistics
import subprocess
from collections import defaultdict

MIB = 1 << 20

# id: (title, metric, unit, target ratio or None)
LOADS = [
    ("http_ka", "Plain HTTP keep-alive, 1 KiB, 16 conns", "req/s", 0.90),
    ("http_lat", "Plain HTTP keep-alive, 1 KiB, 1 conn", "req/s", None),
    ("https_ka", "Intercepted HTTPS keep-alive, 1 KiB, 16 conns", "req/s", 0.85),
    ("https_lat_bulk", "Intercepted HTTPS keep-alive, 1 KiB, 1 conn, beside an intercepted 100 MiB download", "req/s", None),
    ("https_new_cold", "Intercepted HTTPS, new connection per request, full handshakes, 16 conns", "conn/s", 0.50),
    ("https_new_warm", "Intercepted HTTPS, new connection per request, sessions resumed, 16 conns", "conn/s", 0.50),
    ("http_1m", "Plain HTTP 1 MiB responses, 4 conns", "MiB/s", 0.60),
    ("https_1m", "Intercepted HTTPS 1 MiB responses, 4 conns", "MiB/s", 0.60),
    ("tunnel_1m", "Tunnelled HTTPS 1 MiB responses, 4 conns", "MiB/s", 0.90),
    ("tunnel_100m", "Tunnelled HTTPS 100 MiB download, 1 conn", "MiB/s", 0.90),
]


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, unit=""):
    if x is None:
        return "n/a"
    if abs(x) >= 100:
        s = f"{x:,.0f}"
    elif abs(x) >= 10:
        s = f"{x:.1f}"
    else:
        s = f"{x:.2f}"
    return f"{s} {unit}".strip()


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}"


def tool_versions():
    out = []
    for cmd in (["nginx", "-v"], ["openssl", "version"]):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
            out.append((r.stdout + r.stderr).strip().splitlines()[0])
        except (OSError, IndexError, subprocess.SubprocessError):
            pass
    return ", ".join(out)


def callgrind_report(a, runs, p):
    p("# authproxy: instructions per request (callgrind)\n")
    p(f"- authproxy {a.rev}, under valgrind --tool=callgrind on {machine()}")
    p("- user space of the proxy process: authproxy, libuv, llhttp, mbedTLS, libc "
      "(the kernel's share is not counted); each load runs N and then 2N requests and "
      "the difference is divided by N, so the first connection of each client "
      "(a keep-alive load's handshakes, a resuming client's first full handshake) "
      "cancels out\n")
    p("| Load (fixed amount) | Requests | Instructions / request |")
    p("|---|---:|---:|")
    for scen, title, unit, target in LOADS:
        r = runs.get((scen, "proxy"))
        if not r:
            continue
        r = r[0]
        n = max(r["m"]["requests"], 1)
        name = re.sub(r", \d+ conns?$", "", title)
        p(f"| {name} | {n:,} | {r['ir'] / n:,.0f} |")


def per_request(r, key, scale=1.0):
    """A run's counter KEY (cpu_s, rwcalls, cswitches) per request, times SCALE."""
    return r.get(key, 0) * scale / max(r["m"]["requests"], 1)


def rep_ratios(runs, path, rate, mibs):
    """One line per load: PATH's ratio to the direct run of each repetition."""
    lines = []
    for scen, title, unit, _ in LOADS:
        fn = mibs if unit == "MiB/s" else rate
        d = {r["rep"]: fn(r) for r in runs.get((scen, "direct"), [])}
        x = {r["rep"]: fn(r) for r in runs.get((scen, path), [])}
        reps = sorted(set(d) & set(x))
        if len(reps) > 1:
            lines.append(f"- {title}: " + ", ".join(
                f"{x[i] / d[i]:.2f}x" for i in reps if d[i]))
    return lines


def haproxy_report(a, runs, metric, rate, mibs, p):
    """The same loads through HAProxy (run.sh --haproxy), beside authproxy."""
    p("")
    busy = (f"; both proxies busy polling: --busy-poll {a.busy_poll} and HAProxy's "
            "busy-polling" if a.busy_poll else "")
    p(f"The same loads through HAProxy (run.sh --haproxy: one thread on the proxy's "
      f"CPU{busy}):")
    p("")
    pairs = rep_ratios(runs, "haproxy", rate, mibs)
    p("| Measurement | Direct | authproxy | HAProxy | authproxy / direct | "
      "HAProxy / direct | CPU per request: authproxy / HAProxy | "
      "Context switches per request |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|")

    def per_req(scen, path, key="cpu_s", scale=1e6):
        return metric(scen, path, lambda r: per_request(r, key, scale))

    for scen, title, unit, _ in LOADS:
        if (scen, "haproxy") not in runs:
            continue
        fn = mibs if unit == "MiB/s" else rate
        d, x, h = (metric(scen, path, fn) for path in ("direct", "proxy", "haproxy"))
        rx = f"{x / d:.2f}x" if d and x is not None else ""
        rh = f"{h / d:.2f}x" if d and h is not None else ""
        cx, ch = per_req(scen, "proxy"), per_req(scen, "haproxy")
        sx, sh = (per_req(scen, path, "cswitches", 1) for path in ("proxy", "haproxy"))
        p(f"| {title}: {unit} | {fmt(d)} | {fmt(x)} | {fmt(h)} | {rx} | {rh} | "
          f"{fmt(cx)} / {fmt(ch)} µs | {fmt(sx)} / {fmt(sh)} |")
        if unit == "req/s":
            dl, xl, hl = (metric(scen, path, lambda r: r["m"]["p50_us"])
                          for path in ("direct", "proxy", "haproxy"))
            if None not in (dl, xl, hl):
                p(f"| {title}: p50 latency | {fmt(dl, 'µs')} | {fmt(xl, 'µs')} | "
                  f"{fmt(hl, 'µs')} | {'+' if xl >= dl else '−'}{fmt(abs(xl - dl), 'µs')} | "
                  f"{'+' if hl >= dl else '−'}{fmt(abs(hl - dl), 'µs')} | | |")
    if a.hwm_kb and a.haproxy_hwm_kb:
        p(f"| peak RSS over these loads | | {a.hwm_kb / 1024:.1f} MiB | "
          f"{a.haproxy_hwm_kb / 1024:.1f} MiB | | | | |")
    if pairs:
        p("")
        p("HAProxy's own ratio in each repetition (to that repetition's direct run; "
          "authproxy's ran between the two):")
        p("")
        for line in pairs:
            p(line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--hwm-kb", type=int, default=0)
    ap.add_argument("--reps", type=int, default=0)
    ap.add_argument("--duration", type=int, default=0)
    ap.add_argument("--proxy-cpu", default="0")
    ap.add_argument("--load-cpu", default="1")
    ap.add_argument("--rev", default="")
    ap.add_argument("--xcpu-us", type=float, default=0)
    ap.add_argument("--cc", default="")
    ap.add_argument("--samecpu-us", type=float, default=0)
    ap.add_argument("--callgrind", action="store_true")
    ap.add_argument("--busy-poll", type=int, default=0)
    ap.add_argument("--haproxy-hwm-kb", type=int, default=0)
    a = ap.parse_args()

    runs = defaultdict(list)  # (scenario, path) -> [record]
    with open(a.results) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                runs[(r["scenario"], r["path"])].append(r)

    def metric(scen, path, fn):
        return med([fn(r) for r in runs.get((scen, path), [])])

    def rate(r):
        m = r["m"]
        return m["requests"] * 1e6 / m["duration_us"]

    def mibs(r):
        m = r["m"]
        return m["bytes"] * 1e6 / m["duration_us"] / MIB

    out = []
    p = out.append
    if a.callgrind:
        callgrind_report(a, runs, p)
        print("\n".join(out))
        return
    p("# authproxy benchmark: latest run\n")
    p(f"- machine: {machine()}")
    p(f"- authproxy {a.rev}; {tool_versions()}")
    if a.proxy_cpu == a.load_cpu:
        p(f"- proxy, nginx and load generators all on CPU {a.load_cpu} (the proxy's cost "
          f"shows as the throughput it takes away); {a.reps} repetitions of "
          f"{a.duration} s, medians shown")
    else:
        p(f"- proxy pinned to CPU {a.proxy_cpu}; nginx and load generators share CPU "
          f"{a.load_cpu}; {a.reps} repetitions of {a.duration} s, medians shown")
    if a.cc:
        p(f"- TCP congestion control {a.cc} on every route of both paths")
    if a.busy_poll:
        p(f"- proxy run with --busy-poll {a.busy_poll}: it polls without sleeping for "
          f"{a.busy_poll} µs after each read, so its CPU figures include that spinning")
    else:
        p("- proxy run with its defaults (no --busy-poll)")
    if a.xcpu_us and a.proxy_cpu != a.load_cpu:
        p(f"- a wakeup round trip between the two CPUs costs {a.xcpu_us:.0f} µs here, "
          f"{a.samecpu_us:.0f} µs within one CPU; a proxied request crosses CPUs four "
          f"times, a direct one not at all")
    p("")
    p("| Measurement | Direct | authproxy | Ratio | Target | Proxy CPU | Proxy reads + writes, switches |")
    p("|---|---:|---:|---:|---:|---:|---:|")
    for scen, title, unit, target in LOADS:
        if (scen, "proxy") not in runs:
            continue
        fn = mibs if unit == "MiB/s" else rate
        d = metric(scen, "direct", fn)
        x = metric(scen, "proxy", fn)
        ratio = x / d if d and x is not None else None
        cpu = metric(scen, "proxy", lambda r: r["cpu_s"] / (r["m"]["duration_us"] / 1e6))
        per = metric(scen, "proxy", lambda r: per_request(r, "cpu_s", 1e6))
        mark = ""
        if target is not None and ratio is not None:
            mark = " ✓" if ratio >= target else " ✗"
        cpu_s = f"{cpu * 100:.0f}%, {per:.0f} µs/req" if cpu is not None else "n/a"
        sc = metric(scen, "proxy", lambda r: per_request(r, "rwcalls"))
        cs = metric(scen, "proxy", lambda r: per_request(r, "cswitches"))
        sc_s = f"{fmt(sc)} / {fmt(cs)} per req" if sc else ""
        p(f"| {title}: {unit} | {fmt(d)} | {fmt(x)} | {fmt(ratio)}x{mark} | "
          f"{'≥ %.2fx' % target if target else ''} | {cpu_s} | {sc_s} |")
        if unit == "req/s":
            for pct in ("p50", "p99"):
                dl = metric(scen, "direct", lambda r: r["m"][f"{pct}_us"])
                xl = metric(scen, "proxy", lambda r: r["m"][f"{pct}_us"])
                if dl is None or xl is None:
                    continue
                added = xl - dl
                tgt = "< +50 µs" if scen == "http_ka" and pct == "p50" else ""
                mk = (" ✓" if added < 50 else " ✗") if tgt else ""
                p(f"| {title}: {pct} latency | {fmt(dl, 'µs')} | {fmt(xl, 'µs')} | "
                  f"{'+' if added >= 0 else '−'}{fmt(abs(added), 'µs')}{mk} | {tgt} | | |")
        if scen.startswith("https_new") and (scen, "proxy") in runs:
            res = metric(scen, "proxy", lambda r: r["m"]["resumed"] / max(r["m"]["requests"], 1))
            if scen == "https_new_warm":
                p(f"| {title}: share resumed by the client | | {res * 100:.0f}% | | | | |")

    # The ratio of the medians above can pair a proxied run from one of the machine's
    # states with a direct run from another; each repetition runs the two back to
    # back, so its own ratio shows how far the states moved the figure.
    pairs = rep_ratios(runs, "proxy", rate, mibs)
    if pairs:
        p("")
        p("Each repetition's own ratio (its direct and proxied runs, back to back):")
        p("")
        out.extend(pairs)

    if any((scen, "haproxy") in runs for scen, _, _, _ in LOADS):
        haproxy_report(a, runs, metric, rate, mibs, p)

    if ("mint_new", "proxy") in runs:
        def mm(scen, path, key):
            r = runs.get((scen, path))
            return r[0]["m"][key] if r else None

        def cpu_per(scen):
            r = runs[(scen, "proxy")][0]
            return per_request(r, "cpu_s", 1e6)

        p("")
        p("| First contact with a name: TLS handshake only | Direct | authproxy | Proxy CPU |")
        p("|---|---:|---:|---:|")
        for scen, title in (("mint_new", "new names: p50 / p99"),
                            ("mint_cached", "the same names again: p50 / p99")):
            p(f"| {title} | {fmt(mm(scen, 'direct', 'p50_us'), 'µs')} / "
              f"{fmt(mm(scen, 'direct', 'p99_us'), 'µs')} | "
              f"{fmt(mm(scen, 'proxy', 'p50_us'), 'µs')} / {fmt(mm(scen, 'proxy', 'p99_us'), 'µs')} "
              f"| {cpu_per(scen):,.0f} µs/handshake |")
        p(f"| leaf minting (new − cached) | | "
          f"{fmt(mm('mint_new', 'proxy', 'p50_us') - mm('mint_cached', 'proxy', 'p50_us'), 'µs')} | "
          f"{cpu_per('mint_new') - cpu_per('mint_cached'):,.0f} µs |")

    p("")
    p("| Memory | authproxy | Target |")
    p("|---|---:|---:|")
    if a.hwm_kb:
        ok = " ✓" if a.hwm_kb <= 8 * 1024 else " ✗"
        p(f"| proxy peak RSS over the load tests above | {a.hwm_kb / 1024:.1f} MiB{ok} | ≤ 8 MiB |")
    for scen, title, target in (("idle_tunnel", "tunnelled", 4), ("idle_icpt", "intercepted", 48)):
        r = runs.get((scen, "proxy"))
        if not r:
            continue
        m = r[0]["m"]
        per = (m["rss1_kb"] - m["rss0_kb"]) / m["conns"]
        ok = " ✓" if per <= target else " ✗"
        p(f"| RSS per idle {title} connection ({m['conns']:,} open, after one request each) "
          f"| {per:.1f} KiB{ok} | ≤ {target} KiB |")
        p(f"| proxy RSS with them open | {m['rss1_kb'] / 1024:.1f} MiB | |")
    r = runs.get(("attach", "proxy"))
    if r:
        m = r[0]["m"]
        secs = statistics.median(x["m"]["ms"] for x in r) / 1000
        each = ", ".join("%.2f" % (x["m"]["ms"] / 1000) for x in r)
        spread = f" (runs: {each} s)" if len(r) > 1 else ""
        per = statistics.median(
            (x["m"]["rss1_kb"] - x["m"]["rss0_kb"]) / x["m"]["sandboxes"] for x in r)
        p(f"| time to attach {m['sandboxes']:,} sandboxes to one daemon ({m['clients']} "
          f"concurrent API clients){spread} | {secs:.2f} s{' ✓' if secs < 2 else ' ✗'} "
          f"| < 2 s |")
        if all("cpu_ms" in x["m"] for x in r):
            cpu = statistics.median(x["m"]["cpu_ms"] / x["m"]["sandboxes"] for x in r)
            p(f"| daemon CPU per attach (user + system, all its threads) | "
              f"{cpu:.2f} ms | |")
        p(f"| daemon RSS per attached sandbox, no connections | {per:.1f} KiB"
          f"{' ✓' if per <= 32 else ' ✗'} | ≤ 32 KiB |")
        p(f"| daemon RSS with them attached | {m['rss1_kb'] / 1024:.1f} MiB | |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
