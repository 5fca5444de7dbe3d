#!/usr/bin/env python3
"""Autoscaling rehearsal: the chart's autoscaling, put on a bench, since no cluster runs here.

- API replicas are real processes of the binary behind a real HAProxy 2.6. HAProxy declares
  maxReplicas servers; adding a replica starts its process, waits for /readyz and enables its
  server through HAProxy's runtime API; removing one puts its server in maintenance first (no new
  requests), then SIGTERMs it (it drains what it holds). Nothing is dropped by scaling.
- A real Prometheus scrapes every running replica (file-based service discovery, 1 s), with the
  labels a ServiceMonitor target would carry, and the controller's kube-state-metrics-style series.
- One simulated dependency (role upstream); the demand comes from oha's open-loop rate mode, in
  steps, evenly spread (`oha -q`).
- A controller applies Kubernetes' documented HPA algorithm every PERIOD seconds (15 s in a
  cluster, shortened here): desired = ceil(metric / target) for KEDA's AverageValue (tolerance
  0.1), stabilisation windows and scaling policies from `behavior`, min/max; KEDA's fallback
  (after failureThreshold failed queries in a row, `currentReplicasIfHigher`). It runs the query,
  threshold, bounds, behavior and fallback of the ScaledObject that `helm template
  --set autoscaling.signal=load` renders, read from the manifest, not copied; and for the CPU run
  the rendered HPA's CPU target against the rendered requests.cpu, as metrics-server would see it
  (rate of process_cpu_seconds_total).

Scenarios (each `load` beside a comparison):
  step    demand 0.5 x -> 3 x -> 0.5 x one replica's capacity; `load` and `cpu`.
  sick    demand 1.5 x, then the dependency 5 x slower; `load`, `cpu` and a naive in-flight signal.
  outage  demand 2 x, Prometheus stopped for 60 s; `load` only: the fallback holds the replicas (the
          CPU HPA reads metrics-server, not Prometheus, so an outage of Prometheus does not touch it).
Each draws offered, served, shed, replicas and the signal over time into one picture
(loadtest/out/autoscale-<scenario>.png) and checks its targets. `--short` runs the step up only
(about 2 minutes; part of .ci/run) and fails when its target is missed.

Usage: python3 loadtest/autoscale.py [--binary PATH] [--scenarios step,sick,outage] [--short] [--record]
Needs: apt-get install -y haproxy prometheus gnuplot-nox; oha (cargo install --locked oha); helm
and PyYAML (the rendered chart).
"""

import argparse
import datetime
import itertools
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from harness import (
    HAPROXY_LOG_FORMAT,
    ROOT,
    Checks,
    binary_arg,
    default_binary,
    free_port,
    get,
    git_commit,
    haproxy_log,
    require_tools,
    scaled_object,
    spawn,
    stop,
    wait_up,
)

NAMESPACE = "rehearsal"
RELEASE = "load-shed-api"
PERIOD = 5.0  # the controller's period (a cluster's HPA: 15 s)
SLOTS = 10  # admission.max_inflight of each replica
LATENCY_MS = 100  # the dependency's healthy latency
CAPACITY = SLOTS * 1000 // LATENCY_MS  # requests a second one replica serves: 100
NAIVE_QUERY = ("sum(avg_over_time(admission_inflight{{{sel}}}[5s])) "
               "/ avg(admission_limit{{{sel},priority=\"high\"}})")
CPU_QUERY = "avg(rate(process_cpu_seconds_total{{{sel}}}[15s]))"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- the chart, rendered ------------------------------------------------------------------------

