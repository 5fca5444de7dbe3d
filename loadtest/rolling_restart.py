#!/usr/bin/env python3
"""Rolling restart rehearsal: api replicas behind a real HAProxy are restarted in turn under steady
load, and no request may fail; then the one upstream is restarted, and what that costs is counted.

Three api replicas (role api) and one simulated upstream (role upstream) run as separate
processes on loopback; HAProxy 2.6 balances over the api replicas with `option httpchk GET
/readyz`, `inter 100ms fall 1 rise 2` and `retries 0` (a request sent to a replica that refuses it
fails; nothing hides it). `hey` offers steady load (closed loop, 20 clients, /client?ms=20) through
HAProxy while each api replica gets SIGTERM, exits, and is started again on its port once the old
one is gone; then the upstream gets the same. HAProxy logs every request (time, server, status,
termination state); the verdict is read from that log:

  - api restarts: every request answered 200 (429 would not count as a failure, and none is
    expected at this load), no connection error, each replica served again after its restart;
  - upstream restart: counted and reported, not judged (see the README of loadtest/).

Usage: python3 loadtest/rolling_restart.py [--binary PATH] [--replicas 3] [--record]
Needs: apt-get install -y haproxy hey
"""

import argparse
import datetime
import os
import subprocess
import tempfile
import time
from pathlib import Path

from harness import (
    HAPROXY_LOG_FORMAT,
    ROOT,
    Checks,
    NotUp,
    binary_arg,
    default_binary,
    free_port,
    get,
    git_commit,
    haproxy_log,
    require_tools,
    spawn,
    stop,
    wait_up,
)

CLIENTS = 20
PATH = "/client?ms=20"
WARMUP = 3.0
SETTLE = 1.5  # after a replica is back: HAProxy needs `rise 2` checks, then traffic resumes
RECOVERY = 13.0  # after the upstream is back: breaker.open_seconds (10 s) and a probe


def haproxy_config(port, servers):
    lines = [
        "global",
        "  log stdout format raw local0",
        "  maxconn 4096",
        "defaults",
        "  mode http",
        "  log global",
        f'  log-format "{HAPROXY_LOG_FORMAT}"',
        "  timeout connect 1s",
        "  timeout client 10s",
        "  timeout server 10s",
        "  retries 0",
        "frontend fe",
        f"  bind 127.0.0.1:{port}",
        "  default_backend api",
        "backend api",
        "  balance roundrobin",
        "  option httpchk GET /readyz",
        "  http-check expect status 200",
        "  default-server inter 100ms fall 1 rise 2",
    ]
    lines += [f"  server {name} 127.0.0.1:{p} check" for name, p in servers]
    return "\n".join(lines) + "\n"


