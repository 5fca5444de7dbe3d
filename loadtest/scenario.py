#!/usr/bin/env python3
"""Static vs adaptive admission when the dependency loses capacity mid-run. Loopback, bounded (~3 min).

An api (role api) and a simulated upstream (role upstream, 50 ms per call) run as separate
processes. Constant offered load: 2000 req/s, from oha's open-loop rate mode when it is installed
(`oha -q 2000 --latency-correction -c 400`: requests leave on schedule whatever the answers), else
from 400 hey clients at 5 req/s each in 40 staggered processes (`--load-tool hey` to choose). The
upstream serves 50 calls at once (capacity 1000/s) until, 15 s into the load, it
loses capacity (upstream.degrade_after_seconds): from then on it serves 10 at once (200/s), as when
a dependency loses replicas. Nothing restarts, so every failure seen is the capacity loss's doing.
Each run reports, per phase (before the drop, its first 5 s, the 20 s after), goodput (200/s),
admitted p50/p99, counts of 429/502/503/504, breaker openings and the live limit; and goodput
second by second. Runs: admission static and adaptive, each with the default (consecutive)
breaker and with breaker.mode = failure_rate.

Usage: cargo build --release && python3 loadtest/scenario.py [--record] [--runs static/consecutive,...]
Needs: hey (apt-get install -y hey); optional: oha (cargo install --locked oha)
"""

import argparse
import csv
import datetime
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import (
    LOAD_TOOLS,
    ROOT,
    NotUp,
    binary_arg,
    free_port,
    get,
    git_commit,
    percentile,
    pick_load_tool,
    series,
    spawn,
    stop,
    wait_up,
)

BEFORE, AFTER, SETTLE = 15, 25, 5  # seconds before the drop, after it, and of those the first (transient)
CAPACITY = (50, 10)  # upstream.concurrency before and after the drop (50 ms per call: 1000/s, 200/s)
CLIENTS, GROUPS, RATE = 400, 40, 5
RUNS = [
    ("static", "consecutive"),
    ("adaptive", "consecutive"),
    ("static", "failure_rate"),
    ("adaptive", "failure_rate"),
]


NAN = float("nan")


def sample(api):
    """(time, the live high-priority limit, breaker openings so far)."""
    text = get(f"{api}/metrics")[1]
    return (
        time.time(),
        series(text, "admission_limit", priority="high"),
        series(text, "circuit_breaker_transitions_total", to="open"),
    )


