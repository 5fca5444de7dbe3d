#!/usr/bin/env python3
"""Chart checks with real tools, for the default values and every helm/load-shed-api/ci/*-values.yaml:

- `helm lint --strict`;
- `helm template` output validated: core kinds with `kubernetes-validate --strict` (Kubernetes
  1.30, the chart's minimum, and 1.35), ServiceMonitor and PrometheusRule with the
  prometheus-operator JSON schemas, ScaledObject (`autoscaling.signal: load`) with KEDA's
  (.ci/validate-crds.mjs);
- with `signal: load`, a cluster without KEDA's API fails the install with a clear message
  (`helm install --dry-run=client`: nothing is created), and the ScaledObject keeps the HPA's
  contract (fallback never lowers, null results are errors, the same behavior);
- long names: a 53-character release name and a 62-character fullnameOverride render every
  object name distinct per kind and at most 63 characters;
- with autoscaling on, the Deployment starts at minReplicas (never 1);
- the rules of the rendered PrometheusRule pass `promtool check rules`;
- every rendered object carries the chart's standard labels (name, instance, chart, managed-by);
- every `helm install`/`upgrade` command the docs and the rendered NOTES.txt print passes the chart's
  schema with its `--set`, `--set-json`, `--set-string` and `-f` arguments;
- the binary starts with exactly the environment the chart renders for each container (listen
  addresses and the upstream Service's host swapped for loopback), and what it serves proves the
  values reached its configuration: admission limits on /metrics equal the rendered values, and
  `/client` answers 200, or 502 when the values make the upstream fail or point elsewhere.

Usage: python3 .ci/chart_checks.py --binary target/debug/load-shed-api --crd-validator DIR
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from harness import Checks, binary_arg, free_port, get, series, spawn, wait_up

ROOT = Path(__file__).resolve().parent.parent

CHART = ROOT / "helm/load-shed-api"
KUBE_VERSIONS = ["1.30.0", "1.35.0"]
CRD_KINDS = {"ServiceMonitor", "PrometheusRule", "ScaledObject"}
# What `helm template` is told the cluster serves when the values ask for KEDA.
KEDA_API = ["--api-versions", "keda.sh/v1alpha1"]

checks = Checks()
check = checks.check


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, **kw)


STANDARD_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by",
                   "helm.sh/chart")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), CHART / "README.md", ROOT / "terraform/README.md"]
VALUE_OPTIONS = ("--set", "--set-json", "--set-string", "-f", "--values")


def helm_commands(text):
    """Every `helm install`/`helm upgrade` command in `text`, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [m.group(0) for m in re.finditer(r"helm (?:install|upgrade)[^\n`]*", joined)]


def value_arguments(command):
    """The value-setting options of one command, ready for `helm template`."""
    words = shlex.split(command.replace("<chart>", "CHART"))
    out = []
    for i, word in enumerate(words):
        name, eq, value = word.partition("=")
        if name in VALUE_OPTIONS:
            arg = value if eq else (words[i + 1] if i + 1 < len(words) else "")
            if name in ("-f", "--values"):
                arg = str(ROOT / arg)
            out += [name, arg]
    return out


def documented_commands_check(workdir):
    notes = run(["helm", "install", "demo", str(CHART), "--namespace", "demo", "--dry-run=client"])
    sources = [(p.relative_to(ROOT), p.read_text()) for p in DOCS if p.exists()]
    sources.append(("NOTES.txt as rendered", notes.stdout.split("NOTES:", 1)[-1]))
    for name, text in sources:
        for command in helm_commands(text):
            args = value_arguments(command)
            if not args:
                continue
            # A command that asks for the load signal is meant for a cluster that serves KEDA's API.
            keda = KEDA_API if "autoscaling.signal=load" in command or wants_keda(args) else []
            r = run(["helm", "template", "demo", str(CHART), *args, *keda])
            check(r.returncode == 0, f"{name}: `{' '.join(command.split())}` passes the chart's schema"
                  + ("" if r.returncode == 0 else f"\n{r.stderr.strip()}"))


def wants_keda(extra):
    """Whether the values file in `extra` asks for the KEDA ScaledObject."""
    files = [extra[i + 1] for i, a in enumerate(extra) if a == "-f"]
    return any((yaml.safe_load(Path(f).read_text()) or {}).get("autoscaling", {}).get("signal") == "load"
               for f in files)


