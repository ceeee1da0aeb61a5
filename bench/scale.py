"""P1 (issue 11): N syncs × 4 objects created at once, time to all Ready, the
operator's peak memory and CPU, beside `kubectl apply --server-side` of the same
objects; the steady-state CPU at 1000 syncs; one sync of 500 objects beside
kubectl.

Each N runs in its own namespace with a fresh operator process; the namespaces
are deleted (and waited for) before the next N, so that every run starts on a
cluster holding only the previous runs' leftovers that the API server keeps
(none of gitferry's watches sees them).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.cluster_fixtures import wait_for

from .common import (
    CpuWatch,
    Requests,
    audit_size,
    count_requests,
    kinds_of_requests,
    say,
    sync_manifest,
    wait_ready,
    watch_ready,
)
from .fleet import BIG, Bench, app_dir
from .process import EXTRA_ENV, USER, GitferryProcess, durations_ms

INTERVAL = "1m"  # issue 11: the steady state at 1000 syncs is measured at interval 1m
STEADY_SECONDS = 180.0
# Seconds between two scrapes of the operator's /metrics during P1 (the reconcile
# queue's depth); 0: none. A scrape at 1000 syncs renders every sync's series.
QUEUE_EVERY = float(os.environ.get("BENCH_QUEUE_EVERY", "15"))


@dataclass
class Steady:
    """The operator at N syncs, all Ready, nothing changing."""

    seconds: float
    cpu_own: float  # CPU seconds of the operator process in the window
    cpu_children: float  # of the git processes it started and waited for
    reconciles: int
    noop_reconciles: int  # of them, answered by the watch cache
    git: dict[str, float]  # git requests (ls-remote, fetch) in the window
    rss_mib: float
    metrics_kib: float = 0.0  # one /metrics page

    @property
    def percent(self) -> float:
        return self.cpu_own / self.seconds * 100

    @property
    def percent_children(self) -> float:
        return self.cpu_children / self.seconds * 100


@dataclass
class P1:
    n: int
    gitferry_s: float  # first create → all Ready
    create_s: float  # how long `kubectl create` of the N syncs itself took
    kubectl_s: float  # kubectl apply --server-side of the same 4N objects
    kubectl_requests: int  # its requests (audit log): discovery, then one per object
    peak_rss_mib: float
    rss_at_start_mib: float
    cpu_own: float  # operator CPU seconds from the first create to all Ready
    cpu_children: float
    reconcile_ms: list[int] = field(default_factory=list)  # each first reconcile's duration_ms
    apply_ms: list[int] = field(default_factory=list)  # … up to the end of its apply stage
    fetch_ms: list[int] = field(default_factory=list)  # … up to the end of its fetch stage
    threads: int = 4
    requests: Requests | None = None  # the operator's, from the first create to all Ready
    steady: Steady | None = None
    load: float = 0.0  # 1-minute load average when the kubectl run started
    # Share of one core per process (kube-apiserver, etcd, …) during each side's run,
    # and the machine's busy share of all its CPUs.
    cpu_kubectl: dict[str, float] = field(default_factory=dict)
    cpu_gitferry: dict[str, float] = field(default_factory=dict)
    machine_kubectl: float = 0.0
    machine_gitferry: float = 0.0
    max_queued: float | None = None  # gitferry_reconcile_queue_depth, sampled every 5 s

    @property
    def ratio(self) -> float:
        return self.gitferry_s / self.kubectl_s

    @property
    def per_sync(self) -> float:
        """The operator's API requests per sync (4 objects) until all were Ready."""
        return self.requests.total / self.n if self.requests else 0.0

    @property
    def busy(self) -> float:
        """Share of the reconcile threads' time spent in reconciles while they ran."""
        return sum(self.reconcile_ms) / 1000 / (self.threads * self.gitferry_s)


def threads(env: dict[str, str]) -> int:
    """The operator's reconcile threads (GITFERRY_MAX_CONCURRENT_RECONCILES)."""
    from gitferry.settings import Settings

    value = {**EXTRA_ENV, **env}.get("GITFERRY_MAX_CONCURRENT_RECONCILES")
    return int(value) if value else Settings(cache_dir=Path()).max_concurrent_reconciles


def control_plane(bench: Bench) -> dict[str, int]:
    """The pids of the control plane's busy processes."""
    names = ("kube-apiserver", "etcd", "kube-controller-manager")
    return {n: pid for n, pid in bench.cp.pids.items() if n in names}


