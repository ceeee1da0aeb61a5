"""`make bench`: how long one sync of 100 objects takes, and what it costs the API server.

Starts its own local control plane, installs the CRD, makes a git repository
(file://) with 100 objects and one GitRepositorySync, then drives the reconcile
pipeline directly (no Kopf, no operator process), as the admin user:

1. the first reconcile (creates 100 objects)
2. a no-op reconcile (nothing changed; median of 5)
3. a reconcile after a commit that changes 1 object (median of 3)

The control plane's audit log counts the requests of each phase: real writes,
dry-run writes and reads. A no-op reconcile must write nothing. The results are
printed and written to BENCHMARKS.md at the repository root.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.harness.controlplane import REPO, ControlPlane, build_binaries

KUBECTL = str(Path(sys.executable).parent / "kubectl")
NAMESPACE = "bench"
SYNC = "bench"
CONFIGMAPS, SERVICES, DEPLOYMENTS = 60, 20, 20
NOOP_RUNS, CHANGE_RUNS = 5, 3
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
# Requests by these clients (they share the admin kubeconfig) are not the pipeline's.
OTHER_AGENTS = ("kube-controller-manager", "kubectl", "kube-apiserver")
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "gitferry bench",
    "GIT_AUTHOR_EMAIL": "bench@gitferry.invalid",
    "GIT_COMMITTER_NAME": "gitferry bench",
    "GIT_COMMITTER_EMAIL": "bench@gitferry.invalid",
}


# --- results ------------------------------------------------------------------
@dataclass
class Requests:
    """What the pipeline asked of the API server during one phase."""

    total: int = 0
    writes: int = 0
    dry_runs: int = 0
    write_uris: list[str] = field(default_factory=list)  # "verb requestURI" of each write

    def add(self, other: Requests) -> None:
        self.total += other.total
        self.writes += other.writes
        self.dry_runs += other.dry_runs
        self.write_uris += other.write_uris


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


@dataclass
class Machine:
    cpus: int
    cpu_model: str
    memory_gib: float
    python: str
    kubernetes: str
    git: str
    load: float  # 1-minute load average when the benchmark started


# --- helpers -----------------------------------------------------------------
def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [KUBECTL, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        timeout=120,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
    ).stdout.strip()


def _epoch(stamp: str) -> float:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def count_requests(cp: ControlPlane, start: float, end: float) -> Requests:
    """The pipeline's requests received in [start, end] (epoch seconds)."""
    out = Requests()
    for ev in cp.audit_events():
        if ev.get("stage") != "ResponseComplete":
            continue
        user = ev.get("user")
        if not isinstance(user, dict) or user.get("username") != "admin":
            continue
        if str(ev.get("userAgent", "")).startswith(OTHER_AGENTS):
            continue
        if not start <= _epoch(str(ev.get("requestReceivedTimestamp", ""))) <= end:
            continue
        out.total += 1
        if ev.get("verb") in WRITE_VERBS:
            if "dryRun=" in str(ev.get("requestURI", "")):
                out.dry_runs += 1
            else:
                out.writes += 1
                out.write_uris.append(f"{ev.get('verb')} {ev.get('requestURI')}")
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- the repository ---------------------------------------------------------------
def _docs(objs: Iterable[dict[str, Any]]) -> str:
    # JSON is YAML: one document per object.
    return "".join(f"---\n{json.dumps(o, indent=2)}\n" for o in objs)


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
        (repo / f"configmaps-{f + 1}.yaml").write_text(_docs(objs))


def make_repo(repo: Path) -> None:
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "--initial-branch=main")
    write_configmaps(repo, 0)
    (repo / "services.yaml").write_text(_docs(service(i) for i in range(SERVICES)))
    (repo / "deployments.yaml").write_text(_docs(deployment(i) for i in range(DEPLOYMENTS)))
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


def machine(kubeconfig: Path, load: float) -> Machine:
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    model = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    version = json.loads(kubectl(kubeconfig, "version", "-o", "json"))
    return Machine(
        cpus=len(os.sched_getaffinity(0)),
        cpu_model=model,
        memory_gib=mem_kib / 1024 / 1024,
        python=platform.python_version(),
        kubernetes=version["serverVersion"]["gitVersion"],
        git=subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip(),
        load=load,
    )


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
    return result, seconds, count_requests(cp, start - 0.001, end + 0.001), capture.last


def outcome(summary: str) -> str:
    """`created=100 unchanged=0 …` from the reconcile's log line, zero counts left out."""
    parts = [p for p in summary.split() if "=" in p and p.split("=")[0] in _ACTIONS]
    return " ".join(p for p in parts if not p.endswith("=0")) or "-"


_ACTIONS = {"created", "configured", "recreated", "unchanged", "skipped", "deleted"}