def names_check(name, docs):
    """Every object name distinct within its kind and a valid DNS label length."""
    seen, problems = set(), []
    for d in docs:
        key = (d["kind"], d["metadata"]["name"])
        if key in seen:
            problems.append(f"{key[0]}/{key[1]} twice")
        if len(key[1]) > 63:
            problems.append(f"{key[0]}/{key[1]} is {len(key[1])} characters")
        seen.add(key)
    check(not problems, f"{name}: {len(docs)} object names distinct per kind, each at most 63 characters"
          + (f" ({'; '.join(problems)})" if problems else ""))


def long_names_check():
    """The names that collided before: a 53-character release, a 62-character fullnameOverride."""
    release = "walkthrough-release-with-a-fairly-long-name-abcdefxyz"
    override = "f" * 40 + "-" + "o" * 21
    for label, release_name, extra in [
        (f"release {len(release)} chars", release, []),
        (f"fullnameOverride {len(override)} chars", "demo", ["--set", f"fullnameOverride={override}"]),
    ]:
        r = run(["helm", "template", release_name, str(CHART), "--namespace", "demo", *extra])
        ok = r.returncode == 0
        check(ok, f"long names ({label}): helm template" + ("" if ok else f"\n{r.stderr}"))
        if r.returncode == 0:
            names_check(f"long names ({label})", [d for d in yaml.safe_load_all(r.stdout) if d])


