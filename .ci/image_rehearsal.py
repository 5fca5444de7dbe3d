#!/usr/bin/env python3
"""The image, built for real from the unmodified Dockerfile with podman, and run the way the chart's
pods run it.

No container registry is reachable here, so the Dockerfile's two `FROM` images are replaced by
stand-ins made on this machine and tagged under the exact same names (made once, kept in podman's
storage):
  - builder `rust:1.95-slim-bookworm`: Debian bookworm from `debootstrap --variant=minbase` with gcc
    and libc6-dev, this machine's Rust toolchain under /usr/local/rust, and this machine's CA bundle
    (cargo reaches the crate registry through it);
  - runtime `gcr.io/distroless/cc-debian12:nonroot`: the files of Debian's libc6, libgcc-s1,
    libstdc++6, tzdata and netbase packages, the CA bundle, and a `nonroot` user 65532 — what
    distroless's cc image holds, without its shell-less extras.
Then, with the chart rendered at its defaults:
  1. `podman build --pull=never` of the Dockerfile as it is; the image size is printed (target <= 40 MB);
  2. the upstream and the api containers run as the rendered Deployments say: the environment of
     their ConfigMaps, the container securityContext (user 65532, read-only root filesystem without
     extra tmpfs, all capabilities dropped, no privilege escalation), the container ports (host
     network; the Services' names resolve to loopback, as a Service's ClusterIP would route);
  3. the liveness and readiness probe paths answer 200 on each container's port;
  4. the `helm test` pod's command runs as a container (its Service URL pointed at the Service's
     target port, which is what kube-proxy does);
  5. each container gets SIGTERM and must exit 0 within the rendered terminationGracePeriodSeconds.

Usage: python3 .ci/image_rehearsal.py      (as root; installs podman, buildah, runc, catatonit, debootstrap)
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from harness import Checks, get

ROOT = Path(__file__).resolve().parent.parent

CHART = ROOT / "helm/load-shed-api"
IMAGE = "localhost/load-shed-api:rehearsal"
TOOLCHAIN_BINARIES = ("cargo", "rustc")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
RUNTIME_PACKAGES = ("libc6", "libgcc-s1", "libstdc++6", "tzdata", "netbase")

checks = Checks()
env = {**os.environ, "CONTAINERS_CONF": str(ROOT / ".ci/containers.conf")}


def sh(*argv, timeout=1800, check=True, **kw):
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, env=env,
                       check=False, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {r.returncode}: {(r.stderr or r.stdout)[-2000:]}")
    return r


def from_images():
    """The FROM names of the Dockerfile, in order (builder, runtime)."""
    names = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("FROM ")]
    if len(names) != 2:
        raise RuntimeError(f"expected two FROM lines in the Dockerfile, found {names}")
    return names


def exists(image):
    return sh("podman", "image", "exists", image, check=False).returncode == 0


def import_dir(root, tag, *changes):
    """`podman import`s the directory `root` as `tag`."""
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    argv = ["podman", "import", *[a for c in changes for a in ("--change", c)], "-", tag]
    r = subprocess.run(argv, stdin=tar.stdout, capture_output=True, text=True, env=env, check=False)
    tar.wait()
    if r.returncode != 0 or tar.returncode != 0:
        raise RuntimeError(f"podman import {tag}: {r.stderr[-1000:]}")


def toolchain():
    """The directory of the Rust toolchain that builds this project here."""
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True, cwd=ROOT)
    return Path(sysroot.stdout.strip())


def builder_standin(tag, work):
    root = work / "builder"
    began = time.time()
    sh("debootstrap", "--variant=minbase", "--include=gcc,libc6-dev,ca-certificates", "bookworm", root,
       "http://deb.debian.org/debian", timeout=1800)
    rust = root / "usr/local/rust"
    (rust / "bin").mkdir(parents=True)
    tc = toolchain()
    for name in TOOLCHAIN_BINARIES:
        shutil.copy2(tc / "bin" / name, rust / "bin" / name)
    shutil.copytree(
        tc / "lib",
        rust / "lib",
        symlinks=True,
        ignore=lambda d, names: [n for n in names if Path(d, n) in (tc / "lib/rustlib/src", tc / "lib/rustlib/etc")],
    )
    shutil.copy2(CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
    (root / "usr/local/cargo").mkdir(parents=True, exist_ok=True)
    import_dir(
        root,
        tag,
        "ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV CARGO_HOME=/usr/local/cargo",
    )
    print(f"  made the stand-in {tag} in {time.time() - began:.0f} s", flush=True)


def runtime_standin(tag, work):
    root, debs = work / "runtime", work / "debs"
    root.mkdir()
    debs.mkdir()
    if sh("apt-get", "download", *RUNTIME_PACKAGES, cwd=debs, check=False).returncode != 0:
        sh("apt-get", "update", "-qq")  # a new machine's package lists may be empty
        sh("apt-get", "download", *RUNTIME_PACKAGES, cwd=debs)
    for deb in sorted(debs.glob("*.deb")):
        sh("dpkg-deb", "-x", deb, root)
    for junk in ("usr/share/doc", "usr/share/man", "usr/share/lintian", "usr/share/locale"):
        shutil.rmtree(root / junk, ignore_errors=True)
    (root / "etc/ssl/certs").mkdir(parents=True, exist_ok=True)
    shutil.copy2(CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
        "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
    )
    (root / "etc/group").write_text("root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")
    (root / "tmp").mkdir(mode=0o1777, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    (root / "home/nonroot").mkdir(parents=True)
    os.chown(root / "home/nonroot", 65532, 65532)
    import_dir(root, tag, "USER 65532:65532", "WORKDIR /home/nonroot")
    print(f"  made the stand-in {tag}", flush=True)


def render():
    out = subprocess.run(
        ["helm", "template", "demo", str(CHART), "--namespace", "demo"], capture_output=True, text=True, check=True
    )
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    deployments = {d["spec"]["template"]["spec"]["containers"][0]["name"]: d for d in docs if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    test_pod = next(d for d in docs if d["kind"] == "Pod")
    return deployments, configmaps, services, test_pod


def security_flags(ctx, pod_ctx):
    """podman flags for a Kubernetes container securityContext (and the pod's user, if the container sets none)."""
    flags = []
    user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
    group = ctx.get("runAsGroup", pod_ctx.get("runAsGroup"))
    if user is not None:
        flags.append(f"--user={user}:{group if group is not None else user}")
    if ctx.get("readOnlyRootFilesystem"):
        flags += ["--read-only", "--read-only-tmpfs=false"]
    drop = ctx.get("capabilities", {}).get("drop", [])
    flags += [f"--cap-drop={c}" for c in drop]
    if ctx.get("allowPrivilegeEscalation") is False:
        flags.append("--security-opt=no-new-privileges")
    if ctx.get("privileged"):
        flags.append("--privileged")
    return flags


def run_container(name, deployment, configmaps, services):
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env_vars = {}
    for source in container.get("envFrom", []):
        env_vars.update(configmaps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        env_vars[var["name"]] = var["value"]
    if name == "upstream":
        # Pods have a loopback each; these containers share the host's: the upstream's admin
        # listener moves aside so the api's gets the chart's address.
        env_vars["LOAD_SHED__ADMIN__LISTEN"] = "127.0.0.1:9902"
    argv = [
        "podman",
        "run",
        "-d",
        "--name",
        f"rehearsal-{name}",
        "--network=host",
        *security_flags(container.get("securityContext", {}), pod.get("securityContext", {})),
        *[f"--add-host={svc}:127.0.0.1" for svc in services],
        *[f"--env={k}={v}" for k, v in env_vars.items()],
    ]
    if "command" in container:
        argv.append(f"--entrypoint={json.dumps(container['command'])}")
    argv += [IMAGE, *container.get("args", [])]
    sh("podman", "rm", "-f", f"rehearsal-{name}", check=False)
    sh(*argv)
    return container, int(pod["terminationGracePeriodSeconds"])


def probe(name, container):
    port = container["ports"][0]["containerPort"]
    for kind in ("livenessProbe", "readinessProbe"):
        path = container[kind]["httpGet"]["path"]
        url = f"http://127.0.0.1:{port}{path}"
        deadline, status = time.time() + 20, None
        while time.time() < deadline:
            try:
                status = get(url, timeout=2)[0]
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        checks.check(status == 200, f"{name}: {kind} GET {path} on port {port} answers 200 (got {status})")


def stop_container(name, grace):
    began = time.time()
    sh("podman", "kill", "--signal=TERM", f"rehearsal-{name}")
    r = sh("podman", "wait", f"rehearsal-{name}", timeout=grace + 30, check=False)
    took = time.time() - began
    code = r.stdout.strip()
    checks.check(
        code == "0" and took <= grace,
        f"{name}: SIGTERM → exit {code} after {took:.1f} s (terminationGracePeriodSeconds {grace})",
    )


def main():
    if os.geteuid() != 0:
        sys.exit("run as root (podman stores images under /var/lib/containers)")
    builder, runtime = from_images()
    work = Path(tempfile.mkdtemp(prefix="load-shed-image-"))
    containers = []
    try:
        for tag, make in ((builder, builder_standin), (runtime, runtime_standin)):
            if exists(tag):
                print(f"  stand-in {tag}: present", flush=True)
            else:
                make(tag, work)

        began = time.time()
        r = sh(
            "podman",
            "build",
            "--pull=never",
            "--network=host",
            "-t",
            IMAGE,
            "-f",
            ROOT / "Dockerfile",
            ROOT,
            timeout=2400,
            check=False,
        )
        took = time.time() - began
        if not checks.check(
            r.returncode == 0,
            f"podman build of the unmodified Dockerfile ({took:.0f} s)"
            + ("" if r.returncode == 0 else f"\n{(r.stderr or r.stdout)[-3000:]}"),
        ):
            checks.finish("image rehearsal")
        size = int(sh("podman", "image", "inspect", "--format", "{{.Size}}", IMAGE).stdout.strip())
        checks.check(size <= 40 * 1024 * 1024, f"image size {size / 1e6:.1f} MB (target <= 40 MB)")
        user = sh("podman", "image", "inspect", "--format", "{{.Config.User}}", IMAGE).stdout.strip()
        checks.check(user == "65532:65532", f"the image runs as 65532:65532 (got {user!r})")

        deployments, configmaps, services, test_pod = render()
        for name in ("upstream", "api"):
            container, grace = run_container(name, deployments[name], configmaps, services)
            containers.append((name, grace))
            probe(name, container)

        # helm test: the test pod's args, its Service URL pointed at the Service's target port.
        (check_container,) = test_pod["spec"]["containers"]
        args = list(check_container["args"])
        for svc_name, svc in services.items():
            port = svc["spec"]["ports"][0]
            target = port["targetPort"]
            if not isinstance(target, int):
                target = next(
                    d
                    for d in deployments.values()
                    if d["spec"]["selector"]["matchLabels"].items() <= svc["spec"]["selector"].items()
                )["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]
            args = [a.replace(f"http://{svc_name}:{port['port']}", f"http://127.0.0.1:{target}") for a in args]
        r = sh(
            "podman",
            "run",
            "--rm",
            "--network=host",
            *security_flags(check_container.get("securityContext", {}), test_pod["spec"].get("securityContext", {})),
            IMAGE,
            *args,
            check=False,
            timeout=60,
        )
        checks.check(
            r.returncode == 0,
            f"helm test's command `{' '.join(check_container['args'])}` exits 0: "
            + " | ".join((r.stdout + r.stderr).strip().splitlines()[-3:]),
        )

        # The kill switch as `kubectl exec deploy/<release>-load-shed-api -- /load-shed-api admin ...`
        # runs it: the binary in the distroless image (no shell, no curl) talks to its admin listener.
        api_port = deployments["api"]["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]

        def admin(*args):
            return sh("podman", "exec", "rehearsal-api", "/load-shed-api", "admin", *args, check=False, timeout=30)

        r = admin("breaker", "force-open", "--for", "5m")
        checks.check(
            r.returncode == 0 and "force_open" in r.stdout,
            f"podman exec rehearsal-api /load-shed-api admin breaker force-open --for 5m exits {r.returncode}: "
            + (r.stdout + r.stderr).strip()[-200:],
        )
        status = get(f"http://127.0.0.1:{api_port}/client", timeout=5)[0]
        checks.check(status == 503, f"held open, /client answers 503 (got {status})")
        r = admin("breaker", "auto")
        status = get(f"http://127.0.0.1:{api_port}/client", timeout=5)[0]
        checks.check(
            r.returncode == 0 and status == 200,
            f"admin breaker auto exits {r.returncode}, then /client answers 200 (got {status})",
        )

        # The api first, as Kubernetes would in any order; each must drain and exit 0 in time.
        for name, grace in reversed(containers):
            stop_container(name, grace)
    except (RuntimeError, subprocess.TimeoutExpired, KeyError, StopIteration) as e:
        checks.fail(f"rehearsal: {e}")
    finally:
        for name, _ in containers:
            sh("podman", "rm", "-f", f"rehearsal-{name}", check=False)
        shutil.rmtree(work, ignore_errors=True)
    checks.finish("image rehearsal")


if __name__ == "__main__":
    main()
