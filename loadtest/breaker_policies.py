#!/usr/bin/env python3
"""The three breaker policies against the same dependency situations, open loop: consecutive
failures, resilience4j's failure rate, and client-side adaptive throttling (`breaker.mode =
"throttle"`, with its 30 s default window and with a 5 s one).

Each policy runs the release binary as an api (one worker) in front of HAProxy, whose backend is
four simulated dependencies (role upstream, 50 ms a call); the script switches between them live
through HAProxy's runtime API, so a change of situation costs no refused connection. oha offers
200 requests/s, evenly spread (`oha -q`), the whole time:

  warm      healthy dependency                                         30 s
  (a)       partial outage: 5 slots of 50 ms, at most 5 waiting, the rest answered 503 at once:
            it serves 100/s, half of what is offered, as an overloaded backend that sheds does  60 s
  settle    healthy                                                    30 s
  (b)       blackout: every call fails (503 after 50 ms)               30 s
  (c)       recovery: healthy again                                    70 s
  (a')      load-independent failure: fail_rate 0.5 on every call      60 s

Per policy it reports goodput (200s a second) during (a) against the 100/s the dependency can
serve; calls reaching the dependency during (a) and (b) as a share of the warm baseline; when, in
(b), those calls fell to 25 % of the baseline for good; time from the end of (b) to 90 % of the
baseline goodput; the breaker's state changes per phase (flaps); and goodput and calls in (a').
It checks the throttling policy's targets, draws one panel per policy, and with --record appends
the table to loadtest/RESULTS.md.

Usage: cargo build --release && python3 loadtest/breaker_policies.py [--record] [--policies throttle,...]
Needs: apt-get install -y haproxy gnuplot-nox; oha (cargo install --locked oha)
"""

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from harness import (
    ROOT,
    Checks,
    NotUp,
    binary_arg,
    free_port,
    get,
    git_commit,
    require_tools,
    series,
    spawn,
    stop,
    wait_up,
)

RATE = 200
LATENCY_MS = 50
SLOTS, WAITING = 5, 5
CAPACITY = SLOTS * 1000 / LATENCY_MS  # what the dependency serves in (a): 100/s