def keda_checks(docs):
    """The ScaledObject's promises, and the refusal without KEDA."""
    (so,) = [d for d in docs if d["kind"] == "ScaledObject"]
    spec = so["spec"]
    (trigger,) = spec["triggers"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())["autoscaling"]
    check(trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
          and trigger["metadata"]["ignoreNullValues"] == "false"
          and "autoscaling_load_ratio" in trigger["metadata"]["query"],
          f"load: prometheus trigger on autoscaling_load_ratio, AverageValue, ignoreNullValues false "
          f"({trigger['metadata']['query']})")
    check(spec["fallback"]["behavior"] == "currentReplicasIfHigher",
          "load: the fallback holds the replicas (currentReplicasIfHigher), never lowers them")
    check(spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == values["behavior"],
          "load: the ScaledObject's HPA behavior is autoscaling.behavior")
    check(not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"], "load: no chart HPA beside KEDA's")
    dry = run(["helm", "install", "demo", str(CHART), "--namespace", "demo", "--dry-run=client",
               "--set", "autoscaling.signal=load"])
    check(dry.returncode != 0 and "needs KEDA" in dry.stderr and "MANIFEST" not in dry.stdout,
          "load without KEDA's API: helm install fails before creating anything, saying why"
          + (f" ({dry.stderr.strip().splitlines()[-1]})" if dry.stderr.strip() else ""))


def replicas_check(name, docs):
    values = yaml.safe_load((CHART / "values.yaml").read_text())["autoscaling"]
    (api,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["labels"].get(
        "app.kubernetes.io/component") == "api"]
    scaled = any(d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject") for d in docs)
    replicas = api["spec"].get("replicas")
    if scaled:
        low = min(d["spec"].get("minReplicas", d["spec"].get("minReplicaCount", 0)) for d in docs
                  if d["kind"] in ("HorizontalPodAutoscaler", "ScaledObject"))
        check(replicas == low, f"{name}: autoscaled, the api Deployment starts at minReplicas ({replicas}, "
              f"min {low}; default {values['minReplicas']})")


def labels_check(name, docs):
    missing = [f"{d['kind']}/{d['metadata']['name']} lacks {label}"
               for d in docs for label in STANDARD_LABELS if label not in d["metadata"].get("labels", {})]
    wrong = [f"{d['kind']}/{d['metadata']['name']}" for d in docs
             if d["metadata"].get("labels", {}).get("app.kubernetes.io/instance", "demo") != "demo"]
    check(not missing and not wrong, f"{name}: all {len(docs)} objects carry the standard labels"
          + (f" ({'; '.join(missing + wrong)})" if missing or wrong else ""))


def container_env(deployment, configmaps):
    """The container's environment as Kubernetes would build it: envFrom ConfigMaps, then env."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        env[var["name"]] = var["value"]
    return env


def start(binary, env, log):
    return spawn([binary], log, env={"PATH": os.environ["PATH"], **env})


def wait_healthy(proc, base, log):
    wait_up(f"{base}/healthz", proc, base, log=log, timeout=15)
    status, body = get(f"{base}/healthz")
    if status != 200:
        raise RuntimeError(f"{base}/healthz answered {status} {body.strip()}")


def startup_check(name, docs, binary, workdir):
    """Starts the upstream and the api with the rendered environments; checks what they serve."""
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap" and "data" in d
                  and not d["metadata"]["name"].endswith("-dashboard")}
    deployments = {d["spec"]["template"]["spec"]["containers"][0]["name"]: d
                   for d in docs if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    procs = []
    try:
        upstream_addr = None
        upstream_env = {}
        if "upstream" in deployments:
            upstream_env = container_env(deployments["upstream"], configmaps)
            env = dict(upstream_env)
            check(env.get("LOAD_SHED__ROLE") == "upstream", f"{name}: upstream container runs role=upstream")
            port = free_port()
            env["LOAD_SHED__UPSTREAM__LISTEN"] = f"127.0.0.1:{port}"
            log = workdir / f"{name}-upstream.log"
            procs.append(start(binary, env, log))
            wait_healthy(procs[-1], f"http://127.0.0.1:{port}", log)
            upstream_addr = f"127.0.0.1:{port}"
            check(True, f"{name}: the binary accepts the upstream container's environment ({len(env)} variables)")

        env = container_env(deployments["api"], configmaps)
        check(env.get("LOAD_SHED__ROLE") == "api", f"{name}: api container runs role=api")
        url = env["LOAD_SHED__API__UPSTREAM_URL"]
        host = url.split("://", 1)[1].split("/", 1)[0].split(":")[0]
        external = host not in services
        if external:
            # A dependency outside the chart: point at a closed loopback port instead.
            env["LOAD_SHED__API__UPSTREAM_URL"] = f"http://127.0.0.1:{free_port()}"
        else:
            svc_port = services[host]["spec"]["ports"][0]["port"]
            check(url == f"http://{host}:{svc_port}", f"{name}: the api's upstream URL is the upstream Service ({url})")
            env["LOAD_SHED__API__UPSTREAM_URL"] = f"http://{upstream_addr}"
        port = free_port()
        env["LOAD_SHED__API__LISTEN"] = f"127.0.0.1:{port}"
        base = f"http://127.0.0.1:{port}"
        log = workdir / f"{name}-api.log"
        procs.append(start(binary, env, log))
        wait_healthy(procs[-1], base, log)
        check(True, f"{name}: the binary accepts the api container's environment ({len(env)} variables)")

        status, body = get(f"{base}/client")
        fails = external or float(upstream_env.get("LOAD_SHED__UPSTREAM__FAIL_RATE", "0")) >= 1.0
        want = 502 if fails else 200
        check(status == want, f"{name}: /client answers {want} (got {status} {body.strip()})")
        _, text = get(f"{base}/metrics")
        if env.get("LOAD_SHED__ADMISSION__MODE") == "adaptive":
            # Adaptive: it starts by measuring its baseline at min_limit, split by the fractions.
            high = max(int(env["LOAD_SHED__ADMISSION__MIN_LIMIT"]), 3)
            normal = min(max(int(high * float(env["LOAD_SHED__ADMISSION__NORMAL_FRACTION"])), 2), high - 1)
            low = min(max(int(high * float(env["LOAD_SHED__ADMISSION__LOW_FRACTION"])), 1), normal - 1)
            expected = {"high": high, "normal": normal, "low": low}
            source = "min_limit split by the rendered fractions"
        else:
            expected = {p: float(env[f"LOAD_SHED__ADMISSION__{k}"])
                        for p, k in [("high", "MAX_INFLIGHT"), ("normal", "NORMAL_MAX_INFLIGHT"),
                                     ("low", "LOW_MAX_INFLIGHT")]}
            source = "rendered"
        for priority, want_limit in expected.items():
            value = series(text, "admission_limit", priority=priority)
            check(
                value == want_limit,
                f'{name}: admission_limit{{priority="{priority}"}} is the {source} {want_limit:g} (got {value})',
            )
        out = run([binary, "check", base])
        check(
            out.returncode == (1 if fails else 0),
            f"{name}: `load-shed-api check` exits {out.returncode} "
            f"({(out.stdout + out.stderr).strip().splitlines()[-1]})",
        )
    except (RuntimeError, KeyError, OSError) as e:
        check(False, f"{name}: start-up check: {e}")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", type=binary_arg, default=str(ROOT / "target/debug/load-shed-api"))
    parser.add_argument(
        "--crd-validator", required=True, help="directory with node_modules/@kubernetes-models/prometheus-operator"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="load-shed-chart-"))

    cases = [("defaults", [])] + [
        (f.name.removesuffix("-values.yaml"), ["-f", str(f)]) for f in sorted((CHART / "ci").glob("*-values.yaml"))
    ]
    for name, extra in cases:
        print(f"values: {name}", flush=True)
        keda = wants_keda(extra)
        # helm lint cannot be told the cluster's APIs: it renders without the KEDA check.
        lint = run(["helm", "lint", "--strict", str(CHART), *extra,
                    *(["--set", "autoscaling.load.requireKeda=false"] if keda else [])])
        check(
            lint.returncode == 0,
            f"{name}: helm lint --strict" + ("" if lint.returncode == 0 else f"\n{lint.stdout}{lint.stderr}"),
        )
        rendered = run(["helm", "template", "demo", str(CHART), "--namespace", "demo", *extra,
                        *(KEDA_API if keda else [])])
        check(
            rendered.returncode == 0,
            f"{name}: helm template" + ("" if rendered.returncode == 0 else f"\n{rendered.stderr}"),
        )
        if rendered.returncode != 0:
            continue
        docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
        core = [d for d in docs if d["kind"] not in CRD_KINDS]
        crds = [d for d in docs if d["kind"] in CRD_KINDS]
        core_file = workdir / f"{name}-core.yaml"
        core_file.write_text(yaml.safe_dump_all(core))
        for version in KUBE_VERSIONS:
            v = run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", version, str(core_file)])
            check(
                v.returncode == 0,
                f"{name}: {len(core)} core objects valid for Kubernetes {version} (strict)"
                + ("" if v.returncode == 0 else f"\n{v.stdout}{v.stderr}"),
            )
        if crds:
            crd_file = workdir / f"{name}-crds.json"
            crd_file.write_text(json.dumps(crds))
            # ES modules resolve packages from the script's own directory: run a copy placed there.
            script = Path(args.crd_validator) / "validate-crds.mjs"
            script.write_text((ROOT / ".ci/validate-crds.mjs").read_text())
            v = run(["node", str(script), str(crd_file)])
            check(
                v.returncode == 0,
                f"{name}: {len(crds)} ServiceMonitor/PrometheusRule/ScaledObject valid "
                f"({v.stdout.strip()}{v.stderr.strip()})",
            )
        for rule in (d for d in docs if d["kind"] == "PrometheusRule"):
            rules_file = workdir / f"{name}-rules.yaml"
            rules_file.write_text(yaml.safe_dump(rule["spec"]))
            v = run(["promtool", "check", "rules", str(rules_file)])
            check(
                v.returncode == 0,
                f"{name}: rendered PrometheusRule passes promtool check rules"
                + ("" if v.returncode == 0 else f"\n{v.stdout}{v.stderr}"),
            )
        for monitor in (d for d in docs if d["kind"] == "ServiceMonitor"):
            relabel = monitor["spec"]["endpoints"][0]["relabelings"][0]
            check(
                relabel["targetLabel"] == "job" and relabel["replacement"].startswith("load-shed-api"),
                f"{name}: {monitor['metadata']['name']} sets job={relabel['replacement']}",
            )
        labels_check(name, docs)
        names_check(name, docs)
        replicas_check(name, docs)
        if keda:
            keda_checks(docs)
        kinds = sorted(d["kind"] for d in docs)
        print(f"  rendered: {', '.join(kinds)}")
        startup_check(name, docs, args.binary, workdir)

    print("long names", flush=True)
    long_names_check()
    print("documented helm commands", flush=True)
    documented_commands_check(workdir)
    checks.finish("chart checks")


if __name__ == "__main__":
    main()
