"""Prometheus metrics: what the operator counts and times, and the HTTP server
that exposes them (`/metrics`) beside the operator's readiness (`/readyz`).

A library: it knows nothing of GitRepositorySync. The pipeline reports each
reconcile through the small API of `Metrics`, the git source reports each git
network operation through `Metrics.git_request` (a callback the runtime hands
it, so `source/` never imports this module), and the runtime points the queue
gauges at the scheduler and serves the registry.

Names follow Flux's where Flux has one (`gotk_reconcile_duration_seconds`,
labels kind, name, namespace); the rest are `gitferry_*`.

The state of a sync is two numeric gauges, `gitferry_sync_ready` (1 True, 0
False, -1 Unknown or not yet known) and `gitferry_sync_suspended` (1/0), one
series each per sync, rather than a `gotk_resource_info`-style info gauge with
`ready`, `suspended` and `revision` labels. Flux v2 gets that info gauge from
kube-state-metrics reading its CRs' status, which works for gitferry's CRD too;
inside the operator, a label whose value changes (ready="True" becomes
ready="False") starts a new series each time and leaves the old one behind
until someone removes it, and a revision label starts one per commit. A value
that changes keeps one series per sync, and `gitferry_sync_ready == 0` is the
whole alert.

Label values stay bounded: sync namespace and name (their series go when the
sync is deleted: `forget_sync`), an object action, a git operation and
outcome, a reconcile result and condition reason. Never a revision, a URL, a
host or a message.

Only what exists is registered. Deliveries of Alerts count by outcome
(`delivered`, `failed` after every retry, `dropped` from a full queue):
`gitferry_notifications_total{outcome}` for chat messages,
`gitferry_commit_statuses_total{outcome}` for commit statuses. The drift
watches report `gitferry_watches`, `gitferry_watched_objects` and
`gitferry_watch_cache_bytes`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping
from typing import Literal

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.aiohttp import make_aiohttp_handler

log = logging.getLogger("gitferry.metrics")

# The `_created` series double what every counter and histogram exposes, and
# nothing here reads them (Prometheus derives resets from the values).
disable_created_metrics()  # type: ignore[no-untyped-call]  # (untyped upstream)

ReconcileResult = Literal["success", "failure", "waiting"]
DeliveryOutcome = Literal["delivered", "failed", "dropped"]

# A reconcile takes from a few milliseconds (nothing changed) to minutes (a
# thousand objects, a slow git host; spec.timeout bounds it).
RECONCILE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# One git process: a local ls-remote takes milliseconds, a fetch at most
# GITFERRY_FETCH_TIMEOUT (60 s by default).
GIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_READY = {"True": 1.0, "False": 0.0}  # anything else (Unknown, no condition yet): -1


class Metrics:
    """The operator's collectors, in their own registry (so that tests, the
    benchmark and the operator never share one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconcile_duration = Histogram(
            "gotk_reconcile_duration_seconds",
            "How long one reconcile took, per sync (Flux's name and labels).",
            ["kind", "name", "namespace"],
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.reconciles = Counter(
            "gitferry_reconcile_total",
            "Reconciles by result (success, failure, waiting for a busy git source) and "
            "condition reason.",
            ["result", "reason"],
            registry=r,
        )
        self.ready = Gauge(
            "gitferry_sync_ready",
            "The sync's Ready condition after its last reconcile: 1 True, 0 False, -1 Unknown.",
            ["namespace", "name"],
            registry=r,
        )
        self.suspended = Gauge(
            "gitferry_sync_suspended",
            "1 while the sync is suspended (spec.suspend), else 0.",
            ["namespace", "name"],
            registry=r,
        )
        self.objects_total = Counter(
            "gitferry_objects_total",
            "Objects applied or pruned, by action (created, configured, recreated, "
            "unchanged, skipped, deleted).",
            ["action"],
            registry=r,
        )
        self.drift = Counter(
            "gitferry_drift_corrected_objects_total",
            "Objects written again although neither the revision nor the spec changed: "
            "someone changed or deleted them by hand, and gitferry put them back.",
            ["namespace", "name"],
            registry=r,
        )
        self.git_requests = Counter(
            "gitferry_git_requests_total",
            "git network operations (ls-remote, fetch) by outcome (ok, auth_failed, "
            "not_found, timeout, error).",
            ["operation", "outcome"],
            registry=r,
        )
        self.git_duration = Histogram(
            "gitferry_git_request_duration_seconds",
            "How long one git network operation took, by operation and outcome.",
            ["operation", "outcome"],
            buckets=GIT_BUCKETS,
            registry=r,
        )
        self.queued = Gauge(
            "gitferry_reconcile_queue_depth",
            "Reconciles waiting for a thread.",
            registry=r,
        )
        self.running = Gauge(
            "gitferry_reconciles_running",
            "Reconciles running now.",
            registry=r,
        )
        self.threads = Gauge(
            "gitferry_reconcile_threads",
            "Reconciles that can run at once (GITFERRY_MAX_CONCURRENT_RECONCILES).",
            registry=r,
        )
        self.syncs = Gauge(
            "gitferry_syncs",
            "Syncs this operator reconciles (one worker each).",
            registry=r,
        )
        self.watches = Gauge(
            "gitferry_watches",
            "Drift watches open (one per kind gitferry applied).",
            registry=r,
        )
        self.watched_objects = Gauge(
            "gitferry_watched_objects",
            "Objects the drift watches keep (metadata only).",
            registry=r,
        )
        self.watch_cache_bytes = Gauge(
            "gitferry_watch_cache_bytes",
            "Approximate bytes of strings the drift watches keep.",
            registry=r,
        )
        self.notifications = Counter(
            "gitferry_notifications_total",
            "Chat notifications (Alerts of type apprise) by outcome: delivered, failed "
            "(after every retry), dropped (from a full queue).",
            ["outcome"],
            registry=r,
        )
        self.commit_statuses = Counter(
            "gitferry_commit_statuses_total",
            "Commit statuses posted to forges (Alerts of a forge type) by outcome: "
            "delivered, failed (after every retry), dropped (from a full queue).",
            ["outcome"],
            registry=r,
        )
        self._per_sync = (self.reconcile_duration, self.ready, self.suspended, self.drift)

    @classmethod
    def for_process(cls) -> Metrics:
        """The operator's own: with the process_*, python_gc_* and python_info series
        (CPU, memory, open files) that the default registry would have had."""
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        return cls(registry)

    # --- what the pipeline reports -------------------------------------------------
    def reconciled(
        self,
        kind: str,
        namespace: str,
        name: str,
        *,
        seconds: float,
        result: ReconcileResult,
        reason: str,
    ) -> None:
        """One reconcile ended: its result and condition reason, and its duration
        unless it waited (it did no work: a second later it runs)."""
        self.reconciles.labels(result, reason).inc()
        if result != "waiting":
            self.reconcile_duration.labels(kind, name, namespace).observe(seconds)

    def sync_state(self, namespace: str, name: str, *, ready: str | None, suspended: bool) -> None:
        """The sync's state as its status now says: Ready's status and spec.suspend."""
        self.ready.labels(namespace, name).set(_READY.get(ready or "", -1.0))
        self.suspended.labels(namespace, name).set(1.0 if suspended else 0.0)

    def objects(self, counts: Mapping[str, int]) -> None:
        """Objects by action (`{"created": 3, "unchanged": 40}`) of one apply and prune."""
        for action, n in counts.items():
            self.objects_total.labels(action).inc(n)

    def drift_corrected(self, namespace: str, name: str, n: int) -> None:
        """`n` objects of the sync were put back on a revision and spec already applied."""
        self.drift.labels(namespace, name).inc(n)

    def git_request(self, operation: str, outcome: str, seconds: float) -> None:
        """One git network operation ended (the git source's observer)."""
        self.git_requests.labels(operation, outcome).inc()
        self.git_duration.labels(operation, outcome).observe(seconds)

    def notification(self, outcome: DeliveryOutcome) -> None:
        """One chat notification ended."""
        self.notifications.labels(outcome).inc()

    def commit_status(self, outcome: DeliveryOutcome) -> None:
        """One commit status ended."""
        self.commit_statuses.labels(outcome).inc()

    def forget_sync(self, namespace: str, name: str) -> None:
        """Remove every series of a deleted sync: cardinality follows the live syncs."""
        for metric in self._per_sync:
            metric.remove_by_labels({"namespace": namespace, "name": name})

    # --- what the runtime wires ----------------------------------------------------
    def watch_scheduler(
        self,
        *,
        queued: Callable[[], int],
        running: Callable[[], int],
        syncs: Callable[[], int],
        threads: int,
    ) -> None:
        """Gauges read at each scrape from the scheduler's own counts."""
        self.queued.set_function(queued)
        self.running.set_function(running)
        self.syncs.set_function(syncs)
        self.threads.set(threads)

    def watch_cache(
        self,
        *,
        watches: Callable[[], int],
        objects: Callable[[], int],
        bytes_: Callable[[], int],
    ) -> None:
        """Gauges read at each scrape from the drift watches' own counts."""
        self.watches.set_function(watches)
        self.watched_objects.set_function(objects)
        self.watch_cache_bytes.set_function(bytes_)


# --- the HTTP server ------------------------------------------------------------------


def parse_addr(value: str) -> tuple[str, int]:
    """`HOST:PORT` (`0.0.0.0:8081`, `127.0.0.1:0`, `[::]:8081`, `:8081`) as (host,
    port); port 0 is any free port. ValueError says what is wrong."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("not HOST:PORT with a port from 0 to 65535")
    host = host.removeprefix("[").removesuffix("]") or "0.0.0.0"
    return host, int(port)


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port now, so that a taken port fails the start at
    once; `MetricsServer` serves it once the event loop runs. OSError names the
    address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as e:
        raise OSError(
            e.errno, f"metrics server: cannot listen on {host}:{port}: {e.strerror}"
        ) from None


class MetricsServer:
    """`/metrics` (prometheus_client's own aiohttp exposition, text or OpenMetrics
    as the scraper asks) and `/readyz` on one listening socket, served by aiohttp
    in the running event loop.

    In the event loop rather than `start_http_server`'s thread: `stop` is awaited
    in the operator's cleanup, after the graceful stop, so `/readyz` answers 503
    for as long as running reconciles drain, and the port is closed before the
    process exits; no thread is left to kill mid-answer. A scrape runs in the
    loop, as Kopf's liveness does: a blocked loop shows in both."""

    def __init__(
        self,
        sock: socket.socket,
        registry: CollectorRegistry,
        not_ready: Callable[[], str | None],
    ) -> None:
        self._sock = sock
        self._not_ready = not_ready
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(registry))
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    async def _readyz(self, _: web.Request) -> web.Response:
        why = self._not_ready()
        if why is None:
            return web.Response(text="ok\n")
        return web.Response(status=503, text=f"not ready: {why}\n")

    async def start(self) -> None:
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()
        host, port = self.address
        log.info("action=serve metrics=http://%s:%d/metrics readyz=/readyz", host, port)

    async def stop(self) -> None:
        """Stop listening, let answers in flight finish, close the socket."""
        await self._runner.cleanup()
        self._sock.close()