def render_chart():
    """The ScaledObject (signal load) and the CPU HPA with the api's requests.cpu (signal cpu)."""
    import yaml  # only needed here

    so = scaled_object(NAMESPACE, RELEASE)
    out = subprocess.run(["helm", "template", RELEASE, str(ROOT / "helm/load-shed-api"), "--namespace", NAMESPACE],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    (hpa,) = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    target = hpa["spec"]["scaleTargetRef"]["name"]
    (api,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == target]
    cpu = api["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    cores = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    return so, hpa, cores


def selector_labels(query):
    """The label matchers of the rendered query: what each scraped replica must carry."""
    return dict(re.findall(r'(\w+)="([^"]*)"', query))


# --- the HPA algorithm --------------------------------------------------------------------------

class Hpa:
    """Kubernetes' HPA controller algorithm (pkg/controller/podautoscaler), one evaluation per
    period: the metric's recommendation, stabilisation, the behavior's rate limits, min/max."""

    def __init__(self, minimum, maximum, behavior, fallback=None):
        self.min, self.max, self.behavior = minimum, maximum, behavior
        self.fallback = fallback  # (failureThreshold, replicas) of KEDA, or None
        self.recommendations = []  # (time, replicas)
        self.events = []  # (time, change)
        self.failures = 0

    def recommend(self, now, current, desired):
        """Stabilised and rate-limited replicas for a metric recommendation `desired`."""
        up, down = self.behavior.get("scaleUp", {}), self.behavior.get("scaleDown", {})
        up_cut = now - up.get("stabilizationWindowSeconds", 0)
        down_cut = now - down.get("stabilizationWindowSeconds", 300)
        up_rec = down_rec = desired
        for at, rec in self.recommendations:
            if at > up_cut:
                up_rec = min(up_rec, rec)
            if at > down_cut:
                down_rec = max(down_rec, rec)
        self.recommendations = [(at, r) for at, r in self.recommendations if at > min(up_cut, down_cut)]
        self.recommendations.append((now, desired))
        stabilized = min(max(current, up_rec), down_rec)
        if stabilized > current:
            result = min(stabilized, self.limit(now, current, up, scale_up=True), self.max)
        elif stabilized < current:
            result = max(stabilized, self.limit(now, current, down, scale_up=False), self.min)
        else:
            result = current
        result = max(self.min, min(self.max, result))
        if result != current:
            self.events.append((now, result - current))
        return result

    def limit(self, now, current, rules, scale_up):
        select = rules.get("selectPolicy", "Max")
        if select == "Disabled":
            return current
        pick = max if (select == "Max") == scale_up else min
        result = None
        for policy in rules.get("policies", []):
            period = policy["periodSeconds"]
            added = sum(c for at, c in self.events if at > now - period and c > 0)
            removed = -sum(c for at, c in self.events if at > now - period and c < 0)
            start = current - added + removed if scale_up else current + removed - added
            if policy["type"] == "Pods":
                proposed = start + policy["value"] if scale_up else start - policy["value"]
            elif scale_up:
                proposed = math.ceil(start * (1 + policy["value"] / 100))
            else:
                proposed = int(start * (1 - policy["value"] / 100))
            result = proposed if result is None else pick(result, proposed)
        return current if result is None else result


def average_value(metric, target, current):
    """KEDA's AverageValue external metric: the HPA's usage ratio with its 0.1 tolerance."""
    if abs(metric / (target * current) - 1) <= 0.1:
        return current
    return math.ceil(metric / target)


# --- the bench ----------------------------------------------------------------------------------

class KubeStateMetrics:
    """Serves the HPA's replica series as kube-state-metrics would, for the dashboard's panel."""

    def __init__(self, port, hpa_name):
        self.replicas, self.max = 0, 0
        bench = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                labels = f'namespace="{NAMESPACE}",horizontalpodautoscaler="{hpa_name}"'
                body = (f"kube_horizontalpodautoscaler_status_current_replicas{{{labels}}} {bench.replicas}\n"
                        f"kube_horizontalpodautoscaler_spec_max_replicas{{{labels}}} {bench.max}\n").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Bench:
    def __init__(self, binary, workdir, so, max_replicas):
        self.binary, self.workdir, self.so = binary, workdir, so
        self.labels = selector_labels(so["spec"]["triggers"][0]["metadata"]["query"])
        self.ports = [free_port() for _ in range(max_replicas)]
        self.upstream_port, self.lb_port, self.prom_port, self.ksm_port = (free_port() for _ in range(4))
        self.replicas = {}  # index -> process
        self.starts = 0
        self.procs = []
        self.prometheus = None
        self.ksm = KubeStateMetrics(self.ksm_port, f"keda-hpa-{so['metadata']['name']}")

    # processes
    def start(self):
        env = {"PATH": os.environ["PATH"], "LOAD_SHED__ROLE": "upstream",
               "LOAD_SHED__UPSTREAM__LISTEN": f"127.0.0.1:{self.upstream_port}",
               "LOAD_SHED__UPSTREAM__LATENCY_MS": str(LATENCY_MS), "RUST_LOG": "warn"}
        up = spawn([self.binary], self.workdir / "upstream.log", env=env)
        self.procs.append(up)
        wait_up(f"http://127.0.0.1:{self.upstream_port}/healthz", up, "upstream", log=self.workdir / "upstream.log")
        (self.workdir / "haproxy.cfg").write_text(self.haproxy_config())
        lb = spawn(["haproxy", "-db", "-f", self.workdir / "haproxy.cfg"], self.workdir / "haproxy.log")
        self.procs.append(lb)
        time.sleep(0.5)
        self.write_targets()
        self.start_prometheus()

    def haproxy_config(self):
        lines = [
            "global", "  log stdout format raw local0", "  maxconn 4096",
            f"  stats socket {self.workdir / 'haproxy.sock'} mode 600 level admin",
            "defaults", "  mode http", "  log global", f'  log-format "{HAPROXY_LOG_FORMAT}"',
            "  timeout connect 1s", "  timeout client 30s", "  timeout server 30s", "  retries 0",
            "frontend fe", f"  bind 127.0.0.1:{self.lb_port}", "  default_backend api",
            "backend api", "  balance leastconn",
        ]
        lines += [f"  server r{i} 127.0.0.1:{p} disabled" for i, p in enumerate(self.ports)]
        return "\n".join(lines) + "\n"

    def haproxy(self, command):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(self.workdir / "haproxy.sock"))
            s.sendall(command.encode() + b"\n")
            return s.recv(4096).decode()

    def add(self, i):
        self.starts += 1
        env = {
            "PATH": os.environ["PATH"], "LOAD_SHED__ROLE": "api", "RUST_LOG": "info",
            "LOAD_SHED__API__LISTEN": f"127.0.0.1:{self.ports[i]}",
            "LOAD_SHED__API__UPSTREAM_URL": f"http://127.0.0.1:{self.upstream_port}",
            "LOAD_SHED__ADMISSION__MAX_INFLIGHT": str(SLOTS),
            "LOAD_SHED__ADMISSION__NORMAL_MAX_INFLIGHT": str(SLOTS - 1),
            "LOAD_SHED__ADMISSION__LOW_MAX_INFLIGHT": str(SLOTS - 2),
            "LOAD_SHED__TIMEOUTS__UPSTREAM_MS": "2000",
            "LOAD_SHED__SHUTDOWN__DRAIN_DELAY_SECONDS": "0",
            "LOAD_SHED__SHUTDOWN__GRACE_SECONDS": "5",
            "LOAD_SHED__API__WORKERS": "1",
        }
        name = self.workdir / f"r{i}-{self.starts}.log"
        proc = spawn([self.binary], name, env=env)
        wait_up(f"http://127.0.0.1:{self.ports[i]}/readyz", proc, f"replica r{i}", log=name)
        self.haproxy(f"set server api/r{i} state ready")
        self.replicas[i] = proc
        self.write_targets()

    def remove(self, i):
        self.haproxy(f"set server api/r{i} state maint")
        proc = self.replicas.pop(i)
        self.write_targets()
        threading.Thread(target=stop, args=(proc,), kwargs={"timeout": 15}, daemon=True).start()
        self.procs.append(proc)

    def scale_to(self, n):
        while len(self.replicas) < n:
            self.add(min(set(range(len(self.ports))) - set(self.replicas)))
        while len(self.replicas) > n:
            self.remove(max(self.replicas))
        self.ksm.replicas = n

    # Prometheus
    def write_targets(self):
        extra = {k: v for k, v in self.labels.items() if k != "job"}
        targets = [{"targets": [f"127.0.0.1:{self.ports[i]}"], "labels": {**extra, "pod": f"r{i}"}}
                   for i in sorted(self.replicas)]
        tmp = self.workdir / "targets.json.tmp"
        tmp.write_text(json.dumps(targets))
        tmp.replace(self.workdir / "targets.json")

    def start_prometheus(self):
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": self.labels.get("job", "load-shed-api"),
                 "file_sd_configs": [{"files": [str(self.workdir / "targets.json")], "refresh_interval": "1s"}]},
                {"job_name": "kube-state-metrics", "static_configs": [{"targets": [f"127.0.0.1:{self.ksm_port}"]}]},
            ],
        }
        (self.workdir / "prometheus.yml").write_text(json.dumps(config))
        self.prometheus = spawn(
            ["prometheus", f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.workdir / 'prom-data'}", f"--web.listen-address=127.0.0.1:{self.prom_port}",
             "--log.level=warn"], self.workdir / f"prometheus-{time.time():.0f}.log")
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if get(f"http://127.0.0.1:{self.prom_port}/-/ready", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("Prometheus did not become ready")

    def stop_prometheus(self):
        stop(self.prometheus, timeout=10)

    def query(self, expr, at=None):
        """One instant value (now, or at the epoch second `at`), or None (no series, an error, or
        Prometheus unreachable)."""
        params = {"query": expr, **({"time": f"{at:.3f}"} if at else {})}
        url = f"http://127.0.0.1:{self.prom_port}/api/v1/query?" + urllib.parse.urlencode(params)
        try:
            status, body = get(url, timeout=2)
        except OSError:
            return None
        if status != 200:
            return None
        result = json.loads(body)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def selector(self):
        return ",".join(f'{k}="{v}"' for k, v in self.labels.items())

    def stop_all(self):
        for proc in list(self.replicas.values()) + self.procs + [self.prometheus]:
            if proc is not None:
                stop(proc, timeout=15)
        self.ksm.server.shutdown()


# --- load ---------------------------------------------------------------------------------------

def offer(bench, steps, log_file):
    """Runs oha for each (seconds, rate, dependency ms) in turn, in a thread; returns it."""
    def run():
        with open(log_file, "a") as out:
            for seconds, rate, ms in steps:
                url = f"http://127.0.0.1:{bench.lb_port}/client?ms={ms}"
                conns = max(50, int(rate * ms / 1000 * 2))
                subprocess.run(["oha", "-z", f"{seconds}s", "-q", str(rate), "-c", str(conns), "--latency-correction",
                                "--no-tui", url], stdout=out, stderr=subprocess.STDOUT, check=False,
                               timeout=seconds + 60)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def per_second(log, since):
    """{second: [offered, served (200), shed (429), other]} from HAProxy's log, after `since`."""
    out = {}
    for at, _, status, _ in haproxy_log(log):
        if at < since:
            continue
        row = out.setdefault(int(at - since), [0, 0, 0, 0])
        row[0] += 1
        row[1 if status == 200 else 2 if status == 429 else 3] += 1
    return out


# --- a run --------------------------------------------------------------------------------------

def control(bench, hpa, signal, steps, record, max_seconds):
    """Runs the load and the controller until the load ends. `signal` is (name, query fn of the
    current replicas -> desired or None). Returns the start time and the records."""
    begin = time.time()
    loader = offer(bench, steps, bench.workdir / f"oha-{record['name']}.log")
    next_tick = begin + PERIOD
    while loader.is_alive() and time.time() - begin < max_seconds:
        time.sleep(max(0.0, next_tick - time.time()))
        next_tick += PERIOD
        now = time.time()
        current = len(bench.replicas)
        desired, value, why = signal(current)
        if desired is None:
            hpa.failures += 1
            threshold, fallback = hpa.fallback or (None, None)
            if threshold is not None and hpa.failures >= threshold:
                desired = max(current, fallback)  # currentReplicasIfHigher
                why = f"{why}; fallback after {hpa.failures} failed queries: hold {desired}"
            else:
                log(f"  t={now - begin:5.1f}s {why}: no scaling decision ({hpa.failures} failed in a row)")
                record["periods"].append((now - begin, current, value if value is not None else float("nan")))
                record["inflight"].append(bench.query(f"sum(admission_inflight{{{bench.selector()}}})"))
                continue
        else:
            hpa.failures = 0
        new = hpa.recommend(now, current, desired)
        if new != current or why:
            shown = value if value is None else round(value, 2)
            log(f"  t={now - begin:5.1f}s {record['name']}: {current} -> {new} replicas "
                f"(metric {shown}, recommendation {desired}){' ' + why if why else ''}")
        bench.scale_to(new)
        record["periods"].append((now - begin, new, value if value is not None else float("nan")))
        record["inflight"].append(bench.query(f"sum(admission_inflight{{{bench.selector()}}})"))
    loader.join()
    return begin


def run(bench, so, hpa_doc, cpu_cores, name, kind, steps, events=()):
    """One run with signal `kind` (load / cpu / naive); `events` are (seconds, action) done on time."""
    spec = so["spec"]
    trigger = spec["triggers"][0]["metadata"]
    target = float(trigger["threshold"])
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    fallback = spec["fallback"]
    if kind == "cpu":
        hpa = Hpa(hpa_doc["spec"]["minReplicas"], hpa_doc["spec"]["maxReplicas"], hpa_doc["spec"].get("behavior", {}))
        cpu_target = hpa_doc["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"]
    else:
        fb = (fallback["failureThreshold"], fallback["replicas"]) if kind == "load" else None
        hpa = Hpa(spec["minReplicaCount"], spec["maxReplicaCount"], behavior, fb)
    bench.ksm.max = hpa.max
    bench.scale_to(hpa.min)
    time.sleep(2)
    record = {"name": name, "kind": kind, "periods": [], "inflight": []}
    sel = bench.selector()

    def signal(current):
        if kind == "load":
            value = bench.query(trigger["query"])
            if value is None:
                return None, None, "query failed or empty"
            return average_value(value, target, current), value, ""
        if kind == "naive":
            value = bench.query(NAIVE_QUERY.format(sel=sel))
            if value is None:
                return current, None, ""
            return average_value(value, target, current), value, ""
        value = bench.query(CPU_QUERY.format(sel=sel))
        if value is None:
            return current, None, ""
        utilization = value / cpu_cores * 100
        ratio = utilization / cpu_target
        desired = current if abs(ratio - 1) <= 0.1 else math.ceil(ratio * current)
        return desired, utilization / 100, ""

    for at, action in events:
        threading.Timer(at, action).start()
    log(f"{name}: {kind} signal, {' -> '.join(f'{r}/s for {s}s' for s, r, _ in steps)}")
    total = sum(s for s, _, _ in steps)
    begin = control(bench, hpa, signal, steps, record, total + 30)
    record["begin"] = begin
    record["seconds"] = per_second(bench.workdir / "haproxy.log", begin)
    record["target"] = target if kind != "cpu" else cpu_target / 100
    bench.scale_to(0)
    time.sleep(1)
    return record


# --- judging and drawing ------------------------------------------------------------------------

def replicas_at(record, t):
    rows = [r for at, r, _ in record["periods"] if at <= t]
    return rows[-1] if rows else None


def shed_share(record, start, end):
    rows = [v for s, v in record["seconds"].items() if start <= s < end]
    offered = sum(r[0] for r in rows)
    return (sum(r[2] + r[3] for r in rows) / offered if offered else 0.0), offered


def direction_changes(record, start, end):
    counts = [r for at, r, _ in record["periods"] if start <= at < end]
    moves = [b - a for a, b in itertools.pairwise(counts) if b != a]
    return sum(1 for a, b in itertools.pairwise(moves) if (a > 0) != (b > 0))


def draw(records, picture, title, workdir):
    data = workdir / "plot"
    data.mkdir(exist_ok=True)
    plots = []
    for rec in records:
        sec = data / f"{rec['name']}-seconds.dat"
        per = data / f"{rec['name']}-periods.dat"
        sec.write_text("".join(f"{s} {v[0]} {v[1]} {v[2] + v[3]}\n" for s, v in sorted(rec["seconds"].items())))
        per.write_text("".join(f"{at:.1f} {r} {v}\n" for at, r, v in rec["periods"]))
        plots.append(f"""
set title "{rec['name']}: {rec['kind']} signal (target {rec['target']:g})"
plot '{sec}' using 1:2 with lines lw 2 lc rgb '#888888' title 'offered /s', \\
     '{sec}' using 1:3 with lines lw 2 lc rgb '#2a9d3a' title 'served (200) /s', \\
     '{sec}' using 1:4 with lines lw 2 lc rgb '#d62728' title 'shed or failed /s', \\
     '{per}' using 1:2 axes x1y2 with steps lw 3 lc rgb '#1f5fbf' title 'replicas', \\
     '{per}' using 1:3 axes x1y2 with linespoints pt 7 ps 0.6 lc rgb '#ff9f1c' title 'signal (sum)'
""")
    script = f"""
set terminal pngcairo size 1200,{380 * len(records)} font 'DejaVu Sans,10'
set output '{picture}'
set multiplot layout {len(records)},1 title "{title}"
set grid
set key top left
set xlabel 'seconds'
set ylabel 'requests per second'
set y2label 'replicas / signal'
set y2tics
set yrange [0:*]
set y2range [0:*]
""" + "".join(plots) + "unset multiplot\n"
    (data / f"{picture.stem}.gp").write_text(script)
    subprocess.run(["gnuplot", str(data / f"{picture.stem}.gp")], check=True, timeout=60)


# --- scenarios ----------------------------------------------------------------------------------

def scenario_step(bench, so, hpa, cores, checks, short, workdir):
    low, high = CAPACITY // 2, 3 * CAPACITY
    if short:
        steps = [(15, low, LATENCY_MS), (40, high, LATENCY_MS)]
        kinds = ["load"]
    else:
        down = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
        steps = [(20, low, LATENCY_MS), (60, high, LATENCY_MS),
                 (down.get("stabilizationWindowSeconds", 300) + 3 * PERIOD + 10, low, LATENCY_MS)]
        kinds = ["load", "cpu"]
    records = [run(bench, so, hpa, cores, f"step-{k}", k, steps) for k in kinds]
    rec = records[0]
    target = rec["target"]
    step_at = steps[0][0]
    # One replica's capacity as measured: its slots over the latency its calls really took (the
    # dependency's 100 ms plus the hop), over the last 30 s of the step.
    ok = f'{bench.selector()},result="ok"'
    latency = bench.query(f"sum(increase(upstream_request_duration_seconds_sum{{{ok}}}[30s])) / "
                          f"sum(increase(upstream_request_duration_seconds_count{{{ok}}}[30s]))",
                          at=rec["begin"] + step_at + steps[1][0])
    demand = high * (latency or LATENCY_MS / 1000) / SLOTS  # in replicas' capacities
    want = math.ceil(demand / target)
    at = replicas_at(rec, step_at + 2 * PERIOD + 1)
    checks.check(at is not None and abs(at - want) <= 1,
                 f"step load: {at} replicas two periods after the step (demand {demand:.2f} x one replica's "
                 f"capacity at {latency * 1000 if latency else float('nan'):.0f} ms a call; "
                 f"want ceil({demand:.2f} / {target:g}) = {want} +-1)")
    shed, offered = shed_share(rec, step_at + 3 * PERIOD, step_at + steps[1][0])
    checks.check(shed < 0.01, f"step load: {shed:.2%} of {offered} requests shed or failed from the third period "
                 "after the step on (want < 1 %)")
    checks.check(direction_changes(rec, step_at, step_at + steps[1][0]) == 0,
                 "step load: no change of direction during the step up")
    summary = {"demand": round(demand, 2), "want": want, "at_two_periods": at, "shed_after": round(shed, 4),
               "peak": max(r for _, r, _ in rec["periods"])}
    if not short:
        drop_at = step_at + steps[1][0]
        window = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"].get(
            "stabilizationWindowSeconds", 300)
        back = replicas_at(rec, drop_at + window + PERIOD + 1)
        minimum = so["spec"]["minReplicaCount"]
        checks.check(back == minimum, f"step load: back at {back} replicas {window:.0f} s + one period after the drop "
                     f"(want minReplicas {minimum})")
        checks.check(direction_changes(rec, drop_at, drop_at + steps[2][0]) == 0,
                     "step load: no change of direction after the drop")
        summary["back"] = back
        cpu = records[1]
        summary["cpu_peak"] = max(r for _, r, _ in cpu["periods"])
        summary["cpu_at_two_periods"] = replicas_at(cpu, step_at + 2 * PERIOD + 1)
        summary["cpu_shed_after"] = round(shed_share(cpu, step_at + 3 * PERIOD, step_at + steps[1][0])[0], 4)
    picture = ROOT / "loadtest/out/autoscale-step.png"
    draw(records, picture, "Demand step: 0.5 x -> 3 x -> 0.5 x one replica's capacity", workdir)
    return summary, picture


