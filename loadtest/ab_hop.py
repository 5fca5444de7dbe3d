#!/usr/bin/env python3
"""Paired A/B of the `/client?ms=0` hop for two or more builds, for changes too small for one
bench.py run to resolve on a noisy machine.

Rounds alternate between the binaries; in each round, each binary runs in role `all` (the same
roomy ceilings as bench.py's hop step), wrk measures its hop, then nginx's proxy hop to that same
service's upstream, plain and with its connections spread over both workers (`reuseport`). Per
binary it prints every round and the medians of the paired ratios. Loopback only, bounded: about
(3 x seconds + 3) s per binary and round.

Usage: python3 loadtest/ab_hop.py --rounds 8 --seconds 3 BINARY_A BINARY_B [...]
Needs: apt-get install -y wrk nginx-light
"""

import argparse
import statistics
import tempfile
from pathlib import Path

from bench import Nginx, Service, wrk
from harness import binary_arg, require_tools
from profile_hop import ENV  # the hop step's settings, stopping at once


def one_round(binary, workdir, name, seconds):
    """(service hop, nginx proxy hop, nginx proxy hop spread) in req/s."""
    svc = Service(ENV, workdir, name, binary=binary)
    nginx = None
    try:
        nginx = Nginx(workdir, svc.up_port)
        wrk(f"{svc.api}/client?ms=0", 1)  # warm the upstream connections
        ours = wrk(f"{svc.api}/client?ms=0", seconds)["rps"]
        plain = wrk(f"{nginx.base}/upstream?ms=0", seconds)["rps"]
        spread = wrk(f"{nginx.even}/upstream?ms=0", seconds)["rps"]
    finally:
        if nginx:
            nginx.stop()
        svc.stop()
    return ours, plain, spread


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("binaries", nargs="+", type=binary_arg)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--seconds", type=int, default=3, help="per wrk run")
    args = p.parse_args()
    require_tools(["wrk", "nginx"], "apt-get install -y wrk nginx-light")
    workdir = Path(tempfile.mkdtemp(prefix="ab_hop-"))
    results = {b: [] for b in args.binaries}
    for i in range(args.rounds):
        for n, binary in enumerate(args.binaries):
            ours, plain, spread = one_round(binary, workdir, f"r{i}b{n}", args.seconds)
            results[binary].append((ours, plain, spread))
            print(f"round {i + 1} {binary}: {ours:.0f} req/s, {ours / plain:.2f} x nginx ({plain:.0f}), "
                  f"{ours / spread:.2f} x spread ({spread:.0f})", flush=True)
    print(f"\nmedians over {args.rounds} rounds of {args.seconds} s:")
    for binary, rows in results.items():
        print(f"  {binary}: {statistics.median(r[0] for r in rows):.0f} req/s, "
              f"{statistics.median(r[0] / r[1] for r in rows):.2f} x nginx proxy hop, "
              f"{statistics.median(r[0] / r[2] for r in rows):.2f} x spread")
    print(f"logs: {workdir}")


if __name__ == "__main__":
    main()