class QueueSampler(threading.Thread):
    """The largest gitferry_reconcile_queue_depth seen on /metrics, every `every` s."""

    def __init__(self, proc: GitferryProcess, every: float = 5.0) -> None:
        super().__init__(daemon=True)
        self.proc, self.every = proc, every
        self.max_queued = 0.0
        self.samples = 0  # scrapes that answered (a busy event loop may time out)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.every):
            with contextlib.suppress(Exception):  # a scrape that failed: the next one
                queued = self.proc.metrics().get("gitferry_reconcile_queue_depth", 0.0)
                self.max_queued = max(self.max_queued, queued)
                self.samples += 1


def _kubectl_apply(
    bench: Bench, paths: list[str], name: str, watch: CpuWatch | None = None
) -> tuple[float, int]:
    """`kubectl apply --server-side -f <dir> -R -n <namespace>`: one process, as a
    user would apply the same objects; the wall time."""
    files = bench.files_of(paths, name)
    bench.kubectl("create", "namespace", name)
    offset, wall0 = audit_size(bench.cp), time.time()
    t0 = time.monotonic()
    with watch or contextlib.nullcontext():
        bench.kubectl("apply", "--server-side", "-f", str(files), "-R", "-n", name)
    took = time.monotonic() - t0
    time.sleep(0.3)  # the audit log is written as each request completes
    asked = count_requests(bench.cp, wall0, time.time(), user="admin", offset=offset)
    kubectl_requests = sum(1 for _, _, agent in asked.calls if agent == "kubectl")
    names = bench.kubectl("get", "deployments,ingresses", "-n", name, "-o", "name").split()
    if len(names) != 2 * len(paths) * (BIG if name.endswith("big") else 1):
        raise RuntimeError(f"kubectl applied {len(names)} Deployments and Ingresses in {name}")
    return took, kubectl_requests


def p1(bench: Bench, n: int, steady: bool = False, env: dict[str, str] | None = None) -> P1:
    env = env or {}
    paths = [app_dir(i) for i in range(n)]
    load = os.getloadavg()[0]
    say(f"P1 N={n}: kubectl apply --server-side of {4 * n} objects (load {load:.2f}) …")
    k_watch = CpuWatch(control_plane(bench))
    kubectl_s, kubectl_requests = _kubectl_apply(bench, paths, f"kubectl-{n}", k_watch)
    say(f"  kubectl: {kubectl_s:.1f} s, {kubectl_requests} requests, machine"
        f" {k_watch.machine:.0f} % busy: {k_watch.shares}")  # fmt: skip

    ns = f"p1-{n}"
    bench.kubectl("create", "namespace", ns)
    proc = GitferryProcess(bench.cluster, bench.work / f"operator-p1-{n}", ns, **env)
    try:
        proc.start()
        syncs = [sync_manifest(p, ns, bench.url, p, INTERVAL) for p in paths]
        rss0 = proc.rss_mib()
        cpu0 = proc.cpu()
        offset, wall0 = audit_size(bench.cp), time.time()
        g_watch = CpuWatch({**control_plane(bench), "gitferry": proc.pid})
        sampler = QueueSampler(proc, QUEUE_EVERY)
        if QUEUE_EVERY > 0:
            sampler.start()
        t0 = time.monotonic()
        with g_watch:
            bench.api.create_syncs(syncs)
            create_s = time.monotonic() - t0
            done = watch_ready(
                bench.api, ns, bench.sha, n, timeout=1200,
                progress=lambda r: say(f"  {r}/{n} Ready after {time.monotonic() - t0:.0f} s"),
            )  # fmt: skip
        sampler.done.set()
        cpu1 = proc.cpu()
        wall1 = time.time()
        # The status is written before each reconcile's last log line.
        wait_for("every first reconcile's log line", lambda: len(proc.reconcile_lines()) >= n, 30)
        result = P1(
            n=n,
            gitferry_s=done - t0,
            create_s=create_s,
            kubectl_s=kubectl_s,
            kubectl_requests=kubectl_requests,
            peak_rss_mib=proc.peak_rss_mib(),
            rss_at_start_mib=rss0,
            cpu_own=cpu1.own - cpu0.own,
            cpu_children=cpu1.children - cpu0.children,
            threads=threads(env),
            load=load,
            cpu_kubectl=k_watch.shares,
            cpu_gitferry=g_watch.shares,
            machine_kubectl=k_watch.machine,
            machine_gitferry=g_watch.machine,
            max_queued=sampler.max_queued if sampler.samples else None,
        )
        result.requests = count_requests(bench.cp, wall0, wall1, user=USER, offset=offset)
        log = proc.log().splitlines()
        result.reconcile_ms = durations_ms([x for x in log if "action=reconcile result=ok" in x])
        result.apply_ms = durations_ms([x for x in log if " action=apply " in x])
        result.fetch_ms = durations_ms([x for x in log if " action=fetch " in x])
        say(f"  gitferry: {result.gitferry_s:.1f} s to all Ready ({result.ratio:.2f}× kubectl),"
            f" peak RSS {result.peak_rss_mib:.0f} MiB, CPU {result.cpu_own:.0f} s"
            f" (+{result.cpu_children:.0f} s in git), reconcile p50"
            f" {statistics.median(result.reconcile_ms or [0])} ms,"
            f" {result.requests.total / n:.1f} requests per sync:"
            f" {kinds_of_requests(result.requests.calls)}; machine {g_watch.machine:.0f} % busy:"
            f" {g_watch.shares}; queue at most {sampler.max_queued:.0f} ({sampler.samples} scrapes)")  # fmt: skip
        if steady:
            result.steady = measure_steady(proc, STEADY_SECONDS)
            result.peak_rss_mib = proc.peak_rss_mib()
        proc.alive()
        return result
    finally:
        proc.stop()
        for name in (ns, f"kubectl-{n}"):
            took = _delete(bench, name)
            say(f"  namespace {name} deleted in {took:.0f} s")


