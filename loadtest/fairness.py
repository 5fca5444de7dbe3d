#!/usr/bin/env python3
"""Fairness between tenants (`admission.tenant_header`), measured: the release binary in role `all`,
one api and one upstream worker, static ceilings 20 / 19 / 18 (19 normal slots), the dependency at
100 ms, so one replica serves about 190 requests/s. Open loop with `oha -q` (evenly spread
arrivals), each tenant its own oha with its own `X-Tenant` header.

  alone   one tenant at 3 x capacity (570/s) for 20 s, fairness off then on: the goodput off is the
          measured capacity; target: on = off within 2 %
  noisy   tenant a at 518/s and b at 52/s (a offers 10 x b, together 3 x capacity) for 30 s, off
          then on; targets with fairness on: b's requests >= 99 % answered 200, a gets >= 95 % of
          the 429s, total goodput >= 95 % of the measured capacity; off shows b shed at a's rate.
          Picture: per-tenant success per second, off vs on (docs/fairness.png)
  many    10 000 distinct tenants in 10 s (wrk with a Lua script, 16 connections, one request each
          in turn, each call 10 ms: about 1400/s, 10 slots) beside one heavy tenant (oha -q 2000, 20
          slots' worth, so the 19 slots are contended), with a quota that
          keeps every tenant tracked (burst 1000000, 0.01/s: none is forgotten during the run, the
          worst case for memory); targets: RSS growth <= 8 MiB over a warm-up of the same shape with
          one light tenant, the heavy tenant gets >= 95 % of the 429s
  flood   closed loop, the worst case for fairness's cost: tenant noisy with 100 hey connections that
          resend each 429 at once (tens of thousands of requests a second, every one an admission
          actor round trip with fairness on) beside quiet with 5, 20 ms calls, 10 s, off then on:
          quiet's share answered 200 and the total goodput (no target in the issue; recorded)
  quota   one tenant at 5 x its quota (quota 20/s, burst 20; oha -q 100) for 30 s; target: admitted
          within 5 % of 20/s (plus the burst); then five times: a 429's Retry-After waited out, and
          the next request is admitted

The decision cost with 10 000 tenants tracked against 10 is profile_hop.py's (`--tenants`).

Usage: cargo build --release && python3 loadtest/fairness.py [--only alone,noisy,many,flood,quota] [--record]
Needs: oha (cargo install --locked oha), wrk, hey, gnuplot (apt-get install -y wrk hey gnuplot-nox)
"""

import argparse
import csv
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import Service
from harness import ROOT, Checks, NotUp, binary_arg, get, git_commit, require_tools, series

CAPACITY = 190  # 19 normal slots / 100 ms
ENV = {
    "LOAD_SHED__API__WORKERS": "1",
    "LOAD_SHED__UPSTREAM__WORKERS": "1",
    "LOAD_SHED__ADMISSION__MAX_INFLIGHT": "20",
    "LOAD_SHED__ADMISSION__NORMAL_MAX_INFLIGHT": "19",
    "LOAD_SHED__ADMISSION__LOW_MAX_INFLIGHT": "18",
    "LOAD_SHED__UPSTREAM__LATENCY_MS": "100",
    "LOAD_SHED__TIMEOUTS__UPSTREAM_MS": "1000",
    "LOAD_SHED__SHUTDOWN__DRAIN_DELAY_SECONDS": "0",
}
FAIR = {"LOAD_SHED__ADMISSION__TENANT_HEADER": "X-Tenant"}


def service(workdir, name, fair, extra=None, binary=None):
    return Service({**ENV, **(FAIR if fair else {}), **(extra or {})}, workdir, name, binary=binary, admin=True)


