#!/usr/bin/env python3
"""Static vs adaptive admission when the dependency loses capacity mid-run. Loopback, bounded (~1 min).

An api (role api) and a simulated upstream (role upstream, 50 ms per call) run as separate
processes. Constant offered load: 400 clients at 5 req/s each (2000 req/s), from 8 staggered hey
processes. Phase 1 (15 s): the upstream serves 50 calls at once (capacity 1000/s). Phase 2 (20 s):
it is replaced by one serving 10 at once (capacity 200/s), as when a dependency loses replicas.
The whole run is done twice, with admission.mode static and adaptive; each phase reports goodput
(200/s), admitted p50/p99, counts of 429/502/503/504 and breaker openings.

Usage: cargo build --release && python3 loadtest/scenario.py [--record]
Needs: hey (apt-get install -y hey)
"""

import argparse
import csv
import datetime
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHASES = [("capacity 1000/s (concurrency 50)", 50, 15), ("capacity 200/s (concurrency 10)", 10, 20)]
CLIENTS, GROUPS, RATE = 400, 8, 5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric(api, name, **labels):
    with urllib.request.urlopen(f"{api}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if (line.startswith(name + "{") or line.startswith(name + " ")) and all(
                f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_up(url, proc):
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"exited {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{url} did not come up")


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def percentile(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def run(mode, binary, workdir):
    up_port, api_port = free_port(), free_port()
    base = {"PATH": os.environ["PATH"], "RUST_LOG": "warn"}
    api_env = {**base, "LOAD_SHED__ROLE": "api", "LOAD_SHED__API__LISTEN": f"127.0.0.1:{api_port}",
               "LOAD_SHED__API__UPSTREAM_URL": f"http://127.0.0.1:{up_port}", "LOAD_SHED__ADMISSION__MODE": mode}
    api = f"http://127.0.0.1:{api_port}"

    def upstream(concurrency):
        env = {**base, "LOAD_SHED__ROLE": "upstream", "LOAD_SHED__UPSTREAM__LISTEN": f"127.0.0.1:{up_port}",
               "LOAD_SHED__UPSTREAM__CONCURRENCY": str(concurrency), "LOAD_SHED__UPSTREAM__LATENCY_MS": "50",
               "LOAD_SHED__SHUTDOWN__GRACE_SECONDS": "0"}
        p = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=open(workdir / f"{mode}-up.log", "ab"))
        wait_up(f"http://127.0.0.1:{up_port}/healthz", p)
        return p

    up = upstream(PHASES[0][1])
    api_proc = subprocess.Popen([binary], env=api_env, stdout=subprocess.DEVNULL, stderr=open(workdir / f"{mode}-api.log", "wb"))
    wait_up(f"{api}/healthz", api_proc)
    total = sum(p[2] for p in PHASES)
    heys, files = [], []
    start = time.time()
    for g in range(GROUPS):
        path = workdir / f"{mode}-{g}.csv"
        out = open(path, "w")
        files.append((path, out))
        heys.append(subprocess.Popen(["hey", "-z", f"{total}s", "-c", str(CLIENTS // GROUPS), "-q", str(RATE),
                                      "-t", "5", "-o", "csv", f"{api}/client"], stdout=out, stderr=subprocess.DEVNULL))
        time.sleep(1.0 / RATE / GROUPS)
    boundaries, opens = [start], [metric(api, "circuit_breaker_transitions_total", to="open")]
    limits = []
    for i, (_, _, seconds) in enumerate(PHASES):
        phase_end = boundaries[-1] + seconds
        while time.time() < phase_end:
            limits.append((i, metric(api, "admission_limit", priority="normal")))
            time.sleep(1)
        opens.append(metric(api, "circuit_breaker_transitions_total", to="open"))
        boundaries.append(time.time())
        if i + 1 < len(PHASES):
            stop(up)  # the dependency loses capacity
            up = upstream(PHASES[i + 1][1])
    for h in heys:
        h.wait(timeout=60)
    stop(api_proc)
    stop(up)
    # hey's CSV: response-time and the offset from its start; group rows by phase.
    rows = []
    for g, (path, out) in enumerate(files):
        out.close()
        with open(path) as f:
            for r in csv.DictReader(f):
                t = start + g / RATE / GROUPS + float(r["offset"])
                rows.append((t, r["status-code"], float(r["response-time"]) * 1000))
    results = []
    for i, (name, _, seconds) in enumerate(PHASES):
        lo, hi = boundaries[i], boundaries[i + 1]
        phase = [r for r in rows if lo <= r[0] < hi]
        ok = [r[2] for r in phase if r[1] == "200"]
        count = {s: sum(1 for r in phase if r[1] == s) for s in ("200", "429", "502", "503", "504")}
        lim = [l for p, l in limits if p == i]
        results.append({"phase": name, "goodput": len(ok) / (hi - lo), "p50": percentile(ok, 50), "p99": percentile(ok, 99),
                        "count": count, "opens": opens[i + 1] - opens[i],
                        "normal_limit": f"{min(lim):.0f}–{max(lim):.0f}" if lim else "-"})
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", default=str(ROOT / "target/release/load-shed-api"))
    p.add_argument("--record", action="store_true", help="append to loadtest/RESULTS.md")
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="load-shed-scenario-"))
    lines = ["| admission | phase | goodput (200/s) | admitted p50 / p99 ms | 429 | 502 | 503 | 504 | breaker opened | normal limit |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for mode in ("static", "adaptive"):
        for r in run(mode, args.binary, workdir):
            c = r["count"]
            lines.append(f"| {mode} | {r['phase']} | {r['goodput']:.0f} | {r['p50']:.0f} / {r['p99']:.0f} | {c['429']} | {c['502']} "
                         f"| {c['503']} | {c['504']} | {r['opens']:.0f} | {r['normal_limit']} |")
            print(lines[-1], flush=True)
    if args.record:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        with open(ROOT / "loadtest/RESULTS.md", "a") as f:
            f.write(f"## Scenario {stamp} — commit {commit}: static vs adaptive admission, capacity drop\n\n"
                    f"Command: `python3 loadtest/scenario.py --record` (release build, {os.cpu_count()} cores). "
                    f"Offered: {CLIENTS} clients x {RATE} req/s from {GROUPS} staggered hey processes; upstream 50 ms per call, "
                    f"default timeout (200 ms) and breaker (5 consecutive failures, 10 s open).\n\n" + "\n".join(lines) + "\n\n")
    print(f"logs in {workdir}")


if __name__ == "__main__":
    main()
