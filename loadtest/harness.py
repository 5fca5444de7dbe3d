"""What the load scripts and the checks in .ci/ share: free ports, HTTP GET, starting, waiting
for and stopping a process, counting checks, the binary argument, the git commit, reading the
Prometheus text format and HAProxy's request log, percentiles, RSS, the chart's rendered
ScaledObject. Standard library only, but for `scaled_object` (helm and PyYAML)."""

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def default_binary():
    """The release build if there is one, else the debug build."""
    release = ROOT / "target/release/load-shed-api"
    return release if release.exists() else ROOT / "target/debug/load-shed-api"


def binary_arg(text):
    """argparse type of `--binary`: a path relative to where the script was started, made absolute
    (the scripts start processes in scratch directories)."""
    path = Path(text).expanduser().resolve()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: not found (cargo build --release, or --binary PATH)")
    return path


def require_tools(tools, install):
    """Exits naming the install command when one of `tools` is not on PATH."""
    for tool in tools:
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: {install}")


LOAD_TOOLS = ("auto", "oha", "hey")


def pick_load_tool(choice):
    """`--load-tool` (one of LOAD_TOOLS): oha when asked for, or when installed and `auto`; hey
    otherwise. Exits naming the install command when the one picked is missing."""
    tool = "oha" if choice == "oha" or (choice == "auto" and shutil.which("oha")) else "hey"
    require_tools((tool,), "cargo install --locked oha" if tool == "oha" else "apt-get install -y hey")
    return tool


def git_commit():
    """The short commit of the checkout, with `-dirty` when tracked files have changed (other than
    loadtest/RESULTS.md, where the scripts append their own records: consecutive runs stay clean)."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, check=False).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)loadtest/RESULTS.md")
    return commit + ("-dirty" if changed else "")


def spawn(argv, log, **kwargs):
    """Starts `argv` with stdout and stderr going to the file `log` (the parent's handle is closed
    at once; the child keeps its own) and no stdin."""
    with open(log, "wb") as out:
        return subprocess.Popen([str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, **kwargs)


class Checks:
    """Counts checks as they are made, printing each; `finish` prints the closing
    `NAME: N passed, M failed` line and exits non-zero on any failure."""

    def __init__(self):
        self.passed = 0
        self.failures = []

    def check(self, ok, what):
        print(("  ok    " if ok else "  FAIL  ") + what, flush=True)
        if ok:
            self.passed += 1
        else:
            self.failures.append(what)
        return ok

    def fail(self, what):
        return self.check(False, what)

    def __bool__(self):
        """True when something failed."""
        return bool(self.failures)

    def finish(self, name):
        if self.failures:
            print(f"\n{name} FAILED ({len(self.failures)}):", *self.failures, sep="\n  ")
        print(f"\n{name}: {self.passed} passed, {len(self.failures)} failed", flush=True)
        sys.exit(1 if self.failures else 0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=5):
    """(status, body text); an HTTP error status is an answer, not an exception."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def post(url, timeout=5):
    """(status, body text) of a POST without a body; an HTTP error status is an answer."""
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class NotUp(RuntimeError):
    """A process that exited, or never answered, while we waited for it."""


def wait_up(url, proc, what, log=None, timeout=20):
    """Waits until `url` answers (any status). Raises NotUp, with the end of `log` if given, when
    `proc` exits first or `timeout` seconds pass."""
    def tail():
        return f": {Path(log).read_text(errors='replace')[-500:]}" if log and Path(log).exists() else ""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise NotUp(f"{what} exited with {proc.returncode}{tail()}")
        try:
            get(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise NotUp(f"{what} did not come up within {timeout} s{tail()}")


def stop(proc, sig=signal.SIGTERM, timeout=10):
    """Sends `sig` and waits; kills the process if it is still there after `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# HAProxy's per-request log line, as the scripts behind HAProxy configure it: epoch seconds.ms,
# server, status, termination state.
HAPROXY_LOG_FORMAT = "%Ts.%ms %s %ST %tsc"


def haproxy_log(path):
    """[(time accepted, server, status, termination state)] from a log in HAPROXY_LOG_FORMAT."""
    rows = []
    for line in Path(path).read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[2].lstrip("-").isdigit():
            rows.append((float(parts[0]), parts[1], int(parts[2]), parts[3]))
    return rows


def series(text, name, **labels):
    """The sum of every series of `name` in a /metrics text whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def percentile(values, q, empty=None):
    """The nearest-rank `q`th percentile of `values`, or `empty` when there are none."""
    if not values:
        return empty
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def scaled_object(namespace, release="load-shed-api", sets=()):
    """The KEDA ScaledObject that `helm template` renders for `autoscaling.signal=load` (as a
    dict): its query, threshold, bounds and HPA behavior are what a cluster would run."""
    import yaml  # only the autoscaling scripts need PyYAML

    require_tools(("helm",), "see .ci/run's ensure_helm")
    argv = ["helm", "template", release, str(ROOT / "helm/load-shed-api"), "--namespace", namespace,
            "--api-versions", "keda.sh/v1alpha1", "--set", "autoscaling.signal=load",
            "--show-only", "templates/scaledobject.yaml"]
    for s in sets:
        argv += ["--set", s]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout
    return yaml.safe_load(out)
