"""The operator image, proven: built from operator/Dockerfile on a base bootstrapped
from Debian packages (no registry needed), it runs exactly as manifests/deployment.yaml
says — its command and env, as uid 65532 on a read-only root filesystem, with its
emptyDir volumes and the install's ServiceAccount token mounted where Kubernetes
mounts it — answers its liveness and readiness probes, and syncs a private repository over HTTPS
with a CA from the sync's Secret, rendering a kustomization with the image's kubectl.

Docker is needed: under CI a missing Docker fails the test; elsewhere it is skipped,
saying why (`make prereqs` installs and starts Docker)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.harness.cluster_fixtures import SA_NAME, SA_NAMESPACE, Cluster, wait_for
from tests.harness.controlplane import REPO
from tests.harness.git_fixtures import GIT_USERNAME, RepoFactory
from tests.harness.gitserver import HttpGitServer
from tests.harness.manifests import config_map
from tests.harness.pki import CA
from tests.harness.syncs import create_git_auth_secret, create_sync, labels_of, wait_condition

pytestmark = pytest.mark.e2e

DEPLOYMENT = REPO / "manifests" / "deployment.yaml"
BUILD_SCRIPT = REPO / "hack" / "image" / "build.sh"
# Where the kubelet mounts a Pod's ServiceAccount token, and the CA and namespace
# beside it; the kubernetes client's in-cluster configuration reads them there.
SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"

# What this test knows how to turn into `docker run` flags. Anything else in the
# Deployment fails the test, naming the field: the image is never run differently
# from what the manifest says without anybody noticing.
POD_FIELDS = {"serviceAccountName", "securityContext", "containers", "volumes"}
POD_SECURITY = {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "seccompProfile"}
CONTAINER_FIELDS = {
    "name", "image", "imagePullPolicy", "command", "args", "env", "ports",
    "livenessProbe", "readinessProbe", "resources", "securityContext", "volumeMounts",
}  # fmt: skip
CONTAINER_SECURITY = {
    "runAsNonRoot", "runAsUser", "runAsGroup", "readOnlyRootFilesystem",
    "allowPrivilegeEscalation", "capabilities", "seccompProfile",
}  # fmt: skip
_QUANTITY = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


# --- Docker ---------------------------------------------------------------------------


def docker(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} … failed: {proc.stderr.strip()[-2000:]}")
    return proc


def unavailable(why: str, fix: str = "`make test-prereqs` installs and starts Docker") -> None:
    """Under CI the image must be proven: fail. Elsewhere, skip and say why."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI proves the operator image and {why}; {fix}", pytrace=False)
    pytest.skip(f"{why}; {fix}")


@pytest.fixture(scope="session")
def docker_daemon() -> None:
    if shutil.which("docker") is None:
        unavailable("docker is not installed")
    server = docker("version", "--format", "{{.Server.Version}}", check=False, timeout=30)
    if server.returncode != 0:
        last = (server.stderr.strip().splitlines() or ["no output"])[-1]
        unavailable(f"the Docker daemon does not answer ({last})")
    # seccompProfile RuntimeDefault is Docker's default profile: it must be there.
    security = docker("info", "--format", "{{json .SecurityOptions}}", timeout=30).stdout
    assert "seccomp" in security, f"Docker runs without seccomp: {security}"


# --- what the Deployment says ---------------------------------------------------------


def quantity(value: str | int) -> float:
    """A Kubernetes quantity (`1Gi`, `500m`, `2`) as a number."""
    found = re.fullmatch(r"([0-9.]+)(m|k|M|G|Ki|Mi|Gi)?", str(value))
    assert found, f"quantity {value!r} is not one this test reads"
    number, suffix = float(found.group(1)), found.group(2) or ""
    return number / 1000 if suffix == "m" else number * _QUANTITY[suffix]


def unsupported(where: str, obj: dict[str, Any], known: set[str]) -> None:
    extra = sorted(set(obj) - known)
    assert not extra, (
        f"manifests/deployment.yaml sets {where}.{extra}, which test_image.py does not "
        "translate to `docker run`: teach it, so that the image runs as the manifest says"
    )


@dataclass
class PodRun:
    """The Deployment's one container as `docker run` arguments (host networking)."""

    image: str
    namespace: str
    service_account: str
    uid: int
    gid: int
    fs_group: int | None
    flags: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)  # after the image name
    env: dict[str, str] = field(default_factory=dict)
    empty_dirs: dict[str, str] = field(default_factory=dict)  # mount path -> volume name
    liveness: tuple[int, str] | None = None  # port, path
    readiness: tuple[int, str] | None = None  # port, path


