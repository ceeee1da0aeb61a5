"""A sync of 100 objects reconciled by calling `gitferry.reconcile.reconcile`
directly (no Kopf, no operator process), as the admin user: the full
verification path (fetch, render, dry-run of every object, compare), with the
drift watches off so that no reconcile takes the watch cache's no-op.

1. the first reconcile (creates 100 objects)
2. a reconcile right after it, then a no-op reconcile (median of 5)
3. a reconcile after a commit that changes 1 object (median of 3)

The audit log counts each phase's requests: real writes, dry-run writes and
reads. A no-op reconcile must write nothing.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.controlplane import ControlPlane

from .common import Requests, count_requests, docs, git, kubectl, say

NAMESPACE = "bench"
SYNC = "bench"
CONFIGMAPS, SERVICES, DEPLOYMENTS = 60, 20, 20
NOOP_RUNS, CHANGE_RUNS = 5, 3
# Requests by these clients (they share the admin kubeconfig) are not the pipeline's.
OTHER_AGENTS = ("kube-controller-manager", "kube-scheduler", "kwok", "kubectl", "kube-apiserver")


# --- results ------------------------------------------------------------------
@dataclass
class Phase:
    name: str
    no_op: bool = False  # must make no real write
    seconds: list[float] = field(default_factory=list)
    requests: list[Requests] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)  # each run's created=… unchanged=…

    @property
    def outcome(self) -> str:
        return "; ".join(dict.fromkeys(self.outcomes))

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def per_run(self) -> Requests:
        """Requests of one run: the largest count of any run, so that none hides."""
        out = Requests()
        out.total = max(r.total for r in self.requests)
        out.writes = max(r.writes for r in self.requests)
        out.dry_runs = max(r.dry_runs for r in self.requests)
        return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- the repository ---------------------------------------------------------------
def configmap(i: int, revision: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"config-{i:03d}"},
        "data": {"revision": str(revision), "settings.ini": f"[app]\nshard = {i}\n"},
    }


def service(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"svc-{i:03d}"},
        "spec": {
            "selector": {"app": f"app-{i:03d}"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
        },
    }


def deployment(i: int) -> dict[str, Any]:
    labels = {"app": f"app-{i:03d}"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"app-{i:03d}", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.example/app:1.0",
                            "ports": [{"containerPort": 8080}],
                            "envFrom": [{"configMapRef": {"name": f"config-{i:03d}"}}],
                        }
                    ]
                },
            },
        },
    }


def write_configmaps(repo: Path, changed_revision: int) -> None:
    """60 ConfigMaps in three files; config-000 carries `changed_revision`."""
    per_file = CONFIGMAPS // 3
    for f in range(3):
        ids = range(f * per_file, (f + 1) * per_file)
        objs = (configmap(i, changed_revision if i == 0 else 0) for i in ids)
        (repo / f"configmaps-{f + 1}.yaml").write_text(docs(objs))


def make_repo(repo: Path) -> None:
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "--initial-branch=main")
    write_configmaps(repo, 0)
    (repo / "services.yaml").write_text(docs(service(i) for i in range(SERVICES)))
    (repo / "deployments.yaml").write_text(docs(deployment(i) for i in range(DEPLOYMENTS)))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"{CONFIGMAPS + SERVICES + DEPLOYMENTS} objects")


def commit_change(repo: Path, revision: int) -> str:
    write_configmaps(repo, revision)
    git(repo, "commit", "-q", "-am", f"config-000: revision {revision}")
    return git(repo, "rev-parse", "HEAD")


# --- the run ---------------------------------------------------------------
class SummaryCapture(logging.Handler):
    """Keeps the pipeline's last `action=reconcile` log line."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "action=reconcile" in msg:
            self.last = msg


def wait_settled(kubeconfig: Path, timeout: float = 60) -> None:
    """Until kube-controller-manager has caught up with every Deployment (it writes
    their revision annotation and status) and their Pods are available (kwok makes
    them Ready): from then on nothing but git changes them."""
    end = time.monotonic() + timeout
    while True:
        items = json.loads(kubectl(kubeconfig, "get", "deployments", "-n", NAMESPACE, "-o", "json"))
        pending = [
            d["metadata"]["name"]
            for d in items["items"]
            if "deployment.kubernetes.io/revision" not in (d["metadata"].get("annotations") or {})
            or (d.get("status") or {}).get("observedGeneration") != d["metadata"]["generation"]
            or (d.get("status") or {}).get("availableReplicas", 0) != d["spec"]["replicas"]
        ]
        if not pending:
            return
        if time.monotonic() > end:
            raise RuntimeError(f"Deployments not settled after {timeout}s: {pending}")
        time.sleep(0.5)


