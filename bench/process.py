"""gitferry as the user runs it: `python -m gitferry run --namespace <ns>` as a
process, under the install's ServiceAccount (the e2e harness's `Operator`), with
its memory and CPU read from /proc and its /metrics on loopback."""

from __future__ import annotations

import os
import re
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from tests.harness.cluster_fixtures import SA_NAMESPACE, Cluster, Operator, wait_for
from tests.harness.controlplane import REPO

from .common import kubectl, say

# The ServiceAccount the operator runs as: its requests in the audit log.
USER = "system:serviceaccount:gitferry-system:gitferry"
_HZ = os.sysconf("SC_CLK_TCK")
# Settings for every operator this run starts (`bench.run --env KEY=VALUE`).
EXTRA_ENV: dict[str, str] = {}


def install(cluster: Cluster) -> None:
    """`kubectl apply -k manifests/` as users install it; the in-cluster Deployment
    is scaled to 0 (the benchmark runs the operator as a local process)."""
    kubectl(cluster.kubeconfig, "apply", "-k", str(REPO / "manifests"))
    kubectl(
        cluster.kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
        "crd/gitrepositorysyncs.gitferry.dev",
    )  # fmt: skip
    kubectl(cluster.kubeconfig, "scale", "-n", SA_NAMESPACE, "deployment/gitferry", "--replicas=0")


@dataclass
class Cpu:
    """CPU seconds of the operator process (its threads) and of the children it
    waited for (git, kubectl kustomize), from /proc/<pid>/stat."""

    own: float
    children: float


class GitferryProcess:
    """One operator process for one namespace; stop() ends it by its pid."""

    def __init__(self, cluster: Cluster, workdir: Path, namespace: str, **env: str) -> None:
        # A fresh directory: the log of an earlier operator there would answer
        # "started?", "which metrics port?" and "which reconciles?" for this one.
        base, n = workdir, 1
        while workdir.exists():
            n += 1
            workdir = base.with_name(f"{base.name}-{n}")
        workdir.mkdir(parents=True)
        self.op = Operator(cluster, workdir, namespace=namespace, env={**EXTRA_ENV, **env})
        self.namespace = namespace

    def start(self) -> GitferryProcess:
        self.op.start()
        say(f"  gitferry started for namespace {self.namespace} (pid {self.pid})")
        return self

    def stop(self) -> None:
        self.op.stop()

    @property
    def pid(self) -> int:
        assert self.op.proc is not None
        return self.op.proc.pid

    def log(self) -> str:
        return self.op.log()

    def alive(self) -> None:
        if self.op.proc is None or self.op.proc.poll() is not None:
            raise RuntimeError(f"gitferry exited:\n{self.log()[-3000:]}")

    # --- /proc ---------------------------------------------------------------------
    def _status(self, key: str) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB → MiB
        raise RuntimeError(f"no {key} in /proc/{self.pid}/status")

    def peak_rss_mib(self) -> float:
        """VmHWM: the largest resident set the process had so far."""
        return self._status("VmHWM")

    def rss_mib(self) -> float:
        return self._status("VmRSS")

    def cpu(self) -> Cpu:
        raw = Path(f"/proc/{self.pid}/stat").read_text()
        f = raw[raw.rindex(")") + 2 :].split()
        # fields after the command: utime 11, stime 12, cutime 13, cstime 14
        return Cpu((int(f[11]) + int(f[12])) / _HZ, (int(f[13]) + int(f[14])) / _HZ)

    # --- /metrics ------------------------------------------------------------------
    @property
    def metrics_url(self) -> str:
        found = re.search(r"metrics_addr=(\S+)", self.log())
        if not found:
            raise RuntimeError("the operator's start line names no metrics_addr")
        return f"http://{found.group(1)}/metrics"

    def metrics_text(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as r:
            return str(r.read().decode())

    def metrics(self) -> dict[str, float]:
        """Every sample on /metrics: `name{label="v",…}` → value (labels sorted)."""
        text = self.metrics_text()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out

    def git_requests(self) -> dict[str, float]:
        """gitferry_git_requests_total by operation (ls-remote, fetch), all outcomes."""
        out: dict[str, float] = {}
        for k, v in self.metrics().items():
            if k.startswith("gitferry_git_requests_total{"):
                op = re.search(r'operation="([^"]+)"', k)
                if op:
                    out[op.group(1)] = out.get(op.group(1), 0) + v
        return out

    # --- the log -------------------------------------------------------------------
    def reconcile_lines(self, name: str | None = None) -> list[str]:
        """The `action=reconcile result=ok` lines (of sync `name`, if given)."""
        sync = f"sync={self.namespace}/{name} " if name else ""
        return [
            line
            for line in self.log().splitlines()
            if "action=reconcile result=ok" in line and sync in line
        ]

    def wait_log(self, what: str, needle: str, timeout: float = 60) -> None:
        wait_for(what, lambda: needle in self.log(), timeout)


def durations_ms(lines: list[str]) -> list[int]:
    """The duration_ms of each log line that has one."""
    out = []
    for line in lines:
        found = re.search(r"duration_ms=(\d+)", line)
        if found:
            out.append(int(found.group(1)))
    return out


def wait_quiet(proc: GitferryProcess, seconds: float = 2.0, timeout: float = 120) -> None:
    """Until the operator's log has not grown for `seconds` (the last reconciles ended)."""
    end = time.monotonic() + timeout
    size = -1
    while time.monotonic() < end:
        now = len(proc.log())
        if now == size:
            return
        size = now
        time.sleep(seconds)