def read_deployment(path: Path = DEPLOYMENT) -> PodRun:
    deployment = yaml.safe_load(path.read_text())
    assert deployment["kind"] == "Deployment"
    pod = deployment["spec"]["template"]["spec"]
    unsupported("spec.template.spec", pod, POD_FIELDS)
    (c,) = pod["containers"]
    unsupported("containers[0]", c, CONTAINER_FIELDS)
    psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}
    unsupported("spec.template.spec.securityContext", psc, POD_SECURITY)
    unsupported("containers[0].securityContext", csc, CONTAINER_SECURITY)
    sc = {**psc, **csc}  # the container's settings win, as in Kubernetes

    uid, gid = int(sc["runAsUser"]), int(sc.get("runAsGroup", sc["runAsUser"]))
    if sc.get("runAsNonRoot"):
        assert uid != 0, "runAsNonRoot with runAsUser 0 would never start"
    run = PodRun(
        image=c["image"],
        namespace=deployment["metadata"].get("namespace", "default"),
        service_account=pod.get("serviceAccountName", "default"),
        uid=uid,
        gid=gid,
        fs_group=psc.get("fsGroup"),
    )
    run.flags += ["--user", f"{uid}:{gid}"]
    if run.fs_group is not None:
        run.flags += ["--group-add", str(run.fs_group)]
    if sc.get("readOnlyRootFilesystem"):
        run.flags.append("--read-only")
    if sc.get("allowPrivilegeEscalation") is False:
        run.flags += ["--security-opt", "no-new-privileges"]
    caps = sc.get("capabilities") or {}
    unsupported("securityContext.capabilities", caps, {"add", "drop"})
    run.flags += [f"--cap-drop={cap}" for cap in caps.get("drop", [])]
    run.flags += [f"--cap-add={cap}" for cap in caps.get("add", [])]
    seccomp = (sc.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    assert seccomp == "RuntimeDefault", f"seccompProfile {seccomp} is not Docker's default"

    # Limits bound the container; requests only inform the scheduler.
    limits = (c.get("resources") or {}).get("limits") or {}
    unsupported("resources.limits", limits, {"memory", "cpu"})
    if "memory" in limits:
        run.flags += ["--memory", str(int(quantity(limits["memory"])))]
    if "cpu" in limits:
        run.flags += ["--cpus", str(quantity(limits["cpu"]))]

    policy = c.get("imagePullPolicy", "IfNotPresent")
    assert policy in ("IfNotPresent", "Never"), f"imagePullPolicy {policy}: nothing is pulled"
    run.flags += ["--pull", "never"]

    for var in c.get("env") or []:
        unsupported(f"env[{var['name']}]", var, {"name", "value"})
        run.env[var["name"]] = var.get("value", "")

    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for mount in c.get("volumeMounts") or []:
        unsupported(f"volumeMounts[{mount['name']}]", mount, {"name", "mountPath"})
        volume = volumes[mount["name"]]
        unsupported(f"volumes[{mount['name']}]", volume, {"name", "emptyDir"})
        run.empty_dirs[mount["mountPath"]] = mount["name"]

    # Kubernetes' command replaces the image's ENTRYPOINT (and, without args, its CMD).
    if c.get("command"):
        run.flags += ["--entrypoint", c["command"][0]]
        run.command = [*c["command"][1:], *(c.get("args") or [])]
    else:
        run.command = list(c.get("args") or [])

    ports = {p["name"]: int(p["containerPort"]) for p in c.get("ports") or [] if "name" in p}
    for field_name in ("livenessProbe", "readinessProbe"):
        probe = c.get(field_name)
        if probe:
            port = probe["httpGet"]["port"]
            where = (ports[port] if isinstance(port, str) else int(port), probe["httpGet"]["path"])
            if field_name == "livenessProbe":
                run.liveness = where
            else:
                run.readiness = where
    return run


# --- the image, and the container -----------------------------------------------------


@pytest.fixture(scope="session")
def operator_image(docker_daemon: None) -> str:
    """hack/image/build.sh (what `make image` runs): the bootstrapped Debian base
    (cached), then operator/Dockerfile with --build-arg BASE=<it>, tagged as the
    Deployment's image."""
    tag = read_deployment().image
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("BASE", None)  # the base from Debian packages, whatever the shell says
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT), tag], capture_output=True, text=True, env=env, timeout=1800
    )
    assert proc.returncode == 0, f"building {tag} failed:\n{proc.stderr[-6000:]}"
    assert proc.stdout.strip().splitlines()[-1] == tag
    return tag


