"""Pytest fixtures for a real cluster and a real gitferry operator.

`cluster` is the local control plane that this project builds and starts itself
(tests/harness/controlplane.py), whether or not Docker runs, unless the
environment asks for another one (`choose_cluster`):

- GITFERRY_TEST_KUBECONFIG=<path>: the cluster that kubeconfig names, as it is.
- GITFERRY_TEST_CLUSTER=kind: a new kind cluster, deleted at the end. kind is
  built from the Go module proxy (hack/kind/build.sh, cached outside the repo);
  the node image is GITFERRY_KIND_NODE_IMAGE or the newest kindest/node image
  already present in the local Docker. Nothing is ever pulled.
- GITFERRY_TEST_CLUSTER=local: the default, said explicitly.

Anything that cannot be honoured (an unknown value, both variables at once, no
Docker, no node image, a failed build or create) ends the run with one line
saying what is missing and how to fix it, never with a silent fallback.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.harness.controlplane import REPO, ControlPlane, write_kubeconfig

__all__ = [
    "Cluster",
    "Operator",
    "cluster",
    "deleted_afterwards",
    "gitferry_installed",
    "kwok_pods",
    "namespace",
    "operator",
    "operator_factory",
    "wait_for",
]

KUBECTL = str(Path(sys.executable).parent / "kubectl")
SA_NAMESPACE = "gitferry-system"
SA_NAME = "gitferry"


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60, interval: float = 0.25) -> Any:
    """Poll `fn` until it returns something truthy; fail naming `what` and the last value."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        try:
            last = fn()
        except Exception as e:  # not there yet
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@contextlib.contextmanager
def deleted_afterwards(cluster: Cluster, kind: str, name: str) -> Iterator[None]:
    """A cluster-scoped object a test made outlives its namespace: delete it at the end."""
    try:
        yield
    finally:
        cluster.kubectl("delete", kind, name, "--wait=false", check=False)


@dataclass
class Cluster:
    kubeconfig: Path
    control_plane: ControlPlane | None = None  # set when we started it: audit log available

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        proc = subprocess.run(
            [KUBECTL, *args], input=input, capture_output=True, text=True, env=env, timeout=120
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json", "--show-managed-fields"] + (
            ["-n", namespace] if namespace else []
        )
        proc = self.kubectl(*args, check=False)
        if proc.returncode != 0:
            if "NotFound" in proc.stderr or "not found" in proc.stderr:
                return None
            raise AssertionError(proc.stderr)
        return json.loads(proc.stdout)  # type: ignore[no-any-return]

    def apply(self, manifest: dict[str, Any] | str) -> None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        self.kubectl("apply", "-f", "-", input=text)

    def has_audit_log(self) -> bool:
        """Whether the API server's audit log can be read (the local control plane).
        Elsewhere the audit-based checks are left out — except under CI, which always
        runs on the local control plane: there a missing log fails the test."""
        if self.control_plane is None and os.environ.get("CI") == "true":
            pytest.fail("CI runs on the local control plane, whose audit log is missing here")
        return self.control_plane is not None

    def audit_requests(self, user: str, since: float) -> list[dict[str, Any]]:
        """Every request `user` made since `since` (time.time()) but watches (long
        lived, opened once): what a reconcile asked the API server."""
        assert self.control_plane is not None, (
            "the audit log exists only on the local control plane"
        )
        out = []
        for ev in self.control_plane.audit_events():
            if ev.get("stage") != "ResponseComplete" or ev.get("verb") == "watch":
                continue
            if (ev.get("user") or {}).get("username") != user:  # type: ignore[union-attr]
                continue
            if _epoch(str(ev.get("requestReceivedTimestamp", ""))) < since:
                continue
            out.append(ev)
        return out

    def audit_writes(self, user: str, since: float) -> list[dict[str, Any]]:
        """Writes (not dry-run) that `user` made since `since` (time.time())."""
        assert self.control_plane is not None, (
            "the audit log exists only on the local control plane"
        )
        out = []
        for ev in self.control_plane.audit_events():
            if ev.get("stage") != "ResponseComplete":
                continue
            if (ev.get("user") or {}).get("username") != user:  # type: ignore[union-attr]
                continue
            if ev.get("verb") not in ("create", "update", "patch", "delete", "deletecollection"):
                continue
            if "dryRun=" in str(ev.get("requestURI", "")):
                continue
            stamp = str(ev.get("requestReceivedTimestamp", ""))
            if _epoch(stamp) < since:
                continue
            out.append(ev)
        return out


