#!/usr/bin/env python3
"""Shadow mode sees what enforcing does: each pair of runs offers the same open-loop load (`oha -q`,
evenly spread arrivals, so shed callers do not come back sooner and both runs see the same
traffic) to the release binary (role `all`), once enforcing and once in shadow mode, and compares
what the enforced run refused with what the shadow run counted as refusable.

  admission  static ceilings 20 / 19 / 18, the dependency at a fixed 100 ms (19 normal slots:
             190/s), 300 requests/s for 20 s: 429s enforced vs admission_shadow_total
  breaker    every call fails (`fail_rate=1`) at 100 requests/s for 10 s, breaker.open_seconds 2
             (so probes fail and it opens again): 503s enforced vs
             circuit_breaker_shadow_rejections_total

Target: the shadow count within 2 % of the enforced one. With --record, appends the table to
loadtest/RESULTS.md.

Usage: cargo build --release && python3 loadtest/shadow.py [--record]
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

from bench import Service
from harness import ROOT, Checks, NotUp, binary_arg, get, git_commit, require_tools, series

CASES = {
    "admission": {
        "env": {
            "LOAD_SHED__ADMISSION__MAX_INFLIGHT": "20",
            "LOAD_SHED__ADMISSION__NORMAL_MAX_INFLIGHT": "19",
            "LOAD_SHED__ADMISSION__LOW_MAX_INFLIGHT": "18",
            "LOAD_SHED__UPSTREAM__LATENCY_MS": "100",
        },
        "switch": "LOAD_SHED__ADMISSION__ENFORCE",
        "path": "/client",
        "rate": 300,
        "seconds": 20,
        "enforced": lambda text: series(text, "admission_requests_total", path="/client", decision="shed"),
        "shadow": lambda text: series(text, "admission_shadow_total"),
    },
    "breaker": {
        "env": {"LOAD_SHED__BREAKER__OPEN_SECONDS": "2", "LOAD_SHED__UPSTREAM__LATENCY_MS": "10"},
        "switch": "LOAD_SHED__BREAKER__ENFORCE",
        "path": "/client?fail_rate=1",
        "rate": 100,
        "seconds": 10,
        "enforced": lambda text: series(text, "upstream_requests_total", result="breaker_open"),
        "shadow": lambda text: series(text, "circuit_breaker_shadow_rejections_total"),
    },
}


def run(binary, workdir, case, spec, enforce):
    """One run; returns (the count this mode keeps, requests answered, the oha summary's status lines)."""
    env = {"LOAD_SHED__API__WORKERS": "1", "LOAD_SHED__UPSTREAM__WORKERS": "1",
           "LOAD_SHED__SHUTDOWN__DRAIN_DELAY_SECONDS": "0", **spec["env"],
           spec["switch"]: "true" if enforce else "false"}
    name = f"{case}-{'enforce' if enforce else 'shadow'}"
    svc = Service(env, workdir, name, binary=binary)
    api = svc.api
    try:
        out = subprocess.run(
            ["oha", "-z", f"{spec['seconds']}s", "-q", str(spec["rate"]), "-c", "100", "--latency-correction",
             "--no-tui", f"{api}{spec['path']}"], capture_output=True, text=True, timeout=spec["seconds"] + 60,
            check=False)
        time.sleep(0.5)  # the last verdicts reach the actors
        text = get(f"{api}/metrics")[1]
        count = spec["enforced" if enforce else "shadow"](text)
        answered = series(text, "http_requests_total", path="/client")
        statuses = [line.strip() for line in out.stdout.splitlines() if line.strip().startswith("[")]
        return count, answered, statuses
    finally:
        svc.stop()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", type=binary_arg, default=str(ROOT / "target/release/load-shed-api"))
    p.add_argument("--record", action="store_true", help="append to loadtest/RESULTS.md")
    args = p.parse_args()
    require_tools(("oha",), "cargo install --locked oha")
    workdir = Path(tempfile.mkdtemp(prefix="load-shed-shadow-"))
    checks = Checks()
    lines = ["| case | offered | enforced: refused | shadow: would refuse | difference | answers (enforced / shadow) |",
             "|---|---|---|---|---|---|"]
    for case, spec in CASES.items():
        enforced, answered_e, statuses_e = run(args.binary, workdir, case, spec, True)
        shadow, answered_s, statuses_s = run(args.binary, workdir, case, spec, False)
        diff = (shadow - enforced) / enforced if enforced else float("inf")
        lines.append(
            f"| {case} | {spec['rate']}/s for {spec['seconds']} s on `{spec['path']}` | {enforced:.0f} of "
            f"{answered_e:.0f} | {shadow:.0f} of {answered_s:.0f} | {100 * diff:+.2f} % | "
            f"{', '.join(statuses_e)} / {', '.join(statuses_s)} |")
        print(lines[-1], flush=True)
        checks.check(enforced > 0 and abs(diff) <= 0.02,
                     f"{case}: shadow count {shadow:.0f} within 2 % of the enforced {enforced:.0f} "
                     f"({100 * diff:+.2f} %)")
    print("\n" + "\n".join(lines) + f"\n\nlogs in {workdir}")
    if args.record:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(ROOT / "loadtest/RESULTS.md", "a") as f:
            f.write(
                f"## Shadow mode {stamp} — commit {git_commit()}: shadow counts against enforced refusals\n\n"
                f"Command: `python3 loadtest/shadow.py --record` (release build, {os.cpu_count()} cores, oha on the "
                "same cores; one api and one upstream worker; open loop, `oha -q`).\n\n"
                + "\n".join(lines) + "\n\n"
                + ("Target (within 2 %): met\n\n" if not checks else
                   "Target (within 2 %): NOT met: " + "; ".join(checks.failures) + "\n\n"))
    checks.finish("shadow")


if __name__ == "__main__":
    try:
        main()
    except NotUp as e:
        sys.exit(str(e))