DEPENDENCIES = {
    "healthy": {},
    "partial": {"LOAD_SHED__UPSTREAM__CONCURRENCY": str(SLOTS), "LOAD_SHED__UPSTREAM__MAX_WAITING": str(WAITING)},
    "blackout": {"LOAD_SHED__UPSTREAM__FAIL_RATE": "1.0"},
    "random": {"LOAD_SHED__UPSTREAM__FAIL_RATE": "0.5"},
}
# (phase, dependency, seconds)
TIMELINE = [
    ("warm", "healthy", 30),
    ("a", "partial", 60),
    ("settle", "healthy", 30),
    ("b", "blackout", 30),
    ("c", "healthy", 70),
    ("a'", "random", 60),
]
POLICIES = {
    "consecutive": ({"LOAD_SHED__BREAKER__MODE": "consecutive"}, None),
    "failure_rate": ({"LOAD_SHED__BREAKER__MODE": "failure_rate"}, None),
    "throttle": ({"LOAD_SHED__BREAKER__MODE": "throttle"}, 30),
    "throttle-5s": ({"LOAD_SHED__BREAKER__MODE": "throttle", "LOAD_SHED__BREAKER__THROTTLE_WINDOW_SECONDS": "5"}, 5),
}
CALLS = ("ok", "error", "timeout", "transport")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Bench:
    """The dependencies, HAProxy in front of them, and one api at a time."""

    def __init__(self, binary, workdir):
        self.binary, self.workdir = binary, workdir
        self.ports = {name: free_port() for name in DEPENDENCIES}
        self.lb_port = free_port()
        self.procs = []

    def start(self):
        for name, env in DEPENDENCIES.items():
            full = {"PATH": os.environ["PATH"], "RUST_LOG": "warn", "LOAD_SHED__ROLE": "upstream",
                    "LOAD_SHED__UPSTREAM__LISTEN": f"127.0.0.1:{self.ports[name]}",
                    "LOAD_SHED__UPSTREAM__WORKERS": "1", "LOAD_SHED__UPSTREAM__LATENCY_MS": str(LATENCY_MS),
                    "LOAD_SHED__SHUTDOWN__DRAIN_DELAY_SECONDS": "0", **env}
            proc = spawn([self.binary], self.workdir / f"dep-{name}.log", env=full)
            self.procs.append(proc)
            wait_up(f"http://127.0.0.1:{self.ports[name]}/healthz", proc, name, log=self.workdir / f"dep-{name}.log")
        lines = [
            "global", "  maxconn 4096", f"  stats socket {self.workdir / 'haproxy.sock'} mode 600 level admin",
            "defaults", "  mode http", "  timeout connect 1s", "  timeout client 30s", "  timeout server 30s",
            "  retries 0",
            "frontend fe", f"  bind 127.0.0.1:{self.lb_port}", "  default_backend dep",
            "backend dep",
        ]
        lines += [f"  server {name} 127.0.0.1:{port}" + ("" if name == "healthy" else " disabled")
                  for name, port in self.ports.items()]
        (self.workdir / "haproxy.cfg").write_text("\n".join(lines) + "\n")
        lb = spawn(["haproxy", "-db", "-f", self.workdir / "haproxy.cfg"], self.workdir / "haproxy.log")
        self.procs.append(lb)
        wait_up(f"http://127.0.0.1:{self.lb_port}/healthz", lb, "haproxy", log=self.workdir / "haproxy.log")

    def haproxy(self, command):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(self.workdir / "haproxy.sock"))
            s.sendall(command.encode() + b"\n")
            return s.recv(4096).decode()

    def switch(self, to):
        """Sends new requests to dependency `to` only (calls already running finish where they are)."""
        self.haproxy(f"set server dep/{to} state ready")
        for name in DEPENDENCIES:
            if name != to:
                self.haproxy(f"set server dep/{name} state maint")

    def api(self, name, env):
        port = free_port()
        full = {"PATH": os.environ["PATH"], "RUST_LOG": "warn", "LOAD_SHED__ROLE": "api",
                "LOAD_SHED__API__LISTEN": f"127.0.0.1:{port}", "LOAD_SHED__API__WORKERS": "1",
                "LOAD_SHED__API__UPSTREAM_URL": f"http://127.0.0.1:{self.lb_port}",
                "LOAD_SHED__SHUTDOWN__DRAIN_DELAY_SECONDS": "0", **env}
        proc = spawn([self.binary], self.workdir / f"api-{name}.log", env=full)
        wait_up(f"http://127.0.0.1:{port}/readyz", proc, f"api {name}", log=self.workdir / f"api-{name}.log")
        return proc, f"http://127.0.0.1:{port}"

    def stop_all(self):
        for proc in self.procs:
            stop(proc)


def sample(api):
    text = get(f"{api}/metrics", timeout=2)[1]
    return {
        "calls": sum(series(text, "upstream_requests_total", result=r) for r in CALLS),
        "ok": series(text, "upstream_requests_total", result="ok"),
        "state": series(text, "circuit_breaker_state"),
        "transitions": series(text, "circuit_breaker_transitions_total"),
        "p": series(text, "circuit_breaker_rejection_probability"),
    }


def run(bench, name, env, timeline):
    """One policy through the timeline: a sample of the api's metrics every 0.25 s, as
    [(t, sample)], and the phase boundaries {phase: (start, end)}."""
    log(f"{name}: starting")
    bench.switch("healthy")
    proc, api = bench.api(name, env)
    total = sum(s for _, _, s in timeline)
    with open(bench.workdir / f"oha-{name}.log", "w") as out:
        oha = subprocess.Popen(
            ["oha", "-z", f"{total}s", "-q", str(RATE), "-c", "50", "--latency-correction", "--no-tui",
             f"{api}/client"], stdout=out, stderr=subprocess.STDOUT)
    start = time.time()
    samples, phases = [], {}
    stop_sampling = threading.Event()

    def sampler():
        while not stop_sampling.is_set():
            try:
                samples.append((time.time() - start, sample(api)))
            except OSError:
                pass
            time.sleep(0.25)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    try:
        at = 0.0
        for phase, dependency, seconds in timeline:
            # Switch on schedule (not after a slow step): the phases keep their lengths.
            time.sleep(max(0.0, start + at - time.time()))
            bench.switch(dependency)
            phases[phase] = (at, at + seconds)
            log(f"{name}: {phase} ({dependency}, {seconds} s)")
            at += seconds
        time.sleep(max(0.0, start + at - time.time()))
    finally:
        stop_sampling.set()
        thread.join()
        oha.terminate()
        oha.wait()
        stop(proc)
    return samples, phases


