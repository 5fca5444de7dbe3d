#!/usr/bin/env python3
"""Soak: a few minutes of mixed, misbehaving traffic against the real binary; loopback only, bounded.

Traffic, in 10-second phases that cycle the upstream through healthy, slow, failing and
timing-out (per-request `ms`/`fail_rate`, so the breaker trips and recovers again and again):
  - well-behaved `hey` clients at fixed counts: high and normal priority on /client, low on /work;
  - four threads of clients that send a low- or normal-priority /client and leave at a random moment.
At the end, from /metrics alone:
  - admission_inflight is 0;
  - per class, offered = admitted + shed: for high priority (only well-behaved clients) the clients'
    own count equals the server's; for the others admitted + shed lies between the well-behaved count
    and that plus the aborting clients' requests;
  - admitted = released (admission_released_total), per class;
  - RSS after the last minute is within 10 % of RSS after the first;
  - no panic in the log.

Usage: python3 loadtest/soak.py [--seconds 180] [--binary PATH] [--record]
Needs: hey (apt-get install -y hey)
"""

import argparse
import datetime
import os
import random
import re
import signal
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
    binary_arg,
    default_binary,
    free_port,
    get,
    git_commit,
    rss_kib,
    series,
    spawn,
)

PHASES = [
    ("healthy", "ms=5&fail_rate=0"),
    ("slow", "ms=150&fail_rate=0"),
    ("failing", "ms=5&fail_rate=0.6"),
    ("timing out", "ms=400&fail_rate=0"),
]
PHASE_SECONDS = 10