def run(work: Path) -> tuple[Machine, float, list[Phase], float, float]:
    load = os.getloadavg()[0]
    bin_dir = build_binaries()
    print("starting the control plane …", file=sys.stderr)
    t0 = time.perf_counter()
    cp = ControlPlane.start(work / "controlplane", bin_dir)
    cp_start = time.perf_counter() - t0
    try:
        kc = cp.kubeconfig
        kubectl(kc, "apply", "-k", str(REPO / "crds"))
        kubectl(
            kc, "wait", "--for=condition=Established", "--timeout=60s",
            "crd/gitrepositorysyncs.gitferry.dev",
        )  # fmt: skip
        kubectl(kc, "create", "namespace", NAMESPACE)
        info = machine(kc, load)

        repo = work / "repo"
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
        # A new CRD answers 429 while its storage initializes: retry the create.
        for attempt in range(50):
            try:
                kubectl(kc, "apply", "-f", "-", stdin=json.dumps(sync))
                break
            except RuntimeError:
                if attempt == 49:
                    raise
                time.sleep(0.2)

        os.environ["KUBECONFIG"] = str(kc)
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
        rt = Runtime.start(Settings(cache_dir=work / "cache", allow_file_urls=True))
        key = SyncKey(NAMESPACE, SYNC)
        first = Phase("first reconcile (creates 100 objects)")
        busy = Phase("reconcile right after it (controllers still updating the Deployments)")
        noop = Phase(f"no-op reconcile, cluster settled (median of {NOOP_RUNS})", no_op=True)
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
                print(
                    f"  {phase.name}: {seconds * 1000:.0f} ms, {phase.outcomes[-1]},"
                    f" {reqs.writes} real write(s)",
                    file=sys.stderr,
                )
                for uri in reqs.write_uris:
                    print(f"    {uri}", file=sys.stderr)

            print("reconciling …", file=sys.stderr)
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
                record(change)
                got = kubectl(
                    kc, "get", "configmap", "config-000", "-n", NAMESPACE,
                    "-o", "jsonpath={.data.revision}",
                )  # fmt: skip
                if got != str(n) or sha[:12] not in capture.last:
                    raise RuntimeError(f"commit {sha} not applied: {capture.last}")
        finally:
            rt.close()
        return info, cp_start, phases, rss_before, peak_rss_mib()
    finally:
        cp.stop()


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


def report(
    m: Machine, cp_start: float, phases: list[Phase], rss_before: float, rss_peak: float
) -> str:
    noop = Requests()
    for p in phases:
        if p.no_op:
            for r in p.requests:
                noop.add(r)
    lines = [
        "# Benchmarks",
        "",
        f"Measured {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')} by `make bench`"
        " (`python -m bench.run`), which rewrites this file.",
        "",
        f"- Machine: {m.cpus} CPUs ({m.cpu_model}), {m.memory_gib:.1f} GiB memory,"
        f" load average {m.load:.2f} at the start (other work on the machine skews the"
        " times; compare runs on an idle machine)",
        f"- Python {m.python}, Kubernetes {m.kubernetes} (the local control plane:"
        f" etcd, kube-apiserver, kube-controller-manager on 127.0.0.1), {m.git}",
        f"- Local control plane start (ControlPlane.start to /readyz): {cp_start:.1f} s",
        "",
        f"One GitRepositorySync of {CONFIGMAPS + SERVICES + DEPLOYMENTS} objects"
        f" ({CONFIGMAPS} ConfigMaps, {SERVICES} Services, {DEPLOYMENTS} Deployments in 5 files)"
        " from a file:// repository, reconciled by calling `gitferry.reconcile.reconcile`"
        " directly (no Kopf), as the admin user, with the default settings"
        " (apply concurrency 8).",
        "",
        *table(phases),
        "",
        "- Wall time of one `reconcile()` call: fetch, render, dry-run, apply, status.",
        "  Several runs: the median, then each run in milliseconds.",
        "- Requests of one run (the largest count of any run), from the API server's",
        "  audit log, the pipeline's own requests only. Real writes: create/update/patch/",
        "  delete without `dryRun=`. Each reconcile reads every object and dry-runs",
        "  every object with server-side apply before it writes anything.",
        "- Right after the first reconcile, kube-controller-manager is still writing the",
        "  new Deployments (their `deployment.kubernetes.io/revision` annotation, through",
        "  `/status`). When the dry-run's resourceVersion shows that another controller",
        "  wrote an object after the pipeline read it, the pipeline reads it again before",
        "  comparing, so such a reconcile is still a no-op (0 real writes expected).",
        "- The no-op reconciles run once every Deployment is settled. They use the cached",
        "  branch head (interval 1h), so they time render + dry-run + compare, not a git",
        f"  fetch. Over all {NOOP_RUNS}: {noop.writes} real writes, {noop.dry_runs} dry-run"
        f" writes, {noop.total} requests.",
        "- The 1-object commit is picked up through `gitferry.dev/requested-at`, which asks",
        "  git afresh. Its real writes: the ConfigMap, two status patches (Progressing,",
        "  then Ready with the new revision) and one Event.",
        f"- Peak RSS of the benchmark process (the pipeline and its API clients; git and"
        f" kubectl run as child processes and are not counted): {rss_peak:.0f} MiB"
        f" ({rss_before:.0f} MiB before the pipeline started).",
        "",
        "Reproduce: `make bench` (builds the control plane on first use).",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="gitferry-bench-") as tmp:
        m, cp_start, phases, rss_before, rss_peak = run(Path(tmp))
    text = report(m, cp_start, phases, rss_before, rss_peak)
    from bench.render_memory import measure  # rendering, beside kubectl kustomize

    text += "\n" + measure() + "\n"
    (REPO / "BENCHMARKS.md").write_text(text)
    print()
    print(f"control plane start: {cp_start:.1f} s; peak RSS {rss_peak:.0f} MiB")
    print("\n".join(table(phases)))
    print(f"\nwritten to {REPO / 'BENCHMARKS.md'}")
    noop = Requests()
    for p in phases:
        if p.no_op:
            for r in p.requests:
                noop.add(r)
    if noop.writes:
        print(f"FAIL: the no-op reconciles made {noop.writes} real write(s):", file=sys.stderr)
        for uri in noop.write_uris:
            print(f"  {uri}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
