#!/usr/bin/env python3
"""What the status page costs, in user-space instructions (callgrind), for the release binary in
role `all` (profile_hop.py's settings). Each figure is counted between `callgrind_control --zero`
and `--dump`, so start-up is left out:

  idle       20 s with nothing asked: the admin listener off (`admin.listen = ""`), on with the page
             closed (its sampler reads the registry once a second), and on with a page watching (a
             client polling `/admin/status?since=` every second, as the page does)
  hop        2500 `/client?ms=0` requests (oha -c 10): page closed, and a page watching meanwhile

The per-hop figure with the page closed against earlier builds is profile_hop.py's (the same
method as every recorded hop count).

Usage: cargo build --release && python3 loadtest/status_page_cost.py [--record]
Needs: valgrind, oha
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench import Service
from harness import ROOT, NotUp, binary_arg, git_commit, require_tools
from profile_hop import ENV, URL_PATH

REQUESTS = 2500
IDLE_SECONDS = 20


def start(binary, workdir, name, admin):
    out = workdir / f"callgrind.{name}"
    env = ENV if admin else {**ENV, "LOAD_SHED__ADMIN__LISTEN": ""}
    svc = Service(env, workdir, name, binary=binary, admin=admin,
                  wrapper=["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"], up_timeout=60)
    svc.out = out
    return svc


class Watcher(threading.Thread):
    """Polls /admin/status?since= every second, as the page does, until stopped."""

    def __init__(self, admin):
        super().__init__(daemon=True)
        self.admin, self.stop, self.polls = admin, threading.Event(), 0

    def run(self):
        since = 0.0
        while not self.stop.is_set():
            with urllib.request.urlopen(f"{self.admin}/admin/status?since={since}", timeout=30) as r:
                samples = json.loads(r.read())["samples"]
            if samples:
                since = samples[-1]["t"]
            self.polls += 1
            self.stop.wait(1.0)


def counted(svc, work):
    """Instructions between zero and dump around `work()`."""
    pid = str(svc.proc.pid)
    time.sleep(3)  # past start-up's first ticks
    subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True, timeout=120)
    work()
    subprocess.run(["callgrind_control", "--dump", pid], check=True, capture_output=True, timeout=120)
    svc.proc.send_signal(2)
    svc.proc.wait(timeout=120)
    dump = min(svc.out.parent.glob(svc.out.name + ".*"))
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    sys.exit("callgrind wrote no totals")


def run(binary, workdir, name, admin, watch, hop):
    svc = start(binary, workdir, name, admin)
    watcher = Watcher(svc.admin_url) if watch else None

    def work():
        if watcher:
            watcher.start()
        if hop:
            subprocess.run(["oha", "-n", str(REQUESTS), "-c", "10", "--no-tui", "--output-format", "quiet",
                            svc.api + URL_PATH], check=True, capture_output=True, timeout=600)
        else:
            time.sleep(IDLE_SECONDS)
        if watcher:
            watcher.stop.set()
            watcher.join(timeout=60)

    total = counted(svc, work)
    polls = watcher.polls if watcher else 0
    print(f"{name}: {total:,} instructions{f', {polls} polls' if watch else ''}", flush=True)
    return total, polls


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", type=binary_arg, default=str(ROOT / "target/release/load-shed-api"))
    p.add_argument("--record", action="store_true", help="append to loadtest/RESULTS.md")
    args = p.parse_args()
    require_tools(("valgrind", "callgrind_control", "oha"), "apt-get install -y valgrind; cargo install --locked oha")
    workdir = Path(tempfile.mkdtemp(prefix="load-shed-status-cost-"))
    off, _ = run(args.binary, workdir, "idle-admin-off", False, False, False)
    closed, _ = run(args.binary, workdir, "idle-page-closed", True, False, False)
    watched, polls = run(args.binary, workdir, "idle-page-watching", True, True, False)
    hop_closed, _ = run(args.binary, workdir, "hop-page-closed", True, False, True)
    hop_watched, hop_polls = run(args.binary, workdir, "hop-page-watching", True, True, True)
    sampler = (closed - off) / IDLE_SECONDS
    per_poll = (watched - closed) / max(1, polls)
    per_hop_closed, per_hop_watched = hop_closed / REQUESTS, hop_watched / REQUESTS
    lines = [
        "| what | instructions | |",
        "|---|---|---|",
        f"| idle, admin listener off | {off / IDLE_SECONDS:,.0f} per second | |",
        (f"| idle, page closed (the sampler) | {closed / IDLE_SECONDS:,.0f} per second | sampler: {sampler:,.0f} "
         f"per second, i.e. {sampler / 10_000:,.1f} per hop at 10 000 requests/s |"),
        (f"| idle, a page watching | {watched / IDLE_SECONDS:,.0f} per second | {per_poll:,.0f} per poll "
         f"({polls} polls) |"),
        f"| per `/client` hop, page closed | {per_hop_closed:,.0f} | {REQUESTS} requests, start-up excluded |",
        (f"| per `/client` hop, a page watching | {per_hop_watched:,.0f} | "
         f"{100 * (per_hop_watched / per_hop_closed - 1):+.2f} % ({hop_polls} polls during the {REQUESTS} "
         "requests under valgrind) |"),
    ]
    print("\n" + "\n".join(lines) + f"\n\nlogs in {workdir}")
    if args.record:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(ROOT / "loadtest/RESULTS.md", "a") as f:
            f.write(f"## Status page {stamp} — commit {git_commit()}: what it costs\n\n"
                    f"Command: `python3 loadtest/status_page_cost.py --record` (release build, "
                    f"{os.cpu_count()} cores, callgrind, counted between `callgrind_control --zero` and "
                    "`--dump`).\n\n" + "\n".join(lines) + "\n\n")


if __name__ == "__main__":
    try:
        main()
    except NotUp as e:
        sys.exit(str(e))