def run(mode, breaker, binary, workdir):
    up_port, api_port = free_port(), free_port()
    # LOAD_SHED_SCENARIO_LOG=debug logs every change of the adaptive limit (in the api's log).
    base = {"PATH": os.environ["PATH"], "RUST_LOG": os.environ.get("LOAD_SHED_SCENARIO_LOG", "warn")}
    name = f"{mode}-{breaker}"
    api_env = {
        **base,
        "LOAD_SHED__ROLE": "api",
        "LOAD_SHED__API__LISTEN": f"127.0.0.1:{api_port}",
        "LOAD_SHED__API__UPSTREAM_URL": f"http://127.0.0.1:{up_port}",
        "LOAD_SHED__ADMISSION__MODE": mode,
        "LOAD_SHED__BREAKER__MODE": breaker,
    }
    api = f"http://127.0.0.1:{api_port}"
    # The api first, so the upstream's clock (its degrade timer) starts just before the load.
    api_proc = spawn([binary], workdir / f"{name}-api.log", env=api_env, cwd=workdir)
    wait_up(f"{api}/healthz", api_proc, "the api")
    up_env = {
        **base,
        "LOAD_SHED__ROLE": "upstream",
        "LOAD_SHED__UPSTREAM__LISTEN": f"127.0.0.1:{up_port}",
        "LOAD_SHED__UPSTREAM__LATENCY_MS": "50",
        "LOAD_SHED__UPSTREAM__CONCURRENCY": str(CAPACITY[0]),
        "LOAD_SHED__UPSTREAM__DEGRADED_CONCURRENCY": str(CAPACITY[1]),
        "LOAD_SHED__UPSTREAM__DEGRADE_AFTER_SECONDS": str(BEFORE + 1),
        "LOAD_SHED__SHUTDOWN__GRACE_SECONDS": "0",
    }
    up_started = time.time()
    up = spawn([binary], workdir / f"{name}-up.log", env=up_env, cwd=workdir)
    wait_up(f"http://127.0.0.1:{up_port}/healthz", up, "the upstream")
    drop = up_started + BEFORE + 1
    # Load starts one second before the drop minus BEFORE; runs until AFTER seconds past it.
    time.sleep(max(0.0, drop - BEFORE - time.time()))
    start = time.time()
    total = drop + AFTER - start
    heys, files = [], []
    if LOAD_TOOL == "oha":
        path = workdir / f"{name}-oha.csv"
        files.append(path)
        with open(path, "w") as out:
            # oha takes whole seconds; the phases are cut by time, so the last fraction is unused.
            heys.append(
                subprocess.Popen(
                    [
                        "oha",
                        "-z",
                        f"{math.ceil(total)}s",
                        "-q",
                        str(CLIENTS * RATE),
                        "--latency-correction",
                        "-c",
                        str(CLIENTS),
                        "-t",
                        "5s",
                        "--no-tui",
                        "--output-format",
                        "csv",
                        f"{api}/client",
                    ],
                    stdout=out,
                    stderr=subprocess.DEVNULL,
                )
            )
    else:
        for g in range(GROUPS):
            path = workdir / f"{name}-{g}.csv"
            files.append(path)
            with open(path, "w") as out:
                heys.append(
                    subprocess.Popen(
                        [
                            "hey",
                            "-z",
                            f"{total:.1f}s",
                            "-c",
                            str(CLIENTS // GROUPS),
                            "-q",
                            str(RATE),
                            "-t",
                            "5",
                            "-o",
                            "csv",
                            f"{api}/client",
                        ],
                        stdout=out,
                        stderr=subprocess.DEVNULL,
                    )
                )
            time.sleep(1.0 / RATE / GROUPS)
    samples = []  # (time, high limit, breaker openings so far)
    while time.time() < start + total:
        samples.append(sample(api))
        time.sleep(0.5)
    for h in heys:
        h.wait(timeout=60)
    samples.append(sample(api))
    stop(api_proc)
    stop(up)
    # Both CSVs give each request's start (from the tool's own start) and duration; a request belongs
    # to the phase it ended in. oha's start is when the request was due (--latency-correction).
    rows = []
    for g, path in enumerate(files):
        with open(path) as f:
            for r in csv.DictReader(f):
                if LOAD_TOOL == "oha":
                    began, took, status = float(r["request-start"]), float(r["request-duration"]), r["status"]
                else:
                    began, took, status = (
                        g / RATE / GROUPS + float(r["offset"]),
                        float(r["response-time"]),
                        r["status-code"],
                    )
                rows.append((start + began + took, status, took * 1000))
    phases = [
        ("before the drop (1000/s)", start, drop),
        (f"drop +0-{SETTLE} s (200/s)", drop, drop + SETTLE),
        (f"drop +{SETTLE}-{AFTER} s (200/s)", drop + SETTLE, drop + AFTER),
    ]
    results = []
    for label, lo, hi in phases:
        phase = [r for r in rows if lo <= r[0] < hi]
        ok = [r[2] for r in phase if r[1] == "200"]
        count = {s: sum(1 for r in phase if r[1] == s) for s in ("200", "429", "502", "503", "504")}
        inside = [x for x in samples if lo <= x[0] < hi]
        lim = [x[1] for x in inside]
        before = [x[2] for x in samples if x[0] < lo]
        after = [x[2] for x in samples if x[0] < hi]
        opens = (after[-1] if after else 0) - (before[-1] if before else 0)
        results.append(
            {
                "phase": label,
                "goodput": len(ok) / (hi - lo),
                "p50": percentile(ok, 50, NAN),
                "p99": percentile(ok, 99, NAN),
                "count": count,
                "opens": opens,
                "limit": f"{min(lim):.0f}–{max(lim):.0f}" if lim else "-",
            }
        )
    per_second = [sum(1 for r in rows if r[1] == "200" and drop + s <= r[0] < drop + s + 1) for s in range(-5, AFTER)]
    return results, per_second


LOAD_TOOL = "hey"  # "oha" when installed (see main)


def offered():
    if LOAD_TOOL == "oha":
        return f"{CLIENTS * RATE} req/s from `oha -q {CLIENTS * RATE} --latency-correction -c {CLIENTS}` (open loop)"
    return f"{CLIENTS} clients x {RATE} req/s from {GROUPS} staggered hey processes"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", type=binary_arg, default=str(ROOT / "target/release/load-shed-api"))
    p.add_argument("--record", action="store_true", help="append to loadtest/RESULTS.md")
    p.add_argument(
        "--runs",
        default=",".join(f"{m}/{b}" for m, b in RUNS),
        help="admission/breaker pairs, comma-separated (default: all four)",
    )
    p.add_argument(
        "--load-tool",
        choices=LOAD_TOOLS,
        default="auto",
        help="oha's open-loop rate mode when installed (auto), else staggered hey processes",
    )
    args = p.parse_args()
    global LOAD_TOOL
    LOAD_TOOL = pick_load_tool(args.load_tool)
    print(f"load: {'oha, open loop' if LOAD_TOOL == 'oha' else f'{GROUPS} staggered hey processes'}", flush=True)
    runs = [tuple(r.split("/")) for r in args.runs.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="load-shed-scenario-"))
    lines = [
        ("| admission | breaker | phase | goodput (200/s) | admitted p50 / p99 ms | 429 | 502 | 503 | 504 | breaker "
        "opened | live limit (high) |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    series = []
    for mode, breaker in runs:
        results, per_second = run(mode, breaker, args.binary, workdir)
        for r in results:
            c = r["count"]
            lines.append(
                f"| {mode} | {breaker} | {r['phase']} | {r['goodput']:.0f} | {r['p50']:.0f} / {r['p99']:.0f} | "
                f"{c['429']} "
                f"| {c['502']} | {c['503']} | {c['504']} | {r['opens']:.0f} | {r['limit']} |"
            )
            print(lines[-1], flush=True)
        series.append(
            f"- {mode} / {breaker}: "
            + " ".join(str(n) for n in per_second[:5])
            + " **|** "
            + " ".join(str(n) for n in per_second[5:])
        )
        print(series[-1], flush=True)
    if args.record:
        commit = git_commit()
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(ROOT / "loadtest/RESULTS.md", "a") as f:
            f.write(
                f"## Scenario {stamp} — commit {commit}: static vs adaptive admission, capacity drop\n\n"
                f"Command: `python3 loadtest/scenario.py --record` (release build, {os.cpu_count()} cores, load "
                "tool on the same cores). "
                f"Offered: {offered()}; upstream 50 ms per call, "
                f"concurrency {CAPACITY[0]} dropping to {CAPACITY[1]} (upstream.degrade_after_seconds); default "
                "timeout (200 ms), "
                f"breaker open 10 s; `failure_rate` = window 100 calls, minimum 20, threshold 50 %.\n\n"
                + "\n".join(lines)
                + "\n\nGoodput (200/s) second by second, 5 s before the drop **|** 25 s after:\n\n"
                + "\n".join(series)
                + "\n\n"
            )
    print(f"logs in {workdir}")


if __name__ == "__main__":
    try:
        main()
    except NotUp as e:
        sys.exit(str(e))