def _delete(bench: Bench, namespace: str) -> float:
    from .common import delete_namespace

    return delete_namespace(bench.api, bench.kubeconfig, namespace)


def measure_steady(proc: GitferryProcess, seconds: float) -> Steady:
    """CPU of the operator over `seconds` with every sync Ready and nothing changing."""
    say(f"  steady state: {seconds:.0f} s of nothing changing …")
    time.sleep(5)  # the last status writes and Events of the first reconciles
    lines0 = len(proc.reconcile_lines())
    noop0 = sum("unchanged (watch cache)" in x for x in proc.reconcile_lines())
    git0 = proc.git_requests()
    cpu0 = proc.cpu()
    t0 = time.monotonic()
    time.sleep(seconds)
    cpu1 = proc.cpu()
    took = time.monotonic() - t0
    git1 = proc.git_requests()
    lines = proc.reconcile_lines()
    out = Steady(
        seconds=took,
        cpu_own=cpu1.own - cpu0.own,
        cpu_children=cpu1.children - cpu0.children,
        reconciles=len(lines) - lines0,
        noop_reconciles=sum("unchanged (watch cache)" in x for x in lines) - noop0,
        git={k: v - git0.get(k, 0) for k, v in git1.items()},
        rss_mib=proc.rss_mib(),
        metrics_kib=len(proc.metrics_text()) / 1024,
    )
    say(f"  steady: {out.percent:.1f} % of a core (+{out.percent_children:.1f} % in git),"
        f" {out.reconciles} reconciles ({out.noop_reconciles} from the watch cache),"
        f" git {out.git}")  # fmt: skip
    return out


@dataclass
class BigSync:
    objects: int
    gitferry_s: float  # create → Ready, through the operator process
    reconcile_ms: int  # the reconcile's own duration_ms (from its log line)
    apply_ms: int  # … up to the end of its apply stage
    kubectl_s: float


def big_sync(bench: Bench) -> BigSync:
    """One sync of 500 objects (125 apps × 4) against kubectl apply of the same."""
    say("one sync of 500 objects …")
    kubectl_s, _ = _kubectl_apply(bench, ["big-500"], "kubectl-big")
    ns = "big"
    bench.kubectl("create", "namespace", ns)
    proc = GitferryProcess(bench.cluster, bench.work / "operator-big", ns)
    try:
        proc.start()
        t0 = time.monotonic()
        bench.create([sync_manifest("big", ns, bench.url, "big-500", "1h")])
        done = wait_ready(bench.api, ns, bench.sha, 1, timeout=600, every=0.1)
        # The status is written before the reconcile's last log line.
        wait_for("the reconcile's log line", lambda: proc.reconcile_lines("big"), 30)
        lines = proc.reconcile_lines("big")
        apply_lines = [x for x in proc.log().splitlines() if " action=apply " in x]
        out = BigSync(
            objects=4 * BIG,
            gitferry_s=done - t0,
            reconcile_ms=durations_ms(lines)[0],
            apply_ms=durations_ms(apply_lines)[0],
            kubectl_s=kubectl_s,
        )
        say(f"  gitferry {out.gitferry_s:.1f} s (reconcile {out.reconcile_ms} ms),"
            f" kubectl {out.kubectl_s:.1f} s")  # fmt: skip
        return out
    finally:
        proc.stop()
        for name in (ns, "kubectl-big"):
            _delete(bench, name)