def aborting_client(api_port, deadline, phase, counts, lock):
    while time.time() < deadline:
        priority = random.choice(["normal", "low"])
        try:
            s = socket.create_connection(("127.0.0.1", api_port), timeout=2)
            s.sendall(f"GET /client?{phase[0]}&priority={priority} HTTP/1.1\r\nHost: soak\r\n\r\n".encode())
            with lock:
                counts[priority] += 1
            time.sleep(random.random() * 0.3)
            s.close()
        except OSError:
            pass


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", type=binary_arg, default=str(default_binary()))
    p.add_argument("--seconds", type=int, default=180)
    p.add_argument("--record", action="store_true", help="append the figures to loadtest/RESULTS.md")
    args = p.parse_args()
    if args.seconds < 120:
        sys.exit("--seconds must be at least 120 (RSS is compared after the first and the last minute)")

    workdir = Path(tempfile.mkdtemp(prefix="load-shed-soak-"))
    api_port, up_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    log = workdir / "api.log"
    env = {"PATH": os.environ["PATH"], "RUST_LOG": "warn",
           "LOAD_SHED__API__LISTEN": f"127.0.0.1:{api_port}", "LOAD_SHED__UPSTREAM__LISTEN": f"127.0.0.1:{up_port}",
           "LOAD_SHED__BREAKER__OPEN_SECONDS": "2"}
    proc = spawn([args.binary], log, env=env)
    checks, results = Checks(), {}
    check = checks.check

    offered = {"high": 0, "normal": 0, "low": 0}  # well-behaved clients' own counts
    aborted = {"normal": 0, "low": 0}
    lock = threading.Lock()
    try:
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                get(f"{api}/metrics")
                break
            except OSError:
                time.sleep(0.1)
        start = time.time()
        end = start + args.seconds
        rss_first = rss_after_first = None
        phase_index = 0
        while time.time() < end - 1:
            name, query = PHASES[phase_index % len(PHASES)]
            phase_index += 1
            seconds = min(PHASE_SECONDS, int(end - time.time()))
            if seconds < 2:
                break
            # Fixed counts at a fixed rate: 5 requests/s per client is reachable even when every call
            # takes the 200 ms timeout, so each hey finishes within its phase and its count is exact.
            clients = [
                ("high", ["-n", str(20 * 5 * seconds), "-c", "20", "-q", "5"], f"/client?{query}&priority=high"),
                ("normal", ["-n", str(40 * 5 * seconds), "-c", "40", "-q", "5"], f"/client?{query}&priority=normal"),
                ("low", ["-n", str(10 * 5 * seconds), "-c", "10", "-q", "5", "-m", "POST"], "/work?ms=20&priority=low"),
            ]
            heys = []
            for priority, flags, path in clients:
                heys.append(subprocess.Popen(["hey", *flags, "-t", "10", f"{api}{path}"],
                                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
                offered[priority] += int(flags[1])
            abort_deadline = time.time() + seconds
            threads = [
                threading.Thread(target=aborting_client, args=(api_port, abort_deadline, (query,), aborted, lock))
                for _ in range(4)
            ]
            for t in threads:
                t.start()
            for h in heys:
                out, _ = h.communicate(timeout=seconds + 60)
                errors = re.findall(r"^Error distribution:(.*)", out, re.MULTILINE | re.DOTALL)
                if errors and errors[0].strip():
                    checks.fail(f"phase {name}: hey reported errors: {errors[0].strip()[:200]}")
            for t in threads:
                t.join()
            now = time.time() - start
            if rss_first is None:
                rss_first = rss_kib(proc.pid)
            if rss_after_first is None and now >= 60:
                rss_after_first = rss_kib(proc.pid)
            print(f"  {now:6.1f}s  phase {name:<10} rss {rss_kib(proc.pid) / 1024:.1f} MiB", flush=True)
        rss_last = rss_kib(proc.pid)

        # Quiet: the last requests and releases drain.
        deadline = time.time() + 15
        while time.time() < deadline and series(get(f"{api}/metrics")[1], "admission_inflight") != 0:
            time.sleep(0.2)
        text = get(f"{api}/metrics")[1]
        inflight = series(text, "admission_inflight")
        results["inflight"] = inflight
        check(inflight == 0, f"admission_inflight is 0 at the end (got {inflight})")
        for priority in ("high", "normal", "low"):
            admitted = series(text, "admission_requests_total", priority=priority, decision="admitted")
            shed = series(text, "admission_requests_total", priority=priority, decision="shed")
            released = series(text, "admission_released_total", priority=priority)
            extra = aborted.get(priority, 0)
            results[priority] = {
                "offered": offered[priority],
                "aborting": extra,
                "admitted": admitted,
                "shed": shed,
                "released": released,
            }
            check(
                offered[priority] <= admitted + shed <= offered[priority] + extra,
                f"{priority}: admitted + shed = {admitted + shed:.0f}, offered {offered[priority]}"
                f" (+ up to {extra} from aborting clients)",
            )
            check(admitted == released, f"{priority}: admitted {admitted:.0f} = released {released:.0f}")
        results["status"] = {
            m.group(1): float(m.group(2))
            for m in re.finditer(r'http_requests_total\{method="GET",path="/client",status="(\d+)"\} (\S+)', text)
        }
        results["breaker_opens"] = series(text, "circuit_breaker_transitions_total", to="open")
        results["rss_kib"] = {"first_phase": rss_first, "after_first_minute": rss_after_first, "end": rss_last}
        growth = (rss_last - rss_after_first) / rss_after_first
        results["rss_growth"] = growth
        check(
            abs(growth) <= 0.10,
            f"RSS after the last minute {rss_last} KiB vs after the first {rss_after_first} KiB ({growth:+.1%})",
        )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                checks.fail("the binary did not exit within 30 s of SIGTERM")
    logtext = log.read_text(errors="replace")
    check("panicked" not in logtext, "no panic in the log")
    check(proc.returncode == 0, f"exit code 0 after SIGTERM (got {proc.returncode})")

    r = results
    summary = [
        f"soak: {args.seconds} s, breaker opened {r.get('breaker_opens', 0):.0f} times, /client statuses "
        + ", ".join(f"{k}: {v:.0f}" for k, v in sorted(r.get("status", {}).items()))
    ]
    for priority in ("high", "normal", "low"):
        if priority in r:
            c = r[priority]
            summary.append(
                f"  {priority:<6} offered {c['offered']} (+{c['aborting']} aborting)  admitted {c['admitted']:.0f}"
                f"  shed {c['shed']:.0f}  released {c['released']:.0f}"
            )
    if "rss_kib" in r:
        k = r["rss_kib"]
        summary.append(
            f"  RSS after the first minute {k['after_first_minute'] / 1024:.1f} MiB, at the end "
            f"{k['end'] / 1024:.1f} MiB"
            f" ({r['rss_growth']:+.1%}); in flight at the end: {r['inflight']:.0f}; exit code {proc.returncode}"
        )
    print("\n".join(summary))
    if args.record:
        commit = git_commit()
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(ROOT / "loadtest/RESULTS.md", "a") as f:
            f.write(
                f"## Soak {stamp} — commit {commit}\n\nCommand: `python3 loadtest/soak.py --seconds {args.seconds} "
                "--record`"
                f" ({Path(args.binary).name} from {Path(args.binary).parent.name} build; {os.cpu_count()} "
                "cores).\n\n```\n"
                + "\n".join(summary)
                + f"\n```\n\nResult: {'FAILED: ' + '; '.join(checks.failures) if checks else 'passed'}\n\n"
            )
    print(f"log: {log}")
    checks.finish("soak")


if __name__ == "__main__":
    main()