class Replica:
    """One process of the binary, restartable on the same port."""

    def __init__(self, name, binary, env, port, workdir):
        self.name, self.binary, self.env, self.port, self.workdir = name, binary, env, port, workdir
        self.starts = 0
        self.proc = None

    def start(self):
        self.starts += 1
        self.proc = spawn([self.binary], self.workdir / f"{self.name}-{self.starts}.log", env=self.env,
                          cwd=self.workdir)
        wait_up(f"http://127.0.0.1:{self.port}/readyz", self.proc, self.name,
                log=self.workdir / f"{self.name}-{self.starts}.log")

    def restart(self):
        """SIGTERM, wait for the exit (drain delay + drain), start again. Returns (exit code, seconds)."""
        began = time.time()
        stop(self.proc, timeout=30)
        code, took = self.proc.returncode, time.time() - began
        self.start()
        return code, took


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", type=binary_arg, default=str(default_binary()))
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--drain-delay", type=int, default=None,
                   help="shutdown.drain_delay_seconds of the api replicas (default: the binary's own)")
    p.add_argument("--record", action="store_true", help="append the figures to loadtest/RESULTS.md")
    args = p.parse_args()
    require_tools(("haproxy", "hey"), "apt-get install -y haproxy hey")

    workdir = Path(tempfile.mkdtemp(prefix="load-shed-rolling-"))
    base = {"PATH": os.environ["PATH"], "RUST_LOG": "warn"}
    up_port = free_port()
    upstream = Replica("upstream", args.binary,
                       {**base, "LOAD_SHED__ROLE": "upstream", "LOAD_SHED__UPSTREAM__LISTEN": f"127.0.0.1:{up_port}",
                        "LOAD_SHED__UPSTREAM__WORKERS": "1"}, up_port, workdir)
    apis = []
    for i in range(args.replicas):
        port = free_port()
        apis.append(Replica(f"api{i + 1}", args.binary,
                            {**base, "LOAD_SHED__ROLE": "api", "LOAD_SHED__API__LISTEN": f"127.0.0.1:{port}",
                             "LOAD_SHED__API__UPSTREAM_URL": f"http://127.0.0.1:{up_port}",
                             "LOAD_SHED__API__WORKERS": "1",
                             **({} if args.drain_delay is None
                                else {"LOAD_SHED__SHUTDOWN__DRAIN_DELAY_SECONDS": str(args.drain_delay)})},
                            port, workdir))
    lb_port = free_port()
    (workdir / "haproxy.cfg").write_text(haproxy_config(lb_port, [(a.name, a.port) for a in apis]))
    checks = Checks()
    events = []  # (time, what)
    hey = haproxy = None
    try:
        upstream.start()
        for a in apis:
            a.start()
        haproxy = spawn(["haproxy", "-db", "-f", workdir / "haproxy.cfg"], workdir / "haproxy.log")
        wait_up(f"http://127.0.0.1:{lb_port}/healthz", haproxy, "haproxy", log=workdir / "haproxy.log")
        deadline = time.time() + 10
        while time.time() < deadline and get(f"http://127.0.0.1:{lb_port}/healthz")[0] != 200:
            time.sleep(0.1)

        with open(workdir / "hey.txt", "w") as out:
            hey = subprocess.Popen(["hey", "-z", "600s", "-c", str(CLIENTS), "-t", "5", f"http://127.0.0.1:{lb_port}{PATH}"],
                                   stdout=out, stderr=subprocess.STDOUT)
        time.sleep(WARMUP)
        events.append((time.time(), "api restarts begin"))
        for a in apis:
            code, took = a.restart()
            events.append((time.time(), f"{a.name} back"))
            checks.check(code == 0, f"{a.name}: exit code 0 after SIGTERM (got {code}, {took:.1f} s)")
            time.sleep(SETTLE)
        events.append((time.time(), "upstream restart begins"))
        code, took = upstream.restart()
        events.append((time.time(), "upstream back"))
        checks.check(code == 0, f"upstream: exit code 0 after SIGTERM (got {code}, {took:.1f} s)")
        time.sleep(RECOVERY)
        events.append((time.time(), "end"))
    except NotUp as e:
        checks.fail(str(e))
    finally:
        if hey is not None:
            stop(hey, sig=2)  # SIGINT: hey prints its summary
        for proc in [haproxy, *(a.proc for a in apis), upstream.proc]:
            if proc is not None:
                stop(proc, timeout=30)

    rows = haproxy_log(workdir / "haproxy.log")
    marks = {what: t for t, what in events}
    summary = []
    if "api restarts begin" in marks and "upstream restart begins" in marks:
        api_phase = [r for r in rows if marks["api restarts begin"] <= r[0] < marks["upstream restart begins"]]
        # Termination state "--" (first two characters): the session ended normally.
        failed = [r for r in api_phase if r[2] not in (200, 429) or r[3][:2] != "--"]
        by_server = {}
        for r in api_phase:
            by_server[r[1]] = by_server.get(r[1], 0) + 1
        summary.append(
            f"api restarts ({args.replicas} replicas, "
            f"{marks['upstream restart begins'] - marks['api restarts begin']:.1f} s): "
            f"{len(api_phase)} requests, {len(failed)} failed; by replica: "
            + ", ".join(f"{k} {v}" for k, v in sorted(by_server.items()))
        )
        checks.check(len(api_phase) > 1000, f"api restarts: steady load ({len(api_phase)} requests through HAProxy)")
        checks.check(
            not failed,
            f"api restarts: no request failed ({len(failed)} of {len(api_phase)}"
            + (f"; first: {failed[:3]}" if failed else "")
            + ")",
        )
        for a in apis:
            back = marks[f"{a.name} back"]
            served = sum(1 for r in rows if r[1] == a.name and r[0] > back)
            checks.check(served > 0, f"{a.name}: served again after its restart ({served} requests)")
    if "upstream restart begins" in marks and "end" in marks:
        up_phase = [r for r in rows if marks["upstream restart begins"] <= r[0] <= marks["end"]]
        statuses = {}
        for r in up_phase:
            statuses[r[2]] = statuses.get(r[2], 0) + 1
        bad = [r for r in up_phase if r[2] >= 500]
        span = (bad[-1][0] - bad[0][0]) if bad else 0.0
        summary.append(
            f"upstream restart (then {RECOVERY:.0f} s): {len(up_phase)} requests, statuses "
            + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
            + f"; 5xx from the first to the last: {span:.1f} s"
        )
        tail = [r for r in rows if r[0] > marks["end"] - 2.0 and r[0] <= marks["end"]]
        checks.check(
            tail and all(r[2] == 200 for r in tail),
            f"after the upstream restart the service recovered: the last 2 s all 200 ({len(tail)} requests)",
        )
    hey_summary = (workdir / "hey.txt").read_text(errors="replace") if (workdir / "hey.txt").exists() else ""
    errors = hey_summary.split("Error distribution:", 1)
    summary.append(
        "hey: "
        + " ".join(line.strip() for line in hey_summary.splitlines() if "responses" in line)
        + (
            f"; client-side errors: {' '.join(errors[1].split())[:200]}"
            if len(errors) > 1
            else "; no client-side errors"
        )
    )
    print("\n".join(summary))
    if args.record:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        with open(ROOT / "loadtest/RESULTS.md", "a") as f:
            flag = "" if args.drain_delay is None else f" --drain-delay {args.drain_delay}"
            f.write(
                f"## Rolling restart {stamp} — commit {git_commit()}\n\nCommand: `python3 "
                f"loadtest/rolling_restart.py{flag} --record` "
                f"({args.binary.parent.name} build, {os.cpu_count()} cores; HAProxy {haproxy_version()}, `retries 0`, "
                f"`inter 100ms fall 1 rise 2`; hey -c {CLIENTS} {PATH}; drain delay "
                f"{'the default' if args.drain_delay is None else f'{args.drain_delay} s'}).\n\n```\n"
                + "\n".join(summary)
                + f"\n```\n\nResult: {'FAILED: ' + '; '.join(checks.failures) if checks else 'passed'}\n\n"
            )
    print(f"logs in {workdir}")
    checks.finish("rolling restart")


def haproxy_version():
    out = subprocess.run(["haproxy", "-v"], capture_output=True, text=True, check=False).stdout
    return out.split()[2] if len(out.split()) > 2 else "unknown"


if __name__ == "__main__":
    main()
