"""What the load scripts and .ci/chart_checks.py share: free ports, HTTP GET, waiting for and
stopping a process, reading the Prometheus text format, percentiles, RSS. Standard library only."""

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


def wait_up(url, proc, what):
    """Waits up to 20 s for `url` to answer; exits the script if `proc` dies or it never does."""
    deadline = time.time() + 20
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            get(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what} did not come up")


def stop(proc, sig=signal.SIGTERM, timeout=10):
    """Sends `sig` and waits; kills the process if it is still there after `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
