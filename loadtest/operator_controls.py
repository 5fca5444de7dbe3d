#!/usr/bin/env python3
"""The admin listener's controls under load, timed from outside: the release binary (role `all`,
one api worker) under `oha -q` open-loop load, the admin calls made over HTTP, and the counters
read every 10 ms.

  kill switch  force-open under 200 requests/s (20 ms calls): how long until the dependency gets
               no more calls (the upstream listener's own request count stops), every answer in the
               hold a 503 with Retry-After; `auto`: how long until calls succeed again
  expiry       force-open for 5 s: how long after the 5 s calls succeed again
  pinned limit adaptive admission, 400 requests/s of 50 ms calls (about 20 in flight): pin 10, how
               long until in flight is at most 10; `auto`: the limiter's own limit again

Targets (issue 23): calls stop within 100 ms; `auto` at once; the expiry within 1 s; in flight
under the pin within one request's latency (50 ms; the gauge is read every 10 ms, so up to 10 ms
more). With --record, appends to loadtest/RESULTS.md.

Usage: cargo build --release && python3 loadtest/operator_controls.py [--record]
Needs: oha (cargo install --locked oha)
"""

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench
from harness import ROOT, Checks, NotUp, binary_arg, get, git_commit, post, require_tools, series


class Service(bench.Service):
    """bench.Service (role `all`) with one api worker, no drain delay and an admin listener, and
    what the scenarios read and do."""

    def __init__(self, binary, workdir, name, env):
        super().__init__({"LOAD_SHED__API__WORKERS": "1", "LOAD_SHED__SHUTDOWN__DRAIN_DELAY_SECONDS": "0", **env},
                         workdir, name, binary=binary, admin=True)

    def metric(self, port, name, **labels):
        return series(get(f"http://127.0.0.1:{port}/metrics", timeout=2)[1], name, **labels)

    def calls(self):
        """Requests the dependency has answered (its own listener's count)."""
        return self.metric(self.up_port, "http_requests_total", path="/upstream")

    def ok(self):
        return self.metric(self.api_port, "upstream_requests_total", result="ok")

    def admin(self, path):
        status, body = post(f"{self.admin_url}{path}")
        if status != 200:
            raise RuntimeError(f"{path}: {status} {body}")
        return time.time()

    def load(self, rate, seconds, path, workdir, name):
        with open(workdir / f"oha-{name}.log", "w") as out:
            return subprocess.Popen(["oha", "-z", f"{seconds}s", "-q", str(rate), "-c", "100", "--latency-correction",
                                     "--no-tui", f"http://127.0.0.1:{self.api_port}{path}"],
                                    stdout=out, stderr=subprocess.STDOUT)


def until(predicate, within):
    """Seconds until `predicate()` holds, polling every 10 ms; None if not within `within`."""
    began = time.time()
    while time.time() - began < within:
        if predicate():
            return time.time() - began
        time.sleep(0.01)
    return None


def stopped(read, quiet=0.1):
    """When the counter read by `read` last moved, polling for `quiet` s after it stays still."""
    last, moved = read(), time.time()
    while time.time() - moved < quiet:
        now = read()
        if now != last:
            last, moved = now, time.time()
        time.sleep(0.01)
    return moved


def kill_switch(svc, checks, rows):
    time.sleep(3)
    held = svc.admin("/admin/breaker?mode=force-open")
    last_call = stopped(svc.calls)
    stop_ms = max(0.0, (last_call - held) * 1000)
    rows.append(("kill switch: the dependency's last call after force-open", f"{stop_ms:.0f} ms"))
    checks.check(stop_ms <= 100, f"force-open: the dependency's calls stop within 100 ms ({stop_ms:.0f} ms)")
    answers = []
    for _ in range(20):
        status, _ = get(f"http://127.0.0.1:{svc.api_port}/client", timeout=2)
        answers.append(status)
    before_ok = svc.ok()
    time.sleep(1)
    checks.check(all(a == 503 for a in answers) and svc.ok() == before_ok,
                 f"held: every answer 503 ({answers.count(503)} of 20 sampled), no call succeeded in 1 s")
    svc.admin("/admin/breaker?mode=auto")
    back = until(lambda: svc.ok() > before_ok, 2)
    rows.append(("kill switch: first success after auto", "never" if back is None else f"{back * 1000:.0f} ms"))
    checks.check(back is not None and back <= 0.1, f"auto restores service at once ({back})")

    time.sleep(1)
    svc.admin("/admin/breaker?mode=force-open&for=5s")
    time.sleep(0.5)
    before_ok = svc.ok()
    lifted = until(lambda: svc.ok() > before_ok, 8)
    late = None if lifted is None else lifted + 0.5 - 5
    rows.append(("expiry: a 5 s force-open lifted after its 5 s, by",
                 "never" if late is None else f"{late * 1000:.0f} ms"))
    checks.check(late is not None and late <= 1.0, f"a 5 s override lifts within 1 s of its expiry ({late})")