def value_at(samples, t, key):
    """The sampled counter at time t (the last sample at or before it)."""
    best = samples[0][1][key]
    for at, s in samples:
        if at > t:
            break
        best = s[key]
    return best


def rate(samples, t0, t1, key):
    return (value_at(samples, t1, key) - value_at(samples, t0, key)) / max(1e-9, t1 - t0)


def per_second(samples, end, step=1.0):
    """[(t, goodput/s, calls/s, state, p)] a `step` at a time (t is the middle of the step)."""
    rows = []
    for i in range(int(end / step)):
        s = i * step
        rows.append((s + step / 2, rate(samples, s, s + step, "ok"), rate(samples, s, s + step, "calls"),
                     value_at(samples, s + step, "state"), value_at(samples, s + step, "p")))
    return rows


def smoothed(rows, col, i, width=3):
    window = rows[max(0, i - width + 1): i + 1]
    return sum(r[col] for r in window) / len(window)


def analyse(samples, phases, window):
    warm = phases["warm"]
    base_ok = rate(samples, warm[1] - 10, warm[1], "ok")
    base_calls = rate(samples, warm[1] - 10, warm[1], "calls")
    rows = per_second(samples, phases["a'"][1])
    a0, a1 = phases["a"]
    b0, b1 = phases["b"]
    c0, c1 = phases["c"]
    r0, r1 = phases["a'"]
    # (b): the end of the first half second in which the calls were at most 25 % of the baseline
    # and after which they stayed there (on average over the rest of the blackout). Half seconds:
    # whole ones would add up to a second to a fall that takes about 4 s with a 5 s window.
    fell = None
    during = [row for row in per_second(samples, b1, 0.5) if b0 <= row[0] < b1]
    for i, row in enumerate(during):
        rest = [r[2] for r in during[i:]]
        if row[2] <= 0.25 * base_calls and sum(rest) / len(rest) <= 0.25 * base_calls:
            fell = row[0] + 0.25 - b0
            break
    # (c): from the end of (b) to 90 % of the baseline goodput (3-s average).
    recovered = next((row[0] + 0.5 - c0 for i, row in enumerate(rows)
                      if c0 <= row[0] < c1 and smoothed(rows, 1, i) >= 0.9 * base_ok), None)

    def flaps(t0, t1):
        return value_at(samples, t1, "transitions") - value_at(samples, t0, "transitions")

    return {
        "base_ok": base_ok, "base_calls": base_calls, "window": window,
        "a_goodput": rate(samples, a0, a1, "ok"), "a_goodput_late": rate(samples, a1 - 30, a1, "ok"),
        "a_calls": rate(samples, a0, a1, "calls"), "a_flaps": flaps(a0, a1),
        # After the first sampling window of (a) (the throttle's window still held the healthy
        # calls before): the level it holds the dependency at.
        "a_calls_held": rate(samples, a0 + (window or 0), a1, "calls"),
        "b_calls": rate(samples, b0, b1, "calls"), "b_fell": fell, "b_flaps": flaps(b0, b1),
        "c_recovered": recovered, "c_flaps": flaps(c0, c1),
        "r_goodput": rate(samples, r0, r1, "ok"), "r_calls": rate(samples, r0, r1, "calls"), "r_flaps": flaps(r0, r1),
        "rows": rows,
    }


def fmt(x, unit=""):
    return "—" if x is None else f"{x:.1f}{unit}"


