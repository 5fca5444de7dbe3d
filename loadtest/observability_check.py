#!/usr/bin/env python3
"""Live end-to-end observability check, on loopback only, bounded in time (about one minute).

1. Starts the load-shed-api binary (role `all`, short breaker pause), a second api under the
   throttling policy (`breaker.mode = "throttle"`, 2 s window) and a third in shadow mode
   (`admission.enforce` and `breaker.enforce` false, tenant fairness on), both calling the first
   one's upstream, so that the throttle, shadow and tenants panels have series too, and a real
   Prometheus (own data directory, scrape interval 1 s, job="load-shed-api", namespace and pod
   labels) with the chart's alert rules loaded.
2. Drives the seed's walkthrough with `hey`, all at the dependency's default latency (50 ms), as the
   seed does: baseline, trip the breaker with fail_rate=1.0, recover, then overload so the api sheds.
   The throttling and the shadow apis get 60 failing calls each, one at a time, as the trip begins.
3. Evaluates through Prometheus's HTTP API every PromQL expression of every dashboard panel
   (Grafana macros and variables substituted), the seed's queries verbatim, and every alert
   expression, and asserts what the walkthrough must show.
4. Renders the timeline into one PNG with gnuplot (request rate by status, /client p95, breaker
   state, in-flight vs limits, phases marked).
5. Stops every process it started, by PID, even on failure.

   The chart's autoscaling query (rendered by `helm template` with `autoscaling.signal=load`) must
   read below 1 at the baseline and above 1 under the overload.

Usage: python3 loadtest/observability_check.py [--binary PATH] [--picture PATH]
Needs: prometheus (Debian package `prometheus`), hey (`hey`), gnuplot (`gnuplot-nox`), helm and
PyYAML (for the rendered ScaledObject).
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
from pathlib import Path

from harness import (
    ROOT,
    Checks,
    binary_arg,
    default_binary,
    free_port,
    get,
    post,
    require_tools,
    scaled_object,
    spawn,
)

DASHBOARD = ROOT / "grafana/dashboards/load-shed-api.json"
# The chart's copy: what a cluster would load (CI proves it identical to grafana/alerts/).
RULES = ROOT / "helm/load-shed-api/files/load-shed-api.rules.yaml"
OPEN_SECONDS = 3

# The original demo README's dashboard queries, verbatim.
SEED_QUERIES = [
    'sum(rate(http_requests_total{job="load-shed-api",path="/client"}[$__rate_interval]))',
    'sum by (pod) (rate(http_requests_total{job="load-shed-api",path="/client"}[$__rate_interval]))',
    ('histogram_quantile(0.95, \n  sum by (le) '
    '(rate(http_request_duration_seconds_bucket{job="load-shed-api",path="/client"}[$__rate_interval]))\n)'),
    'max(circuit_breaker_state{job="load-shed-api"})',
    'sum by (result) (rate(upstream_requests_total{job="load-shed-api"}[$__rate_interval]))',
    'sum(rate(http_requests_total{job="load-shed-api",path="/client",status="429"}[$__rate_interval]))',
]

# The walkthrough's own pod (the throttling api beside it has a breaker state of its own).
WALKTHROUGH_POD = "load-shed-api-local-0"
BREAKER_QUERY = f'max(circuit_breaker_state{{job="load-shed-api",pod="{WALKTHROUGH_POD}"}})'
# Series only kube-state-metrics has (the HPA's replicas): none without a cluster; their queries must
# still evaluate. loadtest/autoscale.py serves them from its HPA controller and checks them with data.
CLUSTER_ONLY = ("kube_horizontalpodautoscaler_",)
NAMESPACE = "local"


class Processes:
    """Everything started here, stopped by PID at the end whatever happens."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, env=None, log=None):
        if log:
            p = spawn(argv, log, env=env, start_new_session=True)
        else:
            p = subprocess.Popen(
                argv,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs.append((name, p))
        return p

    def stop_all(self):
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.time() + 10
        for name, p in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            print(f"stopped {name} (pid {p.pid}, exit {p.returncode})")


def wait_until(what, predicate, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return
        except (OSError, urllib.error.URLError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


class Prometheus:
    def __init__(self, base):
        self.base = base

    def api(self, path, **params):
        url = f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        _, body = get(url, timeout=10)
        return json.loads(body)

    def instant(self, expr, at=None):
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return self.api("query", **params)

    def value(self, expr, at=None):
        r = self.instant(expr, at)
        if r.get("status") != "success" or not r["data"]["result"]:
            return None
        return float(r["data"]["result"][0]["value"][1])

    def range(self, expr, start, end, step=1):
        r = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=step)
        if r.get("status") != "success":
            raise RuntimeError(f"range query failed: {expr}: {r.get('error')}")
        return r["data"]["result"]


def substitute(expr, rate_interval):
    """Grafana macros and this dashboard's variables, as Grafana would expand them (All = .*)."""
    for macro, value in [
        ("$__rate_interval", rate_interval),
        ("${__rate_interval}", rate_interval),
        ("$__interval", "15s"),
        ("${__interval}", "15s"),
        ("${namespace}", ".*"),
        ("$namespace", ".*"),
        ("${pod}", ".*"),
        ("$pod", ".*"),
    ]:
        expr = expr.replace(macro, value)
    return expr


def dashboard_queries():
    dash = json.loads(DASHBOARD.read_text())
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


def run_hey(url, args, log):
    cmd = ["hey", *args, url]
    print("  $ " + " ".join(cmd), flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n{out.stdout}\n{out.stderr}\n")
    codes = [line.strip() for line in out.stdout.splitlines() if line.strip().startswith("[") and "responses" in line]
    print("    " + ", ".join(codes), flush=True)
    return out.returncode


def render(prom, start, end, phases, picture, workdir):
    series = {
        "status": prom.range(
            'sum by (status) (rate(http_requests_total{job="load-shed-api",path="/client"}[5s]))', start, end
        ),
        "p95": prom.range(
            'histogram_quantile(0.95, sum by (le) '
            '(rate(http_request_duration_seconds_bucket{job="load-shed-api",path="/client"}[5s])))',
            start,
            end,
        ),
        "breaker": prom.range(BREAKER_QUERY, start, end),
        "inflight": prom.range('max(admission_inflight{job="load-shed-api"})', start, end),
        "limit": prom.range('max by (priority) (admission_limit{job="load-shed-api"})', start, end),
    }

    def write(name, result, label_key=None):
        files = []
        for i, s in enumerate(result):
            label = s["metric"].get(label_key, name) if label_key else name
            path = workdir / f"{name}-{i}.dat"
            with open(path, "w") as f:
                for t, v in s["values"]:
                    if v not in ("NaN", "+Inf", "-Inf"):
                        f.write(f"{float(t) - start:.1f} {float(v)}\n")
            files.append((path, label))
        return files

    status = write("status", series["status"], "status")
    p95 = write("p95", series["p95"])
    breaker = write("breaker", series["breaker"])
    inflight = write("inflight", series["inflight"])
    limits = write("limit", series["limit"], "priority")

    def plot(files, style="lines lw 2"):
        return ", ".join(f"'{p}' using 1:2 with {style} title '{t}'" for p, t in files) or "NaN notitle"

    marks = "\n".join(
        f"set arrow from {t - start:.1f}, graph 0 to {t - start:.1f}, graph 1 nohead dt 2 lc rgb '#888888'\n"
        f"set label '{name}' at {t - start + 0.5:.1f}, graph 0.93 font ',9' tc rgb '#444444'"
        for name, t in phases
    )
    script = f"""
set terminal pngcairo size 1200,1100 font ',10' noenhanced
set output '{picture}'
set lmargin 10
set rmargin 16
set multiplot layout 4,1 \\
    title 'load-shed-api walkthrough: baseline, trip, recover, overload (real Prometheus, 1 s scrape)'
set xrange [0:{end - start:.0f}]
set grid
set key outside right
{marks}
set ylabel 'req/s (log)'
set logscale y
set yrange [0.5:*]
set title '/client responses by status'
plot {plot(status)}
unset logscale y
set autoscale y
set ylabel 'seconds'
set title '/client p95 latency'
plot {plot(p95)}
set ylabel 'state'
set yrange [-0.2:2.2]
set ytics ('closed' 0, 'open' 1, 'half-open' 2)
set title 'circuit_breaker_state'
plot {plot(breaker, "steps lw 2")}
set autoscale y
set ytics auto
set ylabel 'requests'
set yrange [0:*]
set offsets 0, 0, 5, 0
set xlabel 'seconds since start'
set title 'admission_inflight vs admission_limit'
plot {plot(inflight)}, {plot(limits, "lines lw 1 dt 3")}
unset multiplot
"""
    (workdir / "walkthrough.gp").write_text(script)
    subprocess.run(["gnuplot", str(workdir / "walkthrough.gp")], check=True, timeout=60)
    print(f"picture: {picture}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", type=binary_arg, default=str(default_binary()))
    parser.add_argument("--picture", default=str(ROOT / "loadtest/out/walkthrough.png"))
    args = parser.parse_args()
    require_tools(("prometheus", "hey", "gnuplot"), "apt-get install -y prometheus hey gnuplot-nox")
    load_query = scaled_object(NAMESPACE)["spec"]["triggers"][0]["metadata"]["query"]

    workdir = Path(tempfile.mkdtemp(prefix="load-shed-observe-"))
    picture = Path(args.picture).resolve()
    picture.parent.mkdir(parents=True, exist_ok=True)
    failures = Checks()
    procs = Processes()
    api_port, upstream_port, prom_port = free_port(), free_port(), free_port()
    throttle_port, shadow_port, shadow_admin_port = free_port(), free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    throttling = f"http://127.0.0.1:{throttle_port}"
    shadowing = f"http://127.0.0.1:{shadow_port}"
    try:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "LOAD_SHED__ROLE": "all",
            "LOAD_SHED__API__LISTEN": f"127.0.0.1:{api_port}",
            "LOAD_SHED__UPSTREAM__LISTEN": f"127.0.0.1:{upstream_port}",
            "LOAD_SHED__BREAKER__OPEN_SECONDS": str(OPEN_SECONDS),
            "LOAD_SHED__SHUTDOWN__GRACE_SECONDS": "2",
            "RUST_LOG": "warn",
        }
        procs.start("load-shed-api", [args.binary], env=env, log=workdir / "api.log")
        wait_until("the api", lambda: get(f"{api}/healthz")[0] == 200, 20)
        throttle_env = {
            "PATH": os.environ.get("PATH", ""),
            "LOAD_SHED__ROLE": "api",
            "LOAD_SHED__API__LISTEN": f"127.0.0.1:{throttle_port}",
            "LOAD_SHED__API__UPSTREAM_URL": f"http://127.0.0.1:{upstream_port}",
            "LOAD_SHED__BREAKER__MODE": "throttle",
            "LOAD_SHED__BREAKER__THROTTLE_WINDOW_SECONDS": "2",
            "LOAD_SHED__SHUTDOWN__GRACE_SECONDS": "2",
            "RUST_LOG": "warn",
        }
        procs.start("load-shed-api (throttle)", [args.binary], env=throttle_env, log=workdir / "throttle.log")
        wait_until("the throttling api", lambda: get(f"{throttling}/healthz")[0] == 200, 20)
        shadow_env = {
            **throttle_env,
            "LOAD_SHED__API__LISTEN": f"127.0.0.1:{shadow_port}",
            "LOAD_SHED__BREAKER__MODE": "consecutive",
            "LOAD_SHED__BREAKER__ENFORCE": "false",
            "LOAD_SHED__ADMISSION__ENFORCE": "false",
            "LOAD_SHED__ADMIN__LISTEN": f"127.0.0.1:{shadow_admin_port}",
            # Tenant fairness too, so the tenants panel has a series.
            "LOAD_SHED__ADMISSION__TENANT_HEADER": "X-Tenant",
        }
        procs.start("load-shed-api (shadow)", [args.binary], env=shadow_env, log=workdir / "shadow.log")
        wait_until("the shadow api", lambda: get(f"{shadowing}/healthz")[0] == 200, 20)

        (workdir / "prometheus.yml").write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {
                            "job_name": "load-shed-api",
                            "static_configs": [
                                {
                                    "targets": [f"127.0.0.1:{api_port}"],
                                    # What the ServiceMonitor's target would carry.
                                    "labels": {
                                        "namespace": NAMESPACE,
                                        "pod": WALKTHROUGH_POD,
                                        "service": "load-shed-api",
                                    },
                                },
                                {
                                    "targets": [f"127.0.0.1:{throttle_port}"],
                                    "labels": {
                                        "namespace": NAMESPACE,
                                        "pod": "load-shed-api-local-throttle",
                                        "service": "load-shed-api",
                                    },
                                },
                                {
                                    "targets": [f"127.0.0.1:{shadow_port}"],
                                    "labels": {
                                        "namespace": NAMESPACE,
                                        "pod": "load-shed-api-local-shadow",
                                        "service": "load-shed-api",
                                    },
                                },
                            ],
                        }
                    ],
                }
            )
        )
        procs.start(
            "prometheus",
            [
                "prometheus", f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}", "--storage.tsdb.retention.time=1h", "--log.level=warn",
            ],
            log=workdir / "prometheus.log",
        )
        prom = Prometheus(f"http://127.0.0.1:{prom_port}")
        wait_until("Prometheus", lambda: get(f"{prom.base}/-/ready")[0] == 200, 30)
        wait_until("the first scrape", lambda: prom.value('up{job="load-shed-api"}') == 1.0, 20)

        start = time.time()
        phases = []
        hey_log = workdir / "hey.log"

        print("phase 1: baseline", flush=True)
        phases.append(("baseline", time.time()))
        run_hey(f"{api}/client", ["-z", "8s", "-c", "10"], hey_log)
        baseline_at = time.time() - 1

        print("phase 2: trip the breaker", flush=True)
        phases.append(("trip", time.time()))
        throttled = sum(
            get(f"{throttling}/client?ms=1&fail_rate=1.0")[0] == 503 for _ in range(60)
        )
        failures.check(throttled > 0, f"the throttling api refused {throttled} of 60 failing calls")
        shadowed = [get(f"{shadowing}/client?ms=1&fail_rate=1.0")[0] for _ in range(60)]
        failures.check(shadowed == [502] * 60, "the shadow api let every failing call through (60 x 502)")
        # An operator's override, through the admin listener, so the overrides panel has a series.
        status, _ = post(f"http://127.0.0.1:{shadow_admin_port}/admin/breaker?mode=force-closed&for=1h")
        failures.check(status == 200, f"the shadow api's breaker held closed through its admin listener ({status})")
        trip_started = time.time()
        run_hey(f"{api}/client?ms=1&fail_rate=1.0", ["-z", "4s", "-c", "10"], hey_log)
        time.sleep(2.5)  # two scrapes
        # Read while it is surely open: it opened on the first calls and half-opens after
        # OPEN_SECONDS (then its probe fails and it opens again, and after the calls stop it
        # waits half-open, so a reading after the calls could land on either).
        tripped_at = trip_started + OPEN_SECONDS - 0.5

        print(f"phase 3: wait {OPEN_SECONDS} s, then recover", flush=True)
        time.sleep(OPEN_SECONDS)
        phases.append(("recover", time.time()))
        run_hey(f"{api}/client?fail_rate=0.0", ["-z", "6s", "-c", "5"], hey_log)
        time.sleep(2.5)
        recovered_at = time.time()

        print("phase 4: overload", flush=True)
        phases.append(("overload", time.time()))
        run_hey(f"{api}/client", ["-z", "8s", "-c", "200"], hey_log)
        time.sleep(2.5)
        end = time.time()
        rate_interval = f"{int(end - start) + 5}s"  # covers the whole walkthrough

        print("dashboard queries (every panel, every target):", flush=True)
        for title, expr in dashboard_queries():
            r = prom.instant(substitute(expr, rate_interval), end)
            cluster_only = any(name in expr for name in CLUSTER_ONLY)
            ok = r.get("status") == "success" and (cluster_only or len(r["data"]["result"]) > 0)
            failures.check(
                ok,
                f"{title}: {expr[:90]}{'...' if len(expr) > 90 else ''}"
                + ("" if ok else f" -> {r.get('error') or 'no series'}"),
            )

        print("the seed's queries, verbatim:", flush=True)
        for expr in SEED_QUERIES:
            r = prom.instant(substitute(expr, rate_interval), end)
            ok = r.get("status") == "success" and len(r["data"]["result"]) > 0
            failures.check(ok, " ".join(expr.split())[:100])

        print("what the walkthrough must show:", flush=True)
        during = prom.value(BREAKER_QUERY, tripped_at)
        failures.check(during == 1.0, f"breaker state was 1 during the trip (got {during})")
        after = prom.value(BREAKER_QUERY, recovered_at)
        failures.check(after == 0.0, f"breaker state was 0 after recovery (got {after})")
        shed_expr = next(e for t, e in dashboard_queries() if t.startswith("Load shed rate"))
        shed = prom.value(substitute(shed_expr, "10s"), end - 2.5)
        failures.check(shed is not None and shed > 0, f"429 rate above 0 during overload (got {shed})")
        breakdown_expr = next(e for t, e in dashboard_queries() if t == "Upstream results breakdown")
        r = prom.instant(substitute(breakdown_expr, rate_interval), end)
        results = {s["metric"].get("result"): float(s["value"][1]) for s in r["data"]["result"]}
        for want in ("ok", "error", "breaker_open", "throttled"):
            failures.check(results.get(want, 0) > 0, f"upstream results breakdown has {want} (got {results.get(want)})")

        peak = prom.value(
            f'max_over_time(circuit_breaker_rejection_probability{{pod="load-shed-api-local-throttle"}}[{rate_interval}])',
            end,
        )
        failures.check(peak is not None and peak > 0, f"the throttle's rejection probability rose above 0 (got {peak})")

        held = prom.value('admin_override{pod="load-shed-api-local-shadow",kind="force_closed"}', end)
        failures.check(held == 1.0, f"admin_override shows the override held (got {held})")
        would = prom.value(
            'circuit_breaker_shadow_rejections_total{pod="load-shed-api-local-shadow"}', end
        )
        failures.check(
            would is not None and would >= 50,
            f"the shadow breaker counted the calls it would have refused (got {would}; opens after 5 of 60)",
        )

        print("the chart's autoscaling query (autoscaling.signal=load), live:", flush=True)
        low = prom.value(load_query, baseline_at)
        failures.check(low is not None and low < 1, f"{load_query} below 1 at the baseline (got {low})")
        high = prom.value(load_query, end - 2.5)
        failures.check(high is not None and high > 1, f"{load_query} above 1 under the overload (got {high})")

        print("alert rules:", flush=True)
        wait_until(
            "a rule evaluation",
            lambda: all(not g["lastEvaluation"].startswith("0001") for g in prom.api("rules")["data"]["groups"]),
            10,
        )
        groups = prom.api("rules")["data"]["groups"]
        failures.check(len(groups) > 0, f"{len(groups)} rule group(s) loaded from {RULES.name}")
        for g in groups:
            for rule in g["rules"]:
                failures.check(
                    rule.get("health") == "ok",
                    f"{g['name']}/{rule['name']} health {rule.get('health')} {rule.get('lastError', '')}".rstrip(),
                )
                r = prom.instant(rule["query"], end)
                failures.check(
                    r.get("status") == "success",
                    f"{rule['name']} expression evaluates ({len(r.get('data', {}).get('result', []))} series,"
                    f" state {rule.get('state')})",
                )

        render(prom, start, end, phases, picture, workdir)
    except Exception as e:  # noqa: BLE001 - any error is a failed check, after cleanup
        failures.fail(f"error: {e}")
        print(f"ERROR: {e}", file=sys.stderr)
    finally:
        procs.stop_all()
    for name in ("api.log", "throttle.log", "shadow.log"):
        text = (workdir / name).read_text(errors="replace") if (workdir / name).exists() else ""
        failures.check("panicked" not in text, f"no panic in {name}")
    if failures:
        print(f"logs in {workdir}")
    failures.finish("observability")


if __name__ == "__main__":
    main()