def api_server(cluster: Cluster) -> tuple[str, int, bytes]:
    """Host, port and CA certificate of the API server the tests' kubeconfig names."""
    cfg = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    c = cfg["clusters"][0]["cluster"]
    url = urlsplit(c["server"])
    assert url.hostname and url.port, f"unexpected API server URL {c['server']}"
    if "certificate-authority-data" in c:
        ca = base64.b64decode(c["certificate-authority-data"])
    else:
        ca = Path(c["certificate-authority"]).read_bytes()
    return url.hostname, url.port, ca


def port_is_free(port: int) -> bool:
    """Whether a server could listen on `port` on all addresses. SO_REUSEADDR, as
    aiohttp (the operator's probe server) sets it: connections of an earlier run
    in TIME_WAIT do not count, a listener does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def http_status(url: str) -> int | str:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code
    except OSError as e:
        return f"{type(e).__name__}: {e}"


@dataclass
class Container:
    """One `docker run` of the image; `log()` is attached to a failed test's report."""

    id: str = ""

    def log(self) -> str:
        if not self.id:
            return ""
        proc = docker("logs", self.id, check=False)
        return proc.stdout + proc.stderr

    def inspect(self) -> dict[str, Any]:
        return json.loads(docker("inspect", self.id).stdout)[0]  # type: ignore[no-any-return]

    def running(self) -> bool:
        return bool(self.inspect()["State"]["Running"])


@pytest.fixture
def container(docker_daemon: None, request: pytest.FixtureRequest) -> Iterator[Container]:
    """Removed by id at the end, whatever happened; nothing of it is left behind."""
    c = Container()
    request.node.gitferry_operators = [c]  # conftest attaches its log on failure
    yield c
    if c.id:
        docker("rm", "--force", c.id, check=False)
        left = docker("ps", "--all", "--quiet", "--no-trunc", "--filter", f"id={c.id}").stdout
        assert not left.strip(), f"container {c.id} was left behind"


def other_live_syncs(cluster: Cluster, namespace: str) -> list[str]:
    items = json.loads(cluster.kubectl("get", "grs", "-A", "-o", "json").stdout)["items"]
    return [
        f"{s['metadata']['namespace']}/{s['metadata']['name']}"
        for s in items
        if s["metadata"]["namespace"] != namespace and not s["metadata"].get("deletionTimestamp")
    ]


# --- the story ------------------------------------------------------------------------


