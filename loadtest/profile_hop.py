#!/usr/bin/env python3
"""Where one hop's time goes: counts per `/client?ms=0` request, for the release binary in role `all`.

Loopback only, bounded (about 2 minutes; callgrind adds about one). Four views, each one that a busy
2-core machine cannot blur the way it blurs req/s:
  1. context switches per request, by thread (from /proc/<pid>/task/*/status), under wrk -c50
  2. system calls per request (`strace -c -f`), under wrk -c50: epoll_wait and the eventfd `write`
     that wakes a sleeping thread show the hand-offs between threads
  3. where CPU samples fall (`perf record -e cpu-clock`, when perf works here): kernel, malloc/free,
     clock reads, the HTTP metrics middleware, this crate
  4. user-space instructions per request (`valgrind --tool=callgrind`, when installed): the same
     count for the same binary whatever else the machine does. Caveat: `rep stos` counts once per
     byte, so the memset of actix-http's 96-slot header index array (3 KiB per request parsed,
     about a quarter of the count) weighs far more here than in time.

A feature's cost when turned on: `--env KEY=VALUE` (repeatable) adds configuration, e.g.
`--env LOAD_SHED__BREAKER__MODE=throttle`; `--header 'X-Tenant: one'` sends a header with every
request; `--tenants N` makes N requests, each as a different tenant (`X-Tenant: t<i>`), before the
counted ones of step 4, so that many tenants are tracked while they run; step 4 then counts only
those 2500 requests (between `callgrind_control --zero` and `--dump`), since the difference of two
runs would carry the N requests' own run-to-run noise.

Usage: cargo build --release && python3 loadtest/profile_hop.py [--binary PATH] [--skip perf,callgrind] [--env K=V]
         [--header 'NAME: VALUE'] [--tenants N]
Needs: apt-get install -y wrk strace; optional: linux-perf valgrind; oha or hey for step 4.
"""

import argparse
import http.client
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import ROOMY, Service, wrk
from harness import ROOT, NotUp, binary_arg, require_tools

URL_PATH = "/client?ms=0"
HEADERS = []
# As bench.py's hop step, without the drain delay (so a profiled process stops at once).
ENV = {**ROOMY, "LOAD_SHED__SHUTDOWN__DRAIN_DELAY_SECONDS": "0"}


def start(binary, workdir, wrapper=()):
    return Service(ENV, workdir, "profile", binary=binary, wrapper=wrapper, up_timeout=60)


def answered(svc):
    """`/client` requests answered 200 so far, from the service's own counter."""
    return svc.statuses("/client").get("200", 0)


def rps(url, seconds):
    return wrk(url, seconds)["rps"]