def scenario_sick(bench, so, hpa, cores, checks, workdir):
    demand = CAPACITY * 3 // 2
    steps = [(40, demand, LATENCY_MS), (60, demand, LATENCY_MS * 5)]
    records = [run(bench, so, hpa, cores, f"sick-{k}", k, steps) for k in ("load", "cpu", "naive")]
    summary = {}
    for rec in records:
        before = replicas_at(rec, steps[0][0])
        during = [r for at, r, _ in rec["periods"] if at > steps[0][0]]
        inflight = [v for (at, _, _), v in zip(rec["periods"], rec["inflight"]) if at > steps[0][0] and v is not None]
        summary[rec["kind"]] = {"before": before, "max_during": max(during), "max_inflight": max(inflight, default=0)}
    load = summary["load"]
    checks.check(load["max_during"] <= load["before"] + 1,
                 f"sick load: replicas {load['before']} before the slowdown, at most {load['max_during']} during it "
                 "(want at most one more)")
    checks.check(load["max_inflight"] <= load["before"] * SLOTS,
                 f"sick load: at most {load['max_inflight']:.0f} calls in flight to the dependency during the slowdown "
                 f"(want <= {load['before']} replicas x {SLOTS} slots)")
    for kind in ("cpu", "naive"):
        other = summary[kind]
        log(f"sick {kind}: replicas {other['before']} -> {other['max_during']} "
            f"(max {so['spec']['maxReplicaCount']}), {other['max_inflight']:.0f} calls in flight at most")
    picture = ROOT / "loadtest/out/autoscale-sick.png"
    draw(records, picture, "Sick dependency: demand 1.5 x, then the dependency 5 x slower", workdir)
    return summary, picture