def timed(
    cp: ControlPlane, fn: Callable[[], Any], capture: SummaryCapture
) -> tuple[Any, float, Requests, str]:
    start = time.time()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    end = time.time()
    time.sleep(0.3)  # let the audit log catch up with the last response
    return (
        result,
        seconds,
        count_requests(cp, start - 0.001, end + 0.001, user="admin", skip_agents=OTHER_AGENTS),
        capture.last,
    )


def outcome(summary: str) -> str:
    """`created=100 unchanged=0 …` from the reconcile's log line, zero counts left out."""
    parts = [p for p in summary.split() if "=" in p and p.split("=")[0] in _ACTIONS]
    return " ".join(p for p in parts if not p.endswith("=0")) or "-"


_ACTIONS = {"created", "configured", "recreated", "unchanged", "skipped", "deleted"}


@dataclass
class Direct:
    phases: list[Phase]
    rss_before: float
    rss_peak: float


def run(cp: ControlPlane, work: Path) -> Direct:
    kc = cp.kubeconfig
    kubectl(kc, "create", "namespace", NAMESPACE)
    repo = work / "direct-repo"
    make_repo(repo)
    sync = {
        "apiVersion": "gitferry.dev/v1alpha1",
        "kind": "GitRepositorySync",
        "metadata": {"name": SYNC, "namespace": NAMESPACE},
        "spec": {
            "url": f"file://{repo}",
            "ref": {"branch": "main"},
            "path": ".",
            "interval": "1h",
            "suspend": False,
        },
    }
    kubectl(kc, "apply", "-f", "-", stdin=json.dumps(sync))

    os.environ["KUBECONFIG"] = str(kc)
    # The client read KUBECONFIG when bench.common imported it: tell it again.
    from kubernetes.config import kube_config

    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(kc)
    from gitferry.api import SyncKey
    from gitferry.reconcile import reconcile
    from gitferry.runtime import Runtime
    from gitferry.settings import Settings

    # The pipeline's INFO lines go to `capture` only; its warnings to stderr.
    capture = SummaryCapture()
    stderr = logging.StreamHandler()
    stderr.setLevel(logging.WARNING)
    pipeline_log = logging.getLogger("gitferry")
    pipeline_log.setLevel(logging.INFO)
    pipeline_log.propagate = False
    pipeline_log.addHandler(capture)
    pipeline_log.addHandler(stderr)
    rss_before = peak_rss_mib()
    # No drift watches: every reconcile verifies in full (the watch cache's no-op
    # is measured through the operator process, bench/drift.py).
    settings = Settings(cache_dir=work / "direct-cache", allow_file_urls=True, drift_watches=False)
    rt = Runtime.start(settings)
    key = SyncKey(NAMESPACE, SYNC)
    first = Phase("first reconcile (creates 100 objects)")
    busy = Phase("reconcile right after it (controllers still updating the Deployments)")
    noop = Phase(f"no-op reconcile, full verification, cluster settled (median of {NOOP_RUNS})",
                 no_op=True)  # fmt: skip
    change = Phase(f"reconcile after a 1-object commit (median of {CHANGE_RUNS})")
    phases = [first, busy, noop, change]
    try:

        def once() -> None:
            res = reconcile(rt.context, key)
            if not res.ok:
                raise RuntimeError(f"reconcile failed: {capture.last}")

        def record(phase: Phase) -> None:
            _, seconds, reqs, summary = timed(cp, once, capture)
            phase.seconds.append(seconds)
            phase.requests.append(reqs)
            phase.outcomes.append(outcome(summary))
            say(f"  {phase.name}: {seconds * 1000:.0f} ms, {phase.outcomes[-1]},"
                f" {reqs.total} requests, {reqs.writes} real write(s)")  # fmt: skip
            for uri in reqs.write_uris:
                say(f"    {uri}")

        record(first)
        applied = kubectl(
            kc, "get", "configmaps,services,deployments", "-n", NAMESPACE,
            "-l", f"gitferry.dev/sync-name={SYNC}", "-o", "name",
        ).split()  # fmt: skip
        if len(applied) != CONFIGMAPS + SERVICES + DEPLOYMENTS:
            raise RuntimeError(f"expected 100 objects after the first reconcile, got {applied}")
        record(busy)
        wait_settled(kc)
        for _ in range(NOOP_RUNS):
            record(noop)
        for n in range(1, CHANGE_RUNS + 1):
            sha = commit_change(repo, n)
            # The interval is 1h, so the cached branch head is good for an hour;
            # requested-at is the "reconcile now" path that asks git afresh.
            kubectl(
                kc, "annotate", "-n", NAMESPACE, f"grs/{SYNC}",
                f"gitferry.dev/requested-at=bench-{n}", "--overwrite",
            )  # fmt: skip
            # What Kopf's handler does with the event: the sync cache gets the body.
            body = json.loads(kubectl(kc, "get", "-n", NAMESPACE, f"grs/{SYNC}", "-o", "json"))
            rt.observe("MODIFIED", body)
            record(change)
            got = kubectl(
                kc, "get", "configmap", "config-000", "-n", NAMESPACE,
                "-o", "jsonpath={.data.revision}",
            )  # fmt: skip
            if got != str(n) or sha[:12] not in capture.last:
                raise RuntimeError(f"commit {sha} not applied: {capture.last}")
    finally:
        rt.close()
        pipeline_log.removeHandler(capture)
        pipeline_log.removeHandler(stderr)
    noop_writes = [u for r in noop.requests for u in r.write_uris]
    if noop_writes:
        raise RuntimeError(f"the no-op reconciles made real writes: {noop_writes}")
    return Direct(phases, rss_before, peak_rss_mib())