def switches(pid):
    """Context switches (voluntary + not) per thread name."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            status = (task / "status").read_text()
        except OSError:
            continue
        n = sum(int(v) for v in re.findall(r"(?:non)?voluntary_ctxt_switches:\s+(\d+)", status))
        key = f"{name} ({task.name})"
        out[key] = out.get(key, 0) + n
    return out


def context_switches(svc, seconds):
    rps(svc.api + URL_PATH, 1)
    before, n0 = switches(svc.proc.pid), answered(svc)
    rate = rps(svc.api + URL_PATH, seconds)
    after, n1 = switches(svc.proc.pid), answered(svc)
    n = n1 - n0
    print(f"\n1. context switches per request ({n:.0f} requests, {rate:.0f} req/s):")
    total = 0.0
    for key in sorted(after):
        per = (after[key] - before.get(key, 0)) / n
        total += per
        if per >= 0.01:
            print(f"   {key:<40} {per:6.2f}")
    print(f"   {'all threads':<40} {total:6.2f}")
    return {"requests": n, "rps": rate, "per_request": round(total, 3)}


def syscalls(svc, seconds, workdir):
    require_tools(("strace",), "apt-get install -y strace")
    rps(svc.api + URL_PATH, 1)
    out = workdir / "strace.txt"
    n0 = answered(svc)
    tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(svc.proc.pid), "-o", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    rps(svc.api + URL_PATH, seconds)
    time.sleep(0.3)
    n = answered(svc) - n0
    tracer.terminate()
    tracer.wait(timeout=30)
    calls = {}
    for line in out.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
            calls[fields[-1]] = int(fields[3])
    print(f"\n2. system calls per request ({n:.0f} requests under strace, which slows them):")
    for name, count in sorted(calls.items(), key=lambda kv: -kv[1]):
        if count / n >= 0.01:
            print(f"   {name:<20} {count / n:6.2f}")
    return {"requests": n, "per_request": {k: round(v / n, 3) for k, v in calls.items() if v / n >= 0.01}}


GROUPS = [  # (label, symbol pattern) for the perf summary
    (
        "the allocator (malloc/free, mi_*)",
        r"malloc|_int_free|cfree|^free$|malloc_consolidate|unlink_chunk|realloc|^_?mi_",
    ),
    ("clock reads", r"clock_gettime|read_tsc"),
    ("actix-web-prom", r"actix_web_prom"),
    ("prometheus label lookups", r"with_label_values|MetricVec"),
    ("load_shed_api (this crate)", r"load_shed_api::"),
    ("awc (the upstream client)", r"^awc::|<awc::"),
    ("thread switches (finish_task_switch)", r"finish_task_switch"),
]


def perf_profile(svc, seconds, workdir):
    data = workdir / "perf.data"
    rps(svc.api + URL_PATH, 1)
    rec = subprocess.Popen(
        [
            "perf", "record", "-e", "cpu-clock", "-g", "-p", str(svc.proc.pid), "-o", str(data), "--", "sleep",
            str(seconds),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rate = rps(svc.api + URL_PATH, seconds)
    rec.wait(timeout=seconds + 60)
    if not data.exists():
        print("\n3. perf record produced nothing here (skipped)")
        return None
    def report(sort):
        argv = ["perf", "report", "-i", str(data), "--no-children", "--sort", sort, "-g", "none", "--stdio"]
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout

    dso, sym = report("dso"), report("sym")
    shares = {}
    for line in dso.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)", line)
        if m:
            shares[m.group(2)] = float(m.group(1))
    kernel = sum(v for k, v in shares.items() if "kernel" in k)
    groups = dict.fromkeys((label for label, _ in GROUPS), 0.0)
    for line in sym.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\[[.k]\]\s+(.*)$", line)
        if not m:
            continue
        for label, pattern in GROUPS:
            if re.search(pattern, m.group(2).strip()):
                groups[label] += float(m.group(1))
                break
    print(f"\n3. CPU samples (perf, cpu-clock, {rate:.0f} req/s): kernel {kernel:.1f} %")
    for label, share in groups.items():
        print(f"   {label:<40} {share:5.1f} %")
    return {"rps": rate, "kernel_pct": round(kernel, 1), **{k: round(v, 1) for k, v in groups.items()}}


def as_tenants(svc, n):
    """`n` requests, each as a different tenant, over one keep-alive connection; then 3 s idle, so
    they have all been swept into their idle state (the one-time cost of that is not counted)."""
    if not n:
        return
    conn = http.client.HTTPConnection("127.0.0.1", svc.api_port, timeout=60)
    for i in range(n):
        conn.request("GET", URL_PATH, headers={"X-Tenant": f"t{i}"})
        conn.getresponse().read()
    conn.close()
    time.sleep(3)


def instructions_counted(binary, workdir, requests, tenants):
    """User-space instructions per request of `requests` hop requests only: counted between
    `callgrind_control --zero` and `--dump`, after `tenants` requests each as a different tenant
    (whose own cost, and its run-to-run noise, is left out)."""
    out = workdir / f"callgrind.counted.{tenants}"
    svc = start(binary, workdir, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"])
    try:
        as_tenants(svc, tenants)
        pid = str(svc.proc.pid)
        subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True, timeout=120)
        headers = [arg for h in HEADERS for arg in ("-H", h)]
        subprocess.run(["oha", "-n", str(requests), "-c", "10", "--no-tui", "--output-format", "quiet", *headers,
                        svc.api + URL_PATH], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600,
                       check=True)
        subprocess.run(["callgrind_control", "--dump", pid], check=True, capture_output=True, timeout=120)
    finally:
        svc.proc.send_signal(2)
        svc.proc.wait(timeout=120)
    dumps = sorted(workdir.glob(f"callgrind.counted.{tenants}.*"))
    for line in (dumps[0] if dumps else out).read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1]) / requests
    sys.exit("callgrind wrote no totals")


def instructions(binary, workdir, requests, tenants=0):
    """Total user-space instructions of the process for `requests` hop requests (after warm-up and
    `tenants` requests each as a different tenant)."""
    out = workdir / f"callgrind.{requests}"
    svc = start(binary, workdir, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"])
    try:
        as_tenants(svc, tenants)
        headers = [arg for h in HEADERS for arg in ("-H", h)]
        if shutil.which("oha"):
            cmd = ["oha", "-n", str(requests), "-c", "10", "--no-tui", "--output-format", "quiet", *headers]
        else:
            cmd = ["hey", "-n", str(requests), "-c", "10", *headers]
        subprocess.run(
            [*cmd, svc.api + URL_PATH], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600, check=True
        )
    finally:
        svc.proc.send_signal(2)  # SIGINT: no drain delay
        svc.proc.wait(timeout=120)
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    sys.exit("callgrind wrote no totals")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", type=binary_arg, default=str(ROOT / "target/release/load-shed-api"))
    p.add_argument("--seconds", type=int, default=5, help="per wrk run")
    p.add_argument("--skip", default="", help="comma-separated: perf, callgrind")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="configuration on top of the profile's (repeatable)")
    p.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="sent with every request of step 4 (repeatable)")
    p.add_argument("--tenants", type=int, default=0, help="step 4: as many tenants first, one request each")
    args = p.parse_args()
    HEADERS.extend(args.header)
    for pair in args.env:
        key, sep, value = pair.partition("=")
        if not sep or not key.startswith("LOAD_SHED"):
            sys.exit(f"--env {pair!r}: want LOAD_SHED__SECTION__KEY=VALUE")
        ENV[key] = value
    require_tools(("wrk",), "apt-get install -y wrk")
    skip = set(filter(None, args.skip.split(",")))
    workdir = Path(tempfile.mkdtemp(prefix="load-shed-profile-"))
    extra = "".join(f", {pair}" for pair in args.env + args.header)
    extra += f", {args.tenants} tenants first" if args.tenants else ""
    print(f"profile of one hop ({URL_PATH}), role all{extra}, binary {args.binary}")
    svc = start(args.binary, workdir)
    try:
        context_switches(svc, args.seconds)
        syscalls(svc, args.seconds, workdir)
        if "perf" not in skip and shutil.which("perf"):
            perf_profile(svc, args.seconds, workdir)
        elif "perf" not in skip:
            print("\n3. perf not installed (apt-get install -y linux-perf): skipped")
    finally:
        svc.stop()
    if "callgrind" not in skip and shutil.which("valgrind") and (shutil.which("oha") or shutil.which("hey")):
        # Two runs, so the start-up and shutdown cost cancels out.
        if args.tenants:
            per = instructions_counted(args.binary, workdir, 2500, args.tenants)
            print(f"\n4. user-space instructions per request (callgrind, the 2500 after the tenants only): {per:,.0f}")
        else:
            small = instructions(args.binary, workdir, 500)
            large = instructions(args.binary, workdir, 2500)
            print(f"\n4. user-space instructions per request (callgrind): {(large - small) / 2000:,.0f}")
    elif "callgrind" not in skip:
        print("\n4. valgrind (and oha or hey) not installed: skipped")


if __name__ == "__main__":
    try:
        main()
    except NotUp as e:
        sys.exit(str(e))
