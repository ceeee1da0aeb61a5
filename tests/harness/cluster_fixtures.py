"""Pytest fixtures for a real cluster and a real gitferry operator.

`cluster` picks, in order: the kubeconfig named by GITFERRY_TEST_KUBECONFIG; kind
through pytest-kind when `docker info` succeeds; else the local control plane
that this project builds and starts itself (tests/harness/controlplane.py).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.harness.controlplane import REPO, ControlPlane, write_kubeconfig

__all__ = [
    "Cluster",
    "Operator",
    "cluster",
    "gitferry_installed",
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


def _docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="session")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    given = os.environ.get("GITFERRY_TEST_KUBECONFIG")
    if given:
        yield Cluster(Path(given))
        return
    if _docker_available():
        from pytest_kind import KindCluster  # type: ignore[import-untyped]

        kind = KindCluster("gitferry-test")
        kind.create()
        try:
            yield Cluster(Path(kind.kubeconfig_path))
        finally:
            kind.delete()
        return
    cp = ControlPlane.start(tmp_path_factory.mktemp("controlplane"))
    try:
        yield Cluster(cp.kubeconfig, control_plane=cp)
    finally:
        cp.stop()


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
            "PYTHONUNBUFFERED": "1",
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