@pytest.mark.timeout(1800)  # a cold build bootstraps Debian first
def test_the_image_runs_as_the_deployment_says_and_syncs_over_https(
    operator_image: str,
    container: Container,
    gitferry_installed: Cluster,
    namespace: str,
    repo_factory: RepoFactory,
    https_git_server: HttpGitServer,
    test_ca: CA,
    tmp_path: Path,
) -> None:
    cluster = gitferry_installed
    pod = read_deployment()
    assert pod.image == operator_image
    image = json.loads(docker("image", "inspect", operator_image).stdout)[0]["Config"]
    assert image["User"] == f"{pod.uid}:{pod.gid}", "the image itself runs as the non-root user"

    # The container shares the host's network: the API server and the git server
    # listen on 127.0.0.1 only, and their certificates name 127.0.0.1. So the
    # probes' ports are the host's too. They must be free before the container
    # starts (and free again once it is gone), so that the 200 on them can only
    # come from the operator in the container.
    assert pod.liveness is not None, "the Deployment has no liveness probe to prove"
    assert pod.readiness is not None, "the Deployment has no readiness probe to prove"
    probe_port, probe_path = pod.liveness
    for which, (port, _) in (("liveness", pod.liveness), ("readiness", pod.readiness)):
        if not port_is_free(port):
            unavailable(
                f"port {port} (the Deployment's {which} port) is taken on this host",
                "stop what listens there: the container shares the host's network",
            )

    # The install's ServiceAccount, mounted as the kubelet mounts it.
    sa_dir = tmp_path / "serviceaccount"
    sa_dir.mkdir()
    host, port, ca = api_server(cluster)
    token = cluster.kubectl(
        "create", "token", pod.service_account, "-n", pod.namespace, "--duration=1h"
    ).stdout.strip()
    for name, content in {
        "token": token.encode(),
        "ca.crt": ca,
        "namespace": pod.namespace.encode(),
    }.items():
        (sa_dir / name).write_bytes(content)
        (sa_dir / name).chmod(0o644)
    sa_dir.chmod(0o755)
    assert (pod.namespace, pod.service_account) == (SA_NAMESPACE, SA_NAME)

    # emptyDir volumes: fresh directories, world-writable and owned by the fsGroup
    # with the setgid bit, as the kubelet makes them.
    volumes = []
    for path, name in pod.empty_dirs.items():
        d = tmp_path / "volumes" / name
        d.mkdir(parents=True)
        if pod.fs_group is not None and os.geteuid() == 0:
            os.chown(d, -1, pod.fs_group)
        d.chmod(0o2777 if pod.fs_group is not None else 0o777)
        volumes += ["--volume", f"{d}:{path}"]

    # The kubelet's additions: the API server's address, as every Pod gets it.
    env = {**pod.env, "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port)}
    assert "GITFERRY_ALLOW_FILE_URLS" not in env, "the image must not need file:// URLs"
    # A cluster-wide operator would also take up syncs that earlier tests left
    # behind; wait until the namespace controller has removed them. Its deletion
    # of a test namespace can lag (discovery of a CRD another test just deleted):
    # what is still there after a minute belongs to finished tests, and goes.
    with contextlib.suppress(AssertionError):
        wait_for(
            "no live syncs outside this test's namespace",
            lambda: not other_live_syncs(cluster, namespace),
        )
    for leftover in other_live_syncs(cluster, namespace):
        ns, name = leftover.split("/")
        print(f"removing {leftover}, left behind by an earlier test")
        cluster.kubectl(
            "patch", "grs", name, "-n", ns, "--type=merge",
            "-p", '{"metadata":{"finalizers":null}}', check=False,
        )  # fmt: skip
        cluster.kubectl("delete", "grs", name, "-n", ns, "--wait=false", check=False)
    assert not other_live_syncs(cluster, namespace)

    started = time.time()
    run = docker(
        "run", "--detach", "--name", f"gitferry-e2e-{secrets.token_hex(4)}", "--network", "host",
        *pod.flags, *volumes, "--volume", f"{sa_dir}:{SA_MOUNT}:ro",
        *[f"--env={k}={v}" for k, v in env.items()],
        operator_image, *pod.command,
    )  # fmt: skip
    container.id = run.stdout.strip()
    wait_for(
        "the operator in the container to start",
        lambda: "action=start" in container.log() or not container.running(),
        120,
    )
    assert container.running(), f"the container exited:\n{container.log()[-4000:]}"

    # Its liveness endpoint answers as the kubelet's probe would ask it.
    probe = f"http://127.0.0.1:{probe_port}{probe_path}"
    wait_for(f"GET {probe} to answer 200", lambda: http_status(probe) == 200, 60)
    ready = "http://127.0.0.1:{}{}".format(*pod.readiness)
    wait_for(f"GET {ready} to answer 200", lambda: http_status(ready) == 200, 60)

    # It runs as the manifest says: its uid, a root filesystem it cannot write.
    assert docker("exec", container.id, "id", "-u").stdout.strip() == str(pod.uid)
    denied = docker("exec", container.id, "touch", "/opt/gitferry/written", check=False)
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr, denied.stderr

    # A private repository over HTTPS, its CA only in the sync's Secret; a
    # kustomization, so that the image's own kubectl renders it.
    repo = repo_factory("from-the-image")
    sha = repo.commit(
        {
            "deploy/kustomization.yaml": "namePrefix: image-\nresources:\n  - cm.yaml\n",
            "deploy/cm.yaml": config_map("settings", "built-by-the-image"),
        },
        "first",
    )
    repo.push()
    create_git_auth_secret(cluster, namespace, https_git_server, ca=test_ca)
    url = https_git_server.url_for(repo.bare)
    create_sync(cluster, "web", namespace, url, path="deploy", secretRef={"name": "git-auth"})

    sync = wait_condition(cluster, "web", namespace, revision_sha=sha, timeout=120)
    assert sync["status"]["lastAppliedRevision"] == f"main@sha1:{sha}"
    cm = cluster.get("configmap", "image-settings", namespace)
    assert cm is not None and cm["data"] == {"v": "built-by-the-image"}
    assert labels_of(cm)["gitferry.dev/sync-name"] == "web"
    assert {r.user for r in https_git_server.log.records if r.status == 200} == {GIT_USERNAME}

    # Written as the ServiceAccount whose token was mounted (the audit log says so
    # where there is one: on the local control plane).
    if cluster.has_audit_log():
        user = f"system:serviceaccount:{SA_NAMESPACE}:{SA_NAME}"
        written = {
            (e["objectRef"].get("resource"), e["objectRef"].get("name"))
            for e in cluster.audit_writes(user, started)
            if (e.get("objectRef") or {}).get("namespace") == namespace
        }
        assert ("configmaps", "image-settings") in written, written

    # Stopped as the kubelet stops a Pod: SIGTERM, then it is gone and so is its port.
    docker("stop", "--time", "30", container.id, timeout=60)
    state = container.inspect()["State"]
    assert state["ExitCode"] == 0, f"exit code {state['ExitCode']}:\n{container.log()[-4000:]}"
    assert http_status(probe) != 200
    assert http_status(ready) != 200