# --- the report ------------------------------------------------------------------
def table(phases: list[Phase]) -> list[str]:
    rows = [
        "| phase | wall time | API requests | real writes | dry-run writes | outcome |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for p in phases:
        r = p.per_run()
        runs = ", ".join(f"{s * 1000:.0f}" for s in p.seconds)
        wall = f"{p.median * 1000:.0f} ms" + (f" ({runs})" if len(p.seconds) > 1 else "")
        rows.append(f"| {p.name} | {wall} | {r.total} | {r.writes} | {r.dry_runs} | {p.outcome} |")
    return rows


def section(d: Direct) -> list[str]:
    noop = Requests()
    for p in d.phases:
        if p.no_op:
            for r in p.requests:
                noop.add(r)
    return [
        "## Full verification: one sync of 100 objects, `reconcile()` called directly",
        "",
        f"One GitRepositorySync of {CONFIGMAPS + SERVICES + DEPLOYMENTS} objects"
        f" ({CONFIGMAPS} ConfigMaps, {SERVICES} Services, {DEPLOYMENTS} Deployments in 5 files)"
        " from a file:// repository, reconciled by calling `gitferry.reconcile.reconcile`"
        " directly (no Kopf), as the admin user, with the default settings"
        " (apply concurrency 8) and the drift watches off: every reconcile reads and"
        " dry-runs every object. This is the safety net's cost (the full verification"
        " that runs every `GITFERRY_FULL_VERIFY_INTERVAL`, 1 h, and for syncs whose"
        " kinds cannot be watched); the no-op through the watch cache is measured"
        " through the operator process above.",
        "",
        *table(d.phases),
        "",
        "- Wall time of one `reconcile()` call: fetch, render, dry-run, apply, status.",
        "  Several runs: the median, then each run in milliseconds.",
        "- Requests of one run (the largest count of any run), from the API server's",
        "  audit log, the pipeline's own requests only. Real writes: create/update/patch/",
        "  delete without `dryRun=`.",
        "- Right after the first reconcile, kube-controller-manager is still writing the",
        "  new Deployments; a dry-run whose resourceVersion shows another writer makes",
        "  the pipeline read the object again before comparing, so that reconcile is",
        "  still a no-op (0 real writes).",
        "- The no-op reconciles run once every Deployment is settled, with the cached",
        f"  branch head (interval 1h). Over all {NOOP_RUNS}: {noop.writes} real writes,"
        f" {noop.dry_runs} dry-run writes, {noop.total} requests.",
        "- The 1-object commit is picked up through `gitferry.dev/requested-at`, which asks",
        "  git afresh. Its real writes: the ConfigMap, two status patches (Progressing,",
        "  then Ready with the new revision) and one Event.",
        f"- Peak RSS of the benchmark process (the pipeline and its API clients; git and"
        f" kubectl run as child processes and are not counted): {d.rss_peak:.0f} MiB"
        f" ({d.rss_before:.0f} MiB before the pipeline started).",
        "",
    ]
