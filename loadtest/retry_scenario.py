#!/usr/bin/env python3
"""What retries, the retry budget and hedging buy, and what they cost, against the simulated
dependency. Each case runs the release binary (role `all`) under closed-loop `hey` load, with
retries off, naive (3 attempts, immediate, a budget that never binds: budget_ratio 1000) and
budgeted (3 attempts, the defaults: budget_ratio 0.2, 10/s reserve over 10 s, full-jitter backoff
25-250 ms):

  (a) the dependency fails 10 % of calls: success seen by callers, and load amplification
      (upstream attempts / first attempts, from upstream_attempts_total);
  (b) the dependency is down (every call fails), with the default breaker: amplification, and when
      the breaker first opened;
  (b2) the same with the breaker out of the way (failure_threshold 10000): what the budget alone
      holds back;
  (c) 5 % of calls take 500 ms more (tail_rate / tail_ms): caller latency p50/p99 and the extra
      upstream load, without and with hedging (retry.hedge_after_ms = 30).

Prints the tables, draws loadtest/out/retries.png (gnuplot), and with --record appends both to
loadtest/RESULTS.md.

Usage: cargo build --release && python3 loadtest/retry_scenario.py [--seconds 12] [--record]
Needs: apt-get install -y hey gnuplot-nox
"""

import argparse
import csv
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import (
    ROOT,
    NotUp,
    binary_arg,
    free_port,
    get,
    git_commit,
    percentile,
    require_tools,
    series,
    spawn,
    stop,
    wait_up,
)

CLIENTS = 20
POLICIES = {
    "off": {"LOAD_SHED__RETRY__MAX_ATTEMPTS": "1"},
    "naive": {"LOAD_SHED__RETRY__MAX_ATTEMPTS": "3", "LOAD_SHED__RETRY__BUDGET_RATIO": "1000",
              "LOAD_SHED__RETRY__BACKOFF_BASE_MS": "0", "LOAD_SHED__RETRY__BACKOFF_MAX_MS": "0"},
    "budgeted": {"LOAD_SHED__RETRY__MAX_ATTEMPTS": "3"},
}
UPSTREAM = {"LOAD_SHED__UPSTREAM__LATENCY_MS": "20"}
CASES = {
    "a": ("fails 10 %", {"LOAD_SHED__UPSTREAM__FAIL_RATE": "0.1"}, POLICIES),
    "b": ("down, default breaker", {"LOAD_SHED__UPSTREAM__FAIL_RATE": "1.0"}, POLICIES),
    "b2": (
        "down, breaker out of the way",
        {"LOAD_SHED__UPSTREAM__FAIL_RATE": "1.0", "LOAD_SHED__BREAKER__FAILURE_THRESHOLD": "10000"},
        POLICIES,
    ),
    "c": (
        "5 % of calls 500 ms slower",
        {
            "LOAD_SHED__UPSTREAM__TAIL_RATE": "0.05",
            "LOAD_SHED__UPSTREAM__TAIL_MS": "500",
            "LOAD_SHED__TIMEOUTS__UPSTREAM_MS": "1000",
        },
        {"off": POLICIES["off"], "hedged": {"LOAD_SHED__RETRY__HEDGE_AFTER_MS": "30"}},
    ),
}


def attempts(text):
    """(all attempts, first attempts) from upstream_attempts_total."""
    return series(text, "upstream_attempts_total"), series(text, "upstream_attempts_total", kind="first")


def run(binary, workdir, name, env, seconds):
    api_port, up_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    full_env = {
        "PATH": os.environ["PATH"],
        "RUST_LOG": "warn",
        "LOAD_SHED__API__LISTEN": f"127.0.0.1:{api_port}",
        "LOAD_SHED__UPSTREAM__LISTEN": f"127.0.0.1:{up_port}",
        "LOAD_SHED__SHUTDOWN__DRAIN_DELAY_SECONDS": "0",
        **UPSTREAM,
        **env,
    }
    proc = spawn([binary], workdir / f"{name}.log", env=full_env, cwd=workdir)
    try:
        wait_up(f"{api}/healthz", proc, name, log=workdir / f"{name}.log")
        path = workdir / f"{name}.csv"
        start = time.time()
        with open(path, "w") as out:
            hey = subprocess.Popen(
                ["hey", "-z", f"{seconds}s", "-c", str(CLIENTS), "-t", "5", "-o", "csv", f"{api}/client"],
                stdout=out,
                stderr=subprocess.DEVNULL,
            )
        samples, opened_at = [], None  # (t, all attempts, first attempts)
        while hey.poll() is None:
            text = get(f"{api}/metrics")[1]
            now = time.time() - start
            samples.append((now, *attempts(text)))
            if opened_at is None and series(text, "circuit_breaker_transitions_total", to="open") > 0:
                opened_at = now
            time.sleep(0.25)
        hey.wait()
        text = get(f"{api}/metrics")[1]
        samples.append((time.time() - start, *attempts(text)))
        rows = []
        with open(path) as f:
            for r in csv.DictReader(f):
                rows.append(
                    (float(r["offset"]) + float(r["response-time"]), r["status-code"], float(r["response-time"]) * 1000)
                )
        total_attempts, first = attempts(text)
        return {
            "rows": rows,
            "samples": samples,
            "opened_at": opened_at,
            "amplification": total_attempts / first if first else float("nan"),
            "exhausted": series(text, "retry_budget_exhausted_total"),
            "hedges": series(text, "upstream_attempts_total", kind="hedge"),
        }
    finally:
        stop(proc)