def scenario_outage(bench, so, hpa, cores, checks, workdir):
    steps = [(45, 2 * CAPACITY, LATENCY_MS), (60, 2 * CAPACITY, LATENCY_MS), (20, 2 * CAPACITY, LATENCY_MS)]
    stopped, started = steps[0][0], steps[0][0] + steps[1][0]
    events = [(stopped, bench.stop_prometheus), (started, bench.start_prometheus)]
    (rec,) = [run(bench, so, hpa, cores, "outage-load", "load", steps, events)]
    before = replicas_at(rec, stopped)
    during = [r for at, r, _ in rec["periods"] if stopped <= at <= started + PERIOD]
    checks.check(min(during) >= before, f"outage load: {before} replicas when Prometheus stopped, never fewer "
                 f"during the 60 s outage (min {min(during)})")
    picture = ROOT / "loadtest/out/autoscale-outage.png"
    draw([rec], picture, "Prometheus stopped for 60 s under 2 x demand", workdir)
    return {"before": before, "min_during": min(during)}, picture


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary", type=binary_arg, default=str(default_binary()))
    parser.add_argument("--scenarios", default="step,sick,outage")
    parser.add_argument("--short", action="store_true", help="the step up only, for CI")
    parser.add_argument("--record", action="store_true", help="append the figures to loadtest/RESULTS.md")
    args = parser.parse_args()
    require_tools(("haproxy", "prometheus", "gnuplot"), "apt-get install -y haproxy prometheus gnuplot-nox")
    require_tools(("oha",), "cargo install --locked oha")
    workdir = Path(tempfile.mkdtemp(prefix="load-shed-autoscale-"))
    (ROOT / "loadtest/out").mkdir(exist_ok=True)
    so, hpa, cores = render_chart()
    log(f"rendered ScaledObject: query {so['spec']['triggers'][0]['metadata']['query']}, "
        f"threshold {so['spec']['triggers'][0]['metadata']['threshold']}, "
        f"replicas {so['spec']['minReplicaCount']}-{so['spec']['maxReplicaCount']}; CPU HPA: "
        f"{hpa['spec']['metrics'][0]['resource']['target']['averageUtilization']} % of {cores:g} cores")
    checks = Checks()
    bench = Bench(args.binary, workdir, so, so["spec"]["maxReplicaCount"])
    results = {}
    try:
        bench.start()
        scenarios = ["step"] if args.short else args.scenarios.split(",")
        for name in scenarios:
            if name == "step":
                results[name] = scenario_step(bench, so, hpa, cores, checks, args.short, workdir)
            elif name == "sick":
                results[name] = scenario_sick(bench, so, hpa, cores, checks, workdir)
            elif name == "outage":
                results[name] = scenario_outage(bench, so, hpa, cores, checks, workdir)
        if not args.short:
            ksm = bench.query(f'kube_horizontalpodautoscaler_spec_max_replicas{{namespace="{NAMESPACE}"}}')
            checks.check(ksm == so["spec"]["maxReplicaCount"],
                         f"the dashboard's HPA series are served and scraped (max replicas {ksm})")
    except Exception as e:  # noqa: BLE001 - any error is a failed check, after cleanup
        checks.fail(f"error: {e}")
        traceback.print_exc()
    finally:
        bench.stop_all()
    logs = "".join(p.read_text(errors="replace") for p in workdir.glob("r*.log"))
    checks.check("panicked" not in logs, "no panic in any replica's log")
    for name, (summary, picture) in results.items():
        print(f"{name}: {json.dumps(summary)} -> {picture}")
    if args.record and not checks:
        record(args, results)
    print(f"logs in {workdir}")
    checks.finish("autoscaling rehearsal")


def record(args, results):
    date = datetime.date.today().isoformat()
    build = Path(args.binary).parent.name
    argv = " ".join(sys.argv[1:])
    command = (f"`python3 loadtest/autoscale.py {argv}` ({build} build, {os.cpu_count()} cores, controller period "
               f"{PERIOD:g} s, {SLOTS} slots x {LATENCY_MS} ms = {CAPACITY}/s per replica)\n")
    lines = [f"\n## Autoscaling rehearsal, {date} (commit {git_commit()})\n", command]
    for name, (summary, picture) in results.items():
        lines.append(f"- **{name}**: `{json.dumps(summary)}`; picture `{picture.relative_to(ROOT)}`\n")
    with open(ROOT / "loadtest/RESULTS.md", "a") as f:
        f.writelines(lines)


if __name__ == "__main__":
    main()