def oha_rate(svc, tenant, rate, seconds, out, path="/client"):
    """oha at `rate`/s for `seconds` as `tenant`, writing one CSV row per request to `out`."""
    return subprocess.Popen(
        ["oha", "-z", f"{seconds}s", "-q", str(rate), "-c", str(max(20, rate // 4)), "--latency-correction",
         "--no-tui", "--output-format", "csv", "-o", str(out), "-H", f"X-Tenant: {tenant}", svc.api + path],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def rows(path):
    """[(seconds since the run started, status)] from oha's CSV."""
    with open(path) as f:
        return [(float(r["request-start"]), int(r["status"])) for r in csv.DictReader(f)]


def counts(rs):
    out = {}
    for _, status in rs:
        out[status] = out.get(status, 0) + 1
    return out


def per_second(rs, seconds):
    """Share answered 200 in each second of the run."""
    ok, all_ = [0] * seconds, [0] * seconds
    for t, status in rs:
        i = int(t)
        if 0 <= i < seconds:
            all_[i] += 1
            ok[i] += status == 200
    return [o / a if a else None for o, a in zip(ok, all_)]


def alone(binary, workdir):
    out = {}
    for fair in (False, True):
        name = f"alone-{'on' if fair else 'off'}"
        svc = service(workdir, name, fair, binary=binary)
        try:
            oha_rate(svc, "solo", 3 * CAPACITY, 20, workdir / f"{name}.csv").wait(timeout=90)
        finally:
            svc.stop()
        c = counts(rows(workdir / f"{name}.csv"))
        out[fair] = {"goodput": c.get(200, 0) / 20, "statuses": c}
        print(f"{name}: {out[fair]}", flush=True)
    return out


def noisy(binary, workdir, seconds=30):
    out = {}
    rate_b = round(3 * CAPACITY / 11)
    rate_a = 3 * CAPACITY - rate_b
    for fair in (False, True):
        name = f"noisy-{'on' if fair else 'off'}"
        svc = service(workdir, name, fair, binary=binary)
        try:
            procs = [oha_rate(svc, "a", rate_a, seconds, workdir / f"{name}-a.csv"),
                     oha_rate(svc, "b", rate_b, seconds, workdir / f"{name}-b.csv")]
            for p in procs:
                p.wait(timeout=seconds + 60)
            text = get(f"{svc.api}/metrics")[1]
        finally:
            svc.stop()
        a, b = rows(workdir / f"{name}-a.csv"), rows(workdir / f"{name}-b.csv")
        ca, cb = counts(a), counts(b)
        shed_a, shed_b = ca.get(429, 0), cb.get(429, 0)
        out[fair] = {
            "rates": (rate_a, rate_b),
            "a": ca, "b": cb,
            "b_ok": cb.get(200, 0) / max(1, len(b)),
            "a_ok": ca.get(200, 0) / max(1, len(a)),
            "a_share_of_429": shed_a / max(1, shed_a + shed_b),
            "goodput": (ca.get(200, 0) + cb.get(200, 0)) / seconds,
            "reasons": {r: series(text, "admission_shed_total", reason=r)
                        for r in ("capacity", "tenant_share", "tenant_quota", "queue_timeout")},
            "a_series": per_second(a, seconds), "b_series": per_second(b, seconds),
        }
        print(f"{name}: { {k: v for k, v in out[fair].items() if not k.endswith('series')} }", flush=True)
    return out


LIGHT_LUA = """
local n = 0
local prefix = os.getenv("TENANT_PREFIX")
local distinct = tonumber(os.getenv("TENANTS"))
request = function()
  n = n + 1
  return wrk.format("GET", nil, {["X-Tenant"] = prefix .. (n % distinct)})
end
"""


MANY_PATH = "/client?ms=10"


def light(svc, workdir, prefix, tenants, seconds):
    script = workdir / "light.lua"
    script.write_text(LIGHT_LUA)
    return subprocess.Popen(
        ["wrk", "-t1", "-c16", f"-d{seconds}s", "-s", str(script), svc.api + MANY_PATH],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TENANT_PREFIX": prefix, "TENANTS": str(tenants)})


def heavy(svc, workdir, seconds, name):
    out = workdir / f"{name}-heavy.json"
    return out, subprocess.Popen(
        ["oha", "-z", f"{seconds}s", "-q", "2000", "-c", "100", "--latency-correction", "--no-tui",
         "--output-format", "json", "-o", str(out), "-H", "X-Tenant: heavy", svc.api + MANY_PATH],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wrk_counts(text):
    total = int(re.search(r"(\d+) requests in", text).group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return total, int(m.group(1)) if m else 0


def tracked(svc):
    with urllib.request.urlopen(f"{svc.admin_url}/admin/state", timeout=5) as r:
        return json.loads(r.read())["admission"]["tenants"]["tracked"]


def many(binary, workdir, seconds=10, tenants=10_000):
    quota = {"LOAD_SHED__ADMISSION__TENANT_RATE_PER_SECOND": "0.01",
             "LOAD_SHED__ADMISSION__TENANT_BURST": "1000000"}
    svc = service(workdir, "many", True, quota, binary=binary)
    try:
        # Warm-up of the same shape with one light tenant: connections, buffers and the runtime
        # reach their size, so what grows afterwards is the tenants.
        _, h = heavy(svc, workdir, 4, "warm")
        w = light(svc, workdir, "warm", 1, 4)
        w.communicate(timeout=60)
        h.wait(timeout=60)
        time.sleep(1)
        before = svc.rss_kib()
        hout, h = heavy(svc, workdir, seconds, "many")
        w = light(svc, workdir, "light-", tenants, seconds)
        peak, most = before, 0
        while w.poll() is None or h.poll() is None:
            peak = max(peak, svc.rss_kib())
            most = max(most, tracked(svc))
            time.sleep(0.25)
        text, _ = w.communicate(timeout=30)
        time.sleep(1.2)  # the state's view is brought up to date once a second
        most = max(most, tracked(svc))
        after = svc.rss_kib()
    finally:
        svc.stop()
    light_total, light_not_ok = wrk_counts(text)
    report = json.loads(hout.read_text())
    codes = {int(k): v for k, v in report.get("statusCodeDistribution", {}).items()}
    heavy_429 = codes.get(429, 0)
    result = {
        "rss_before_kib": before, "rss_peak_kib": peak, "rss_after_kib": after,
        "growth_mib": (peak - before) / 1024, "tracked_most": most,
        "light_requests": light_total, "light_not_200": light_not_ok,
        "heavy": codes, "heavy_share_of_429": heavy_429 / max(1, heavy_429 + light_not_ok),
    }
    print(f"many: {result}", flush=True)
    return result


def hey_counts(text):
    """{status: count} and requests/s from hey's summary."""
    codes = {int(m.group(1)): int(m.group(2)) for m in re.finditer(r"\[(\d+)\]\s+(\d+) responses", text)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    return codes, rps


def flood(binary, workdir, seconds=10):
    out = {}
    for fair in (False, True):
        name = f"flood-{'on' if fair else 'off'}"
        svc = service(workdir, name, fair, binary=binary)
        try:
            procs = {tenant: subprocess.Popen(
                ["hey", "-z", f"{seconds}s", "-c", str(conns), "-H", f"X-Tenant: {tenant}",
                 svc.api + "/client?ms=20"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for tenant, conns in (("noisy", 100), ("quiet", 5))}
            texts = {t: p.communicate(timeout=seconds + 60)[0] for t, p in procs.items()}
        finally:
            svc.stop()
        (noisy_codes, noisy_rps), (quiet_codes, _) = hey_counts(texts["noisy"]), hey_counts(texts["quiet"])
        out[fair] = {
            "noisy": noisy_codes, "quiet": quiet_codes, "noisy_rps": noisy_rps,
            "quiet_ok": quiet_codes.get(200, 0) / max(1, sum(quiet_codes.values())),
            "goodput": (noisy_codes.get(200, 0) + quiet_codes.get(200, 0)) / seconds,
        }
        print(f"{name}: {out[fair]}", flush=True)
    return out


def quota(binary, workdir, seconds=30, rate=20, burst=20):
    extra = {"LOAD_SHED__ADMISSION__TENANT_RATE_PER_SECOND": str(rate),
             "LOAD_SHED__ADMISSION__TENANT_BURST": str(burst),
             "LOAD_SHED__UPSTREAM__LATENCY_MS": "5"}
    svc = service(workdir, "quota", True, extra, binary=binary)
    probes = []
    try:
        oha_rate(svc, "q", 5 * rate, seconds, workdir / "quota.csv").wait(timeout=seconds + 60)
        for _ in range(5):
            while True:
                status, retry_after = fetch(svc, "q")
                if status == 429:
                    break
            wait = int(retry_after or "0")
            time.sleep(wait)
            probes.append((wait, fetch(svc, "q")[0]))
    finally:
        svc.stop()
    c = counts(rows(workdir / "quota.csv"))
    admitted = c.get(200, 0)
    result = {"statuses": c, "admitted_per_second": admitted / seconds,
              "beyond_burst_per_second": (admitted - burst) / seconds, "probes": probes}
    print(f"quota: {result}", flush=True)
    return result


def fetch(svc, tenant):
    """(status, Retry-After or None) of one request as `tenant`."""
    req = urllib.request.Request(svc.api + "/client?ms=0", headers={"X-Tenant": tenant})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.headers.get("Retry-After")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Retry-After")


def picture(noisy_out, path, workdir):
    data = workdir / "noisy.dat"
    seconds = len(noisy_out[True]["a_series"])
    with open(data, "w") as f:
        for i in range(seconds):
            vals = [noisy_out[fair][k][i] for fair in (False, True) for k in ("a_series", "b_series")]
            f.write(f"{i} " + " ".join("NaN" if v is None else f"{100 * v:.1f}" for v in vals) + "\n")
    gp = workdir / "noisy.gp"
    gp.write_text(f"""set terminal pngcairo size 1000,420 font "sans,10"
set termoption noenhanced
set output "{path}"
set multiplot layout 1,2 title "Noisy neighbour: tenant a offers 10 x b, together 3 x capacity (open loop)"
set yrange [0:105]
set xlabel "seconds"
set ylabel "answered 200 (%)"
set key bottom right
set title "fairness off (admission.tenant_header empty)"
plot "{data}" using 1:2 with lines lw 2 title "a (518/s)", "{data}" using 1:3 with lines lw 2 title "b (52/s)"
set title "fairness on (X-Tenant)"
plot "{data}" using 1:4 with lines lw 2 title "a (518/s)", "{data}" using 1:5 with lines lw 2 title "b (52/s)"
unset multiplot
""")
    subprocess.run(["gnuplot", str(gp)], check=True, timeout=60)


def noisy_lines(n, capacity, checks, picture_path, workdir):
    """The noisy-neighbour checks, picture and table."""
    on, off = n[True], n[False]
    checks.check(on["b_ok"] >= 0.99, f"noisy: b answered 200 {100 * on['b_ok']:.2f} % (>= 99 %)")
    checks.check(on["a_share_of_429"] >= 0.95,
                 f"noisy: a got {100 * on['a_share_of_429']:.2f} % of the 429s (>= 95 %)")
    checks.check(on["goodput"] >= 0.95 * capacity,
                 f"noisy: goodput {on['goodput']:.1f}/s >= 95 % of capacity {capacity:.1f}/s")
    picture(n, picture_path, workdir)
    rate_a, rate_b = on["rates"]
    lines = [f"**Noisy neighbour** (a at {rate_a}/s, b at {rate_b}/s, 30 s; capacity {capacity:.1f}/s):", "",
             ("| fairness | b answered 200 | a answered 200 | a's share of the 429s | goodput (of capacity) "
              "| shed by reason |"),
             "|---|---|---|---|---|---|"]
    for fair, r in ((False, off), (True, on)):
        reasons = ", ".join(f"{k} {v:.0f}" for k, v in r["reasons"].items() if v)
        lines.append(f"| {'on' if fair else 'off'} | {100 * r['b_ok']:.2f} % | {100 * r['a_ok']:.2f} % | "
                     f"{100 * r['a_share_of_429']:.2f} % | {r['goodput']:.1f}/s "
                     f"({100 * r['goodput'] / capacity:.1f} %) | {reasons} |")
    return lines + ["", ("Targets with fairness on: b ≥ 99 % answered 200, a ≥ 95 % of the 429s, goodput ≥ 95 % "
                         "of capacity. Picture: `docs/fairness.png`."), ""]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", type=binary_arg, default=str(ROOT / "target/release/load-shed-api"))
    p.add_argument("--only", default="alone,noisy,many,flood,quota")
    p.add_argument("--picture", default=str(ROOT / "docs/fairness.png"))
    p.add_argument("--record", action="store_true", help="append to loadtest/RESULTS.md")
    args = p.parse_args()
    require_tools(("oha", "wrk", "gnuplot"), "apt-get install -y wrk gnuplot-nox; cargo install --locked oha")
    only = set(args.only.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="load-shed-fairness-"))
    checks, lines = Checks(), []
    capacity = CAPACITY
    if "alone" in only:
        a = alone(args.binary, workdir)
        off, on = a[False]["goodput"], a[True]["goodput"]
        capacity = off
        diff = (on - off) / off
        checks.check(abs(diff) <= 0.02, f"alone: goodput on {on:.1f}/s vs off {off:.1f}/s ({100 * diff:+.2f} %)")
        lines += [(f"**Alone** (one tenant at {3 * CAPACITY}/s, 20 s): goodput off {off:.1f}/s (the measured "
                   f"capacity), on {on:.1f}/s ({100 * diff:+.2f} %; target ± 2 %). Statuses off "
                   f"{a[False]['statuses']}, on {a[True]['statuses']}."), ""]
    if "noisy" in only:
        lines += noisy_lines(noisy(args.binary, workdir), capacity, checks, args.picture, workdir)
    if "many" in only:
        m = many(args.binary, workdir)
        growth, share = m["growth_mib"], m["heavy_share_of_429"]
        checks.check(growth <= 8, f"many: RSS growth {growth:.2f} MiB (<= 8)")
        checks.check(share >= 0.95, f"many: heavy got {100 * share:.2f} % of the 429s (>= 95 %)")
        lines += [(f"**Many tenants** (10 000 distinct light tenants in 10 s, {m['light_requests']} light requests, "
                   f"beside one heavy tenant; at most {m['tracked_most']} tenants tracked at once): RSS "
                   f"{m['rss_before_kib'] / 1024:.1f} MiB after the warm-up, peak {m['rss_peak_kib'] / 1024:.1f} "
                   f"MiB (growth {growth:.2f} MiB; target ≤ 8), {m['rss_after_kib'] / 1024:.1f} MiB after; light "
                   f"requests not answered 200: {m['light_not_200']}; the heavy tenant's answers {m['heavy']}, its "
                   f"share of the 429s {100 * share:.2f} % (target ≥ 95 %)."), ""]
    if "flood" in only:
        f = flood(args.binary, workdir)
        lines += [("**Flood** (closed loop: noisy with 100 hey connections resending each 429 at once, quiet "
                   "with 5; 20 ms calls, 10 s; no target):"), "",
                  "| fairness | requests/s offered by noisy | quiet answered 200 | goodput | noisy / quiet statuses |",
                  "|---|---|---|---|---|"]
        for fair in (False, True):
            r = f[fair]
            lines.append(f"| {'on' if fair else 'off'} | {r['noisy_rps']:,.0f} | {100 * r['quiet_ok']:.2f} % | "
                         f"{r['goodput']:.0f}/s | {r['noisy']} / {r['quiet']} |")
        lines.append("")
    if "quota" in only:
        q = quota(args.binary, workdir)
        beyond = q["beyond_burst_per_second"]
        err = (beyond - 20) / 20
        checks.check(abs(err) <= 0.05, f"quota: admitted beyond the burst {beyond:.2f}/s vs 20/s ({100 * err:+.2f} %)")
        checks.check(all(w >= 1 and s == 200 for w, s in q["probes"]),
                     f"quota: every Retry-After waited out is followed by an admission: {q['probes']}")
        lines += [(f"**Quota** (20/s, burst 20; one tenant at 100/s for 30 s): admitted "
                   f"{q['admitted_per_second']:.2f}/s, {beyond:.2f}/s beyond the burst ({100 * err:+.2f} %; target "
                   f"± 5 %); statuses {q['statuses']}. A 429's Retry-After waited out, then the next request, five "
                   f"times (wait, status): {q['probes']}."), ""]
    print("\n" + "\n".join(lines) + f"\nlogs in {workdir}")
    if args.record:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        only_arg = f" --only {args.only}" if args.only != p.get_default("only") else ""
        verdict = ("Targets: all met\n\n" if not checks else "Targets NOT met: " + "; ".join(checks.failures) + "\n\n")
        if not checks.passed and not checks.failures:
            verdict = "No target: recorded.\n\n"
        with open(ROOT / "loadtest/RESULTS.md", "a") as f:
            f.write(f"## Tenant fairness {stamp} — commit {git_commit()}\n\n"
                    f"Command: `python3 loadtest/fairness.py --record{only_arg}` (release build, "
                    f"{os.cpu_count()} cores, load generators on the same cores; one api and one upstream worker; "
                    "ceilings 20/19/18, the dependency at 100 ms; open loop with `oha -q` per tenant but for "
                    "the flood).\n\n"
                    + "\n".join(lines) + "\n" + verdict)
    checks.finish("fairness")


if __name__ == "__main__":
    try:
        main()
    except NotUp as e:
        sys.exit(str(e))