def per_second(result, seconds):
    """[(second, success share, amplification)] for the run."""
    out = []
    for s in range(int(seconds)):
        answered = [r for r in result["rows"] if s <= r[0] < s + 1]
        ok = sum(1 for r in answered if r[1] == "200")
        inside = [x for x in result["samples"] if x[0] <= s + 1]
        before = [x for x in result["samples"] if x[0] <= s]
        if inside and before and inside[-1][2] > before[-1][2]:
            amp = (inside[-1][1] - before[-1][1]) / (inside[-1][2] - before[-1][2])
        else:
            amp = float("nan")
        out.append((s + 0.5, ok / len(answered) if answered else float("nan"), amp))  # NaN: gnuplot skips it
    return out


def draw(results, seconds, picture, workdir):
    """Success and amplification over time for (a) and (b2), latency distribution for (c)."""
    data = workdir / "plot"
    data.mkdir(exist_ok=True)
    for case in ("a", "b2"):
        for policy in POLICIES:
            with open(data / f"{case}-{policy}.dat", "w") as f:
                f.writelines(f"{s} {ok * 100} {amp}\n" for s, ok, amp in per_second(results[case][policy], seconds))
    for policy in ("off", "hedged"):
        lat = sorted(r[2] for r in results["c"][policy]["rows"] if r[1] == "200")
        with open(data / f"c-{policy}.dat", "w") as f:
            for i, v in enumerate(lat):
                if i % max(1, len(lat) // 2000) == 0 or i == len(lat) - 1:
                    f.write(f"{v} {100.0 * (i + 1) / len(lat)}\n")
    script = f"""
set terminal pngcairo size 1400,420 font 'DejaVu Sans,10'
set output '{picture}'
set multiplot layout 1,3
set grid
set key bottom right
set title '(a) dependency fails 10 %: success seen by callers'
set xlabel 'seconds'; set ylabel '% of /client answered 200'; set yrange [80:100.5]
plot '{data}/a-off.dat' using 1:2 with lines lw 2 title 'off', \\
     '{data}/a-naive.dat' using 1:2 with lines lw 2 title 'naive (3 attempts, no budget)', \\
     '{data}/a-budgeted.dat' using 1:2 with lines lw 2 title 'budgeted'
set title '(b2) dependency down, breaker out of the way: amplification'
set ylabel 'upstream attempts per request'; set yrange [0.8:3.2]; set key top right
plot '{data}/b2-off.dat' using 1:3 with lines lw 2 title 'off', \\
     '{data}/b2-naive.dat' using 1:3 with lines lw 2 title 'naive', \\
     '{data}/b2-budgeted.dat' using 1:3 with lines lw 2 title 'budgeted'
set title '(c) 5 % of calls 500 ms slower: caller latency'
set xlabel 'ms (log)'; set ylabel '% of answers at most'; set logscale x; set yrange [0:100.5]; set key bottom right
plot '{data}/c-off.dat' using 1:2 with lines lw 2 title 'no hedging', \\
     '{data}/c-hedged.dat' using 1:2 with lines lw 2 title 'hedge after 30 ms'
unset multiplot
"""
    (workdir / "retries.gp").write_text(script)
    subprocess.run(["gnuplot", str(workdir / "retries.gp")], check=True, timeout=60)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", type=binary_arg, default=str(ROOT / "target/release/load-shed-api"))
    p.add_argument("--seconds", type=int, default=12)
    p.add_argument("--picture", default=str(ROOT / "loadtest/out/retries.png"))
    p.add_argument("--record", action="store_true", help="append to loadtest/RESULTS.md")
    args = p.parse_args()
    require_tools(("hey", "gnuplot"), "apt-get install -y hey gnuplot-nox")
    workdir = Path(tempfile.mkdtemp(prefix="load-shed-retries-"))
    results = {}
    lines = [
        ("| case | policy | /client answered 200 | amplification (attempts / first) | budget refusals | breaker "
        "first opened | caller p50 / p99 ms | hedges |"),
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, (label, env, policies) in CASES.items():
        results[case] = {}
        for policy, penv in policies.items():
            r = run(args.binary, workdir, f"{case}-{policy}", {**env, **penv}, args.seconds)
            results[case][policy] = r
            ok = [x for x in r["rows"] if x[1] == "200"]
            lat = [x[2] for x in ok]
            opened = f"{r['opened_at']:.2f} s" if r["opened_at"] is not None else "never"
            lines.append(
                f"| ({case}) {label} | {policy} | {100 * len(ok) / max(1, len(r['rows'])):.2f} % of {len(r['rows'])} "
                f"| {r['amplification']:.3f} | {r['exhausted']:.0f} | {opened} "
                f"| {percentile(lat, 50, float('nan')):.1f} / {percentile(lat, 99, float('nan')):.1f} | "
                f"{r['hedges']:.0f} |"
            )
            print(lines[-1], flush=True)
    picture = Path(args.picture).resolve()
    picture.parent.mkdir(parents=True, exist_ok=True)
    draw(results, args.seconds, picture, workdir)
    print(f"picture: {picture}\nlogs in {workdir}")
    if args.record:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(ROOT / "loadtest/RESULTS.md", "a") as f:
            f.write(
                f"## Retries {stamp} — commit {git_commit()}: off, naive and budgeted retries; hedging\n\n"
                f"Command: `python3 loadtest/retry_scenario.py --seconds {args.seconds} --record` (release build, "
                f"{os.cpu_count()} cores, load tool on the same cores; `hey -z {args.seconds}s -c {CLIENTS}` "
                "closed loop on "
                "/client; upstream 20 ms per call). Amplification is upstream attempts / first attempts over the "
                "run.\n\n"
                + "\n".join(lines)
                + "\n\n"
            )


if __name__ == "__main__":
    try:
        main()
    except NotUp as e:
        sys.exit(str(e))