def pinned_limit(svc, checks, rows):
    time.sleep(4)
    inflight = lambda: svc.metric(svc.api_port, "admission_inflight")
    before = inflight()
    svc.admin("/admin/admission/limit?value=10")
    under = until(lambda: inflight() <= 10, 2)
    rows.append(("pinned limit: in flight before the pin, and time to ≤ 10 after it",
                 f"{before:.0f}; {'never' if under is None else f'{under * 1000:.0f} ms'}"))
    checks.check(before > 10, f"in flight above the pin before it ({before:.0f})")
    checks.check(under is not None and under <= 0.06,
                 f"pin 10: in flight <= 10 within one request's latency, 50 ms (+10 ms polling) ({under})")
    samples = []
    end = time.time() + 1.5
    while time.time() < end:
        samples.append(inflight())
        time.sleep(0.01)
    checks.check(max(samples) <= 10, f"held: in flight at most 10 over 1.5 s (max {max(samples):.0f})")
    svc.admin("/admin/admission/limit?value=auto")
    time.sleep(0.3)
    limit = svc.metric(svc.api_port, "admission_limit", priority="high")
    rows.append(("pinned limit: the limit 0.3 s after auto", f"{limit:.0f}"))
    checks.check(limit != 10, f"auto hands the limit back to the limiter ({limit:.0f})")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", type=binary_arg, default=str(ROOT / "target/release/load-shed-api"))
    p.add_argument("--record", action="store_true", help="append to loadtest/RESULTS.md")
    args = p.parse_args()
    require_tools(("oha",), "cargo install --locked oha")
    workdir = Path(tempfile.mkdtemp(prefix="load-shed-controls-"))
    checks, rows = Checks(), []
    for name, env, rate, path, scenario in (
        ("kill-switch", {"LOAD_SHED__UPSTREAM__LATENCY_MS": "20"}, 200, "/client", kill_switch),
        ("pinned-limit", {"LOAD_SHED__ADMISSION__MODE": "adaptive", "LOAD_SHED__UPSTREAM__LATENCY_MS": "50",
                          "LOAD_SHED__TIMEOUTS__UPSTREAM_MS": "1000"}, 400, "/client", pinned_limit),
    ):
        svc = Service(args.binary, workdir, name, env)
        try:
            load = svc.load(rate, 20, path, workdir, name)
            scenario(svc, checks, rows)
            load.terminate()
            load.wait()
        except (RuntimeError, OSError) as e:
            checks.fail(f"{name}: {e}")
        finally:
            svc.stop()
    lines = ["| what | measured |", "|---|---|"] + [f"| {what} | {value} |" for what, value in rows]
    print("\n" + "\n".join(lines) + f"\n\nlogs in {workdir}")
    if args.record:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(ROOT / "loadtest/RESULTS.md", "a") as f:
            f.write(
                f"## Operator controls {stamp} — commit {git_commit()}: kill switch, expiry, pinned limit\n\n"
                f"Command: `python3 loadtest/operator_controls.py --record` (release build, {os.cpu_count()} cores, "
                "oha on the same cores; one api worker; counters read every 10 ms over HTTP, which adds up to "
                "10 ms to each time).\n\n" + "\n".join(lines) + "\n\n"
                + ("Targets: all met\n\n" if not checks else "Targets NOT all met: " + "; ".join(checks.failures)
                   + "\n\n"))
    checks.finish("operator controls")


if __name__ == "__main__":
    try:
        main()
    except NotUp as e:
        sys.exit(str(e))