def table(results):
    lines = [
        ("| policy | (a) goodput /s (of 100 it can serve) | (a) calls to dependency /s (× what it accepts; after "
         "the first window) | (a) flaps "
         "| (b) calls, share of baseline | (b) fell to ≤ 25 % after | (c) back to 90 % goodput after | (b)+(c) flaps "
         "| (a') goodput /s, calls /s, flaps |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        window = f" (window {r['window']} s)" if r["window"] else ""
        lines.append(
            f"| {name}{window} | {r['a_goodput']:.1f} ({100 * r['a_goodput'] / CAPACITY:.0f} %; last 30 s "
            f"{r['a_goodput_late']:.1f}) | {r['a_calls']:.1f} ({r['a_calls'] / CAPACITY:.2f} ×; "
            f"{r['a_calls_held'] / CAPACITY:.2f} ×) | {r['a_flaps']:.0f} "
            f"| {100 * r['b_calls'] / r['base_calls']:.0f} % | {fmt(r['b_fell'], ' s')} "
            f"| {fmt(r['c_recovered'], ' s')} "
            f"| {r['b_flaps'] + r['c_flaps']:.0f} | {r['r_goodput']:.1f}, {r['r_calls']:.1f}, {r['r_flaps']:.0f} |"
        )
    return lines


def check(results, checks):
    for name, r in results.items():
        if not r["window"]:
            continue
        w = r["window"]
        checks.check(r["a_goodput"] >= 0.9 * CAPACITY,
                     f"{name}: (a) goodput {r['a_goodput']:.1f}/s >= 90 % of the {CAPACITY:.0f}/s it can serve")
        checks.check(r["a_calls_held"] <= 1.2 * CAPACITY,
                     f"{name}: (a) calls after the first {w} s window {r['a_calls_held']:.1f}/s <= 1.2 x the "
                     f"{CAPACITY:.0f}/s it accepts (whole phase: {r['a_calls']:.1f}/s)")
        checks.check(r["a_flaps"] <= 2,
                     f"{name}: (a) no flapping: {r['a_flaps']:.0f} state changes (in and out at most)")
        checks.check(r["b_fell"] is not None and r["b_fell"] <= w,
                     f"{name}: (b) calls fell to <= 25 % of baseline within one window "
                     f"({fmt(r['b_fell'], ' s')} <= {w} s)")
        checks.check(r["c_recovered"] is not None and r["c_recovered"] <= 2 * w,
                     f"{name}: (c) back to 90 % of baseline goodput within two windows "
                     f"({fmt(r['c_recovered'], ' s')} <= {2 * w} s)")


def draw(results, timeline, picture, workdir):
    data = workdir / "plot"
    data.mkdir(exist_ok=True)
    for name, r in results.items():
        with open(data / f"{name}.dat", "w") as f:
            f.writelines(f"{t} {ok} {calls} {state} {p}\n" for t, ok, calls, state, p in r["rows"])
    marks, at = [], 0
    for phase, _, seconds in timeline:
        marks.append(f"set arrow from {at},graph 0 to {at},graph 1 nohead dt 2 lc rgb '#888888'")
        marks.append(f'set label "{phase}" at {at + 2},graph 0.96 tc rgb "#555555"')
        at += seconds
    plots = []
    for name, r in results.items():
        y2 = "4 with steps lw 1.5 lc rgb '#d62728' axes x1y2 title 'state (0 closed, 1 open, 2 half-open)'"
        if r["window"]:
            y2 = "5 with lines lw 1.5 lc rgb '#d62728' axes x1y2 title 'rejection probability'"
        plots.append(f"""
set title '{name}{f" (window {r['window']} s)" if r['window'] else ""}'
plot {RATE} with lines dt 3 lc rgb '#999999' title 'offered', \\
     {CAPACITY} with lines dt 4 lc rgb '#bbbbbb' title 'what (a) can serve', \\
     '{data}/{name}.dat' using 1:3 with lines lw 1.5 lc rgb '#ff7f0e' title 'calls to dependency /s', \\
     '{data}/{name}.dat' using 1:2 with lines lw 2 lc rgb '#2ca02c' title 'goodput (200) /s', \\
     '{data}/{name}.dat' using 1:{y2}
""")
    rows = (len(results) + 1) // 2
    script = f"""
set terminal pngcairo size 1500,{420 * rows} font 'DejaVu Sans,10' noenhanced
set output '{picture}'
set multiplot layout {rows},2
set grid
set key top right font ',8'
set xlabel 'seconds'; set ylabel 'per second'; set yrange [0:260]
set y2label 'state / probability'; set y2range [0:2.6]; set y2tics
{chr(10).join(marks)}
{''.join(plots)}
unset multiplot
"""
    (workdir / "policies.gp").write_text(script)
    subprocess.run(["gnuplot", str(workdir / "policies.gp")], check=True, timeout=60)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", type=binary_arg, default=str(ROOT / "target/release/load-shed-api"))
    p.add_argument("--policies", default=",".join(POLICIES), help=f"comma-separated, of {', '.join(POLICIES)}")
    p.add_argument("--picture", default=str(ROOT / "docs/breaker-policies.png"))
    p.add_argument("--record", action="store_true", help="append to loadtest/RESULTS.md")
    p.add_argument("--from", dest="source", type=Path,
                   help="analyse the samples a run saved (samples.json in its log directory) instead of running")
    args = p.parse_args()
    require_tools(("oha", "haproxy", "gnuplot"),
                  "apt-get install -y haproxy gnuplot-nox; cargo install --locked oha")
    chosen = [x for x in args.policies.split(",") if x]
    unknown = [x for x in chosen if x not in POLICIES]
    if unknown:
        sys.exit(f"unknown policies {unknown}: choose from {', '.join(POLICIES)}")
    workdir = Path(tempfile.mkdtemp(prefix="load-shed-policies-"))
    results, saved = {}, {}
    if args.source:
        saved = json.loads(args.source.read_text())
        chosen = [name for name in chosen if name in saved]
        for name in chosen:
            results[name] = analyse(saved[name]["samples"], saved[name]["phases"], POLICIES[name][1])
    else:
        bench = Bench(args.binary, workdir)
        try:
            bench.start()
            for name in chosen:
                env, window = POLICIES[name]
                samples, phases = run(bench, name, env, TIMELINE)
                saved[name] = {"samples": samples, "phases": phases}
                (workdir / "samples.json").write_text(json.dumps(saved))
                results[name] = analyse(samples, phases, window)
                print("\n".join(table({name: results[name]})[2:]), flush=True)
        finally:
            bench.stop_all()
    lines = table(results)
    print("\n" + "\n".join(lines))
    picture = Path(args.picture).resolve()
    picture.parent.mkdir(parents=True, exist_ok=True)
    draw(results, TIMELINE, picture, workdir)
    print(f"picture: {picture}\nlogs in {workdir}\n")
    checks = Checks()
    check(results, checks)
    if args.record:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        phases = ", ".join(f"{phase} {seconds} s" for phase, _, seconds in TIMELINE)
        command = "`python3 loadtest/breaker_policies.py --record`"
        if args.source:
            command = (f"`python3 loadtest/breaker_policies.py --from {args.source} --record`: the samples a run of "
                       "`python3 loadtest/breaker_policies.py` saved, analysed again")
        with open(ROOT / "loadtest/RESULTS.md", "a") as f:
            f.write(
                f"## Breaker policies {stamp} — commit {git_commit()}: consecutive, failure_rate, throttle\n\n"
                f"Command: {command} (release build, {os.cpu_count()} cores, "
                f"oha, HAProxy and the dependencies on the same cores). `oha -q {RATE}` open loop on /client of one "
                f"api (one worker) whose dependency is switched live through HAProxy: {phases}. Baseline: the last "
                f"10 s of warm ({results[chosen[0]]['base_calls']:.0f} calls/s). (a): {SLOTS} slots of {LATENCY_MS} ms "
                f"and at most {WAITING} waiting, the rest 503 at once ({CAPACITY:.0f}/s). Flaps: state changes "
                "(circuit_breaker_transitions_total) in the phase. Picture: docs/breaker-policies.png.\n\n"
                + "\n".join(lines) + "\n\n"
                + "Throttling targets: " + ("all met" if not checks else "NOT all met: " + "; ".join(checks.failures))
                + "\n\n"
            )
    checks.finish("breaker policies")


if __name__ == "__main__":
    try:
        main()
    except NotUp as e:
        sys.exit(str(e))