def _epoch(stamp: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


# --- which cluster -----------------------------------------------------------
KUBECONFIG_ENV = "GITFERRY_TEST_KUBECONFIG"
CLUSTER_ENV = "GITFERRY_TEST_CLUSTER"
NODE_IMAGE_ENV = "GITFERRY_KIND_NODE_IMAGE"
KIND_BUILD_SCRIPT = REPO / "hack" / "kind" / "build.sh"
NODE_IMAGE_REPOSITORY = "kindest/node"


@dataclass(frozen=True)
class LocalControlPlane:
    """The control plane this project builds (the default)."""


@dataclass(frozen=True)
class GivenKubeconfig:
    """An existing cluster, used as it is."""

    path: Path


@dataclass(frozen=True)
class Kind:
    """A kind cluster created for this run; node_image None = one present locally."""

    node_image: str | None = None


ClusterChoice = LocalControlPlane | GivenKubeconfig | Kind


class ClusterChoiceError(Exception):
    """The environment asks for a cluster this run cannot provide; one line."""


def choose_cluster(env: Mapping[str, str]) -> ClusterChoice:
    """The cluster the environment asks for. An empty variable counts as unset."""
    kubeconfig = env.get(KUBECONFIG_ENV, "").strip()
    wanted = env.get(CLUSTER_ENV, "").strip()
    node_image = env.get(NODE_IMAGE_ENV, "").strip()
    if kubeconfig and wanted:
        raise ClusterChoiceError(
            f"{KUBECONFIG_ENV} and {CLUSTER_ENV}={wanted} are both set; set only one of them"
        )
    if node_image and wanted != "kind":
        raise ClusterChoiceError(
            f"{NODE_IMAGE_ENV} is set but {CLUSTER_ENV} is not kind; "
            f"set {CLUSTER_ENV}=kind to use it, or unset {NODE_IMAGE_ENV}"
        )
    if kubeconfig:
        return GivenKubeconfig(Path(kubeconfig).expanduser())
    if wanted in ("", "local"):
        return LocalControlPlane()
    if wanted == "kind":
        return Kind(node_image or None)
    raise ClusterChoiceError(
        f"{CLUSTER_ENV}={wanted!r} is not a cluster this suite knows; "
        f"use {CLUSTER_ENV}=kind, {CLUSTER_ENV}=local (the default), "
        f"or {KUBECONFIG_ENV}=<path> for an existing cluster"
    )


def _version_key(image: str) -> tuple[int, ...]:
    tag = image.rpartition(":")[2]
    return tuple(int(n) for n in re.findall(r"\d+", tag)) if tag.startswith("v") else ()


def pick_node_image(listed: Iterable[str]) -> str | None:
    """The newest tagged `kindest/node:<tag>` among `docker image ls` lines, if any."""
    images = [
        line.strip()
        for line in listed
        if line.strip().startswith(f"{NODE_IMAGE_REPOSITORY}:")
        and not line.strip().endswith(":<none>")
    ]
    return max(images, key=_version_key, default=None)


def _kind_version() -> str:
    found = re.search(r"^KIND_VERSION=(\S+)$", KIND_BUILD_SCRIPT.read_text(), re.M)
    return found.group(1) if found else "(unknown)"


def _last_line(text: str) -> str:
    """The line of a command's output that says why it failed."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for prefix in ("Command Output:", "ERROR:"):  # kind names the failing step so
        found = next((line for line in lines if line.startswith(prefix)), None)
        if found:
            return found.removeprefix(prefix).strip()[:300]
    return lines[-1][:300] if lines else "no output"


def _run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """argv's outcome, a timeout included; never raises for a failed command."""
    # kind would fall back to podman when it finds no Docker; the checks here are Docker's.
    env = {**os.environ, "KIND_EXPERIMENTAL_PROVIDER": "docker"}
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(argv, 124, "", f"timed out after {timeout:.0f}s")


def _kind_node_image(choice: Kind) -> str:
    """The node image to boot, after checking that Docker runs and holds it."""
    if not shutil.which("docker"):
        raise ClusterChoiceError(
            f"{CLUSTER_ENV}=kind needs Docker and `docker` is not installed; install it, "
            f"or unset {CLUSTER_ENV} to use the local control plane (no Docker needed)"
        )
    info = _run(["docker", "info", "--format", "{{.ServerVersion}}"])
    if info.returncode != 0:
        raise ClusterChoiceError(
            f"{CLUSTER_ENV}=kind needs a running Docker daemon (`docker info`: "
            f"{_last_line(info.stderr)}); start it, or unset {CLUSTER_ENV} to use the "
            "local control plane"
        )
    if choice.node_image:
        if _run(["docker", "image", "inspect", choice.node_image]).returncode != 0:
            raise ClusterChoiceError(
                f"{NODE_IMAGE_ENV}={choice.node_image} is not in the local Docker and "
                f"images are never pulled; `docker pull` or `docker load` it first"
            )
        return choice.node_image
    listed = _run(
        ["docker", "image", "ls", NODE_IMAGE_REPOSITORY, "--format", "{{.Repository}}:{{.Tag}}"]
    )
    image = pick_node_image(listed.stdout.splitlines()) if listed.returncode == 0 else None
    if image is None:
        raise ClusterChoiceError(
            f"{CLUSTER_ENV}=kind needs a {NODE_IMAGE_REPOSITORY} image in the local Docker and "
            f"there is none (images are never pulled); `docker pull` or `docker load` one "
            f"that kind {_kind_version()} supports, or set {NODE_IMAGE_ENV}=<image>"
        )
    return image


def _kind_binary() -> str:
    """hack/kind/build.sh: the cached kind binary, built from the Go module proxy if missing."""
    build = _run(["bash", str(KIND_BUILD_SCRIPT)], timeout=900)
    if build.returncode != 0:
        raise ClusterChoiceError(
            f"building kind {_kind_version()} from the Go module proxy failed "
            f"({_last_line(build.stderr)}); run `bash hack/kind/build.sh` to see why"
        )
    return build.stdout.strip().splitlines()[-1]


@dataclass
class KindCluster:
    """A kind cluster this run created, and only that one: it has a fresh name."""

    binary: str
    name: str
    kubeconfig: Path

    @classmethod
    def create(cls, choice: Kind, workdir: Path) -> KindCluster:
        image = _kind_node_image(choice)
        kind = cls(_kind_binary(), f"gitferry-test-{secrets.token_hex(3)}", workdir / "kubeconfig")
        created = _run(
            [
                kind.binary, "create", "cluster", "--name", kind.name, "--image", image,
                "--kubeconfig", str(kind.kubeconfig), "--wait", "180s",
            ],
            timeout=600,
        )  # fmt: skip
        if created.returncode != 0:
            kind.delete()  # kind cleans up after itself; this makes sure
            log = workdir / "kind-create.log"
            log.write_text(created.stdout + created.stderr)
            raise ClusterChoiceError(
                f"`kind create cluster --image {image}` failed "
                f"({_last_line(created.stderr)}; all of it in {log}); fix that, or unset "
                f"{CLUSTER_ENV} to use the local control plane"
            )
        return kind

    def delete(self) -> None:
        deleted = _run([self.binary, "delete", "cluster", "--name", self.name], timeout=300)
        if deleted.returncode != 0:
            raise AssertionError(
                f"kind cluster {self.name} was not deleted ({_last_line(deleted.stderr)}); "
                f"`kind delete cluster --name {self.name}` removes it"
            )


def _start(
    choice: ClusterChoice, tmp: pytest.TempPathFactory
) -> tuple[Cluster, Callable[[], None]]:
    """The chosen cluster, running, and what stops it."""
    if isinstance(choice, GivenKubeconfig):
        if not choice.path.is_file():
            raise ClusterChoiceError(f"{KUBECONFIG_ENV}={choice.path}: no such file")
        return Cluster(choice.path), lambda: None
    if isinstance(choice, Kind):
        kind = KindCluster.create(choice, tmp.mktemp("kind"))
        return Cluster(kind.kubeconfig), kind.delete
    cp = ControlPlane.start(tmp.mktemp("controlplane"))
    return Cluster(cp.kubeconfig, control_plane=cp), cp.stop


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    try:
        started, stop = _start(choose_cluster(os.environ), tmp_path_factory)
    except ClusterChoiceError as e:
        # One line for the whole run, not a traceback repeated for every test.
        pytest.exit(str(e), returncode=pytest.ExitCode.USAGE_ERROR)
    try:
        yield started
    finally:
        stop()


@pytest.fixture(scope="session")
def gitferry_installed(cluster: Cluster) -> Cluster:
    """`kubectl apply -k manifests/`, the way users install gitferry."""
    cluster.kubectl("apply", "-k", str(REPO / "manifests"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "crd/gitrepositorysyncs.gitferry.dev",
    )  # fmt: skip
    # The tests run the operator as a local process under the install's
    # ServiceAccount; the in-cluster Deployment must not run a second one.
    cluster.kubectl("scale", "-n", SA_NAMESPACE, "deployment/gitferry", "--replicas=0")
    return cluster


@dataclass
class Operator:
    """A gitferry process started against the cluster as the manifests' ServiceAccount."""

    cluster: Cluster
    workdir: Path
    namespace: str
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    user: str = f"system:serviceaccount:{SA_NAMESPACE}:{SA_NAME}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "operator.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> Operator:
        token = self.cluster.kubectl(
            "create", "token", SA_NAME, "-n", SA_NAMESPACE, "--duration=24h"
        ).stdout.strip()
        cfg = json.loads(
            self.cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout
        )
        c = cfg["clusters"][0]["cluster"]
        kubeconfig = self.workdir / "operator.kubeconfig"
        ca = self.workdir / "ca.crt"
        if "certificate-authority" in c:
            shutil.copy(c["certificate-authority"], ca)
        else:
            import base64

            ca.write_bytes(base64.b64decode(c["certificate-authority-data"]))
        write_kubeconfig(kubeconfig, c["server"], ca, token, "gitferry")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.workdir),
            "KUBECONFIG": str(kubeconfig),
            "GITFERRY_ALLOW_FILE_URLS": "true",
            "GITFERRY_CACHE_DIR": str(self.workdir / "cache"),
            # Operators run side by side (and beside other runs): never the default
            # port; the start line names the one the system picked (metrics_addr=).
            "GITFERRY_METRICS_ADDR": "127.0.0.1:0",
            "PYTHONUNBUFFERED": "1",
            # This checkout's code, whatever else the venv has installed.
            "PYTHONPATH": str(REPO / "operator"),
            **self.env,
        }
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gitferry", "run", "--namespace", self.namespace],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=self.workdir,
        )
        log.close()
        wait_for("the operator to start", lambda: "action=start" in self.log() or self._died(), 60)
        assert self.proc.poll() is None, f"gitferry exited:\n{self.log()[-4000:]}"
        return self

    def _died(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def operator_factory(
    gitferry_installed: Cluster, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Operator]]:
    """Start gitferry processes for this test: `operator_factory(namespace, **env)`.
    Each watches only the given namespace, so tests never share an operator; the
    logs of every operator a test started are attached to its report on failure."""
    started: list[Operator] = []
    request.node.gitferry_operators = started

    def make(namespace: str, **env: str) -> Operator:
        d = tmp_path / f"operator-{len(started)}"
        d.mkdir()
        op = Operator(gitferry_installed, d, namespace=namespace, env=env)
        started.append(op)
        return op.start()

    yield make
    for op in started:
        op.stop()


@pytest.fixture
def operator(operator_factory: Callable[..., Operator], namespace: str) -> Operator:
    """gitferry watching this test's namespace."""
    return operator_factory(namespace)


@pytest.fixture
def kwok_pods(cluster: Cluster) -> None:
    """Pods run on kwok, which only the local control plane has: a real kubelet
    would try to pull the images (registry.invalid) and knows no
    `gitferry.dev/test-pod` annotation. CI always runs there: a missing kwok fails."""
    if cluster.control_plane is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true: Pods run on kwok only on the local control plane")
        pytest.skip("Pods run on kwok only on the local control plane")


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", name)
    yield name
    # The test's operator is gone by now: drop the finalizers of its syncs so the
    # namespace can finish deleting (their objects go with the namespace anyway).
    syncs = cluster.kubectl("get", "grs", "-n", name, "-o", "name", check=False).stdout.split()
    for sync in syncs:
        cluster.kubectl(
            "patch", sync, "-n", name, "--type=merge", "-p", '{"metadata":{"finalizers":null}}',
            check=False,
        )  # fmt: skip
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
