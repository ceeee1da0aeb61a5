"""Wires the long-lived parts together: clients, discovery, git cache, scheduler."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from . import health
from .alerts import Notifier, NotifySettings
from .api import SyncKey, SyncStatus, parse_spec
from .constants import (
    ANNOTATION_REQUESTED_AT,
    FIELD_MANAGER,
    LABEL_SYNC_NAME,
    LABEL_SYNC_NAMESPACE,
)
from .context import Context
from .drift import Drift
from .errors import InvalidSpec
from .events import EventRecorder
from .finalizer import finalize
from .kube import Discovery, Kube, Watcher, load_configuration
from .metrics import Metrics, MetricsServer, listen
from .notify.delivery import Policy
from .receiver import Receiver
from .reconcile import reconcile
from .scheduler import Scheduler
from .settings import Settings
from .source import GitSource, SourceSettings
from .status import StatusWriter
from .syncs import SyncCache, Triggers
from .uninstall import crd_deleting, orphan_all

log = logging.getLogger("gitferry.runtime")


@dataclass
class Runtime:
    context: Context
    scheduler: Scheduler[SyncKey]
    # Alerts, subscribed to the pipeline's SyncReports (chat, commit statuses).
    notifier: Notifier
    receiver: Receiver | None = None  # push webhooks, when a Secret is configured
    _finalizing: threading.Condition = field(default_factory=threading.Condition)
    _running_finalizers: int = 0
    # Bound at start, served by serve() once the event loop runs.
    _listener: socket.socket | None = None
    _server: MetricsServer | None = None
    # A new generation or requested-at in Kopf's events: reconcile now.
    _triggers: Triggers = field(default_factory=Triggers)

    @classmethod
    def start(cls, settings: Settings | None = None) -> Runtime:
        settings = settings or Settings.from_env()
        # First: a taken metrics port fails the start before anything else starts.
        listener = listen(*settings.metrics_addr) if settings.metrics_addr else None
        try:
            return cls._start(settings, listener)
        except BaseException:
            if listener is not None:
                listener.close()
            raise

    @classmethod
    def _start(cls, settings: Settings, listener: socket.socket | None) -> Runtime:
        metrics = Metrics.for_process()
        # healthCheckExprs' worker processes: started at first use, ended by close().
        health.configure(
            health.CelLimits(
                timeout=settings.cel_timeout,
                memory_bytes=settings.cel_memory_bytes,
                workers=settings.cel_workers,
            )
        )
        # One pool for every identity, as large as the threads that call at once.
        pool = settings.max_concurrent_reconciles * (settings.apply_concurrency + 1) + 4
        kube = Kube(load_configuration(pool_size=pool))
        discovery = Discovery(kube)
        discovery.refresh()
        source = GitSource(
            SourceSettings(
                cache_dir=settings.cache_dir,
                allow_file_urls=settings.allow_file_urls,
                max_concurrent_fetches=settings.max_concurrent_fetches,
                max_cache_bytes=settings.max_cache_bytes,
                max_repo_bytes=settings.max_repo_bytes,
                fetch_timeout=settings.fetch_timeout,
                max_fetches_per_host=settings.max_fetches_per_host,
                failure_ttl=settings.git_failure_ttl,
            ),
            observer=metrics.git_request,
        )
        syncs = SyncCache(live=True)  # fed by Kopf's events (handlers.observed)
        ctx = Context(
            kube=kube,
            discovery=discovery,
            source=source,
            settings=settings,
            status=StatusWriter(kube, written=syncs.observe),
            events=EventRecorder(kube),
            metrics=metrics,
            syncs=syncs,
        )
        notifier = Notifier(
            kube,
            NotifySettings(
                Policy(
                    capacity=settings.notify_queue_size,
                    attempts=settings.notify_attempts,
                    timeout=settings.notify_timeout,
                ),
                default_service_account=settings.default_service_account,
                cluster_name=settings.cluster_name,
            ),
            metrics,
        )
        ctx.reporters.append(notifier.report)
        scheduler: Scheduler[SyncKey] = Scheduler(
            functools.partial(reconcile, ctx), settings.max_concurrent_reconciles
        )
        if settings.drift_watches:
            ctx.drift = Drift(None, scheduler.request_threadsafe, settings.full_verify_interval)
            watcher = ctx.drift.cache = Watcher(
                kube,
                discovery,
                label_selector=LABEL_SYNC_NAME,
                field_manager=FIELD_MANAGER,
                keep_labels=(LABEL_SYNC_NAME, LABEL_SYNC_NAMESPACE),
                on_event=ctx.drift.on_watch_event,
            )
            metrics.watch_cache(
                watches=lambda: watcher.stats().watches,
                objects=lambda: watcher.stats().objects,
                bytes_=lambda: watcher.stats().bytes,
            )
        metrics.watch_scheduler(
            queued=lambda: scheduler.queued,
            running=lambda: scheduler.running,
            syncs=lambda: scheduler.workers,
            threads=settings.max_concurrent_reconciles,
        )
        address = "off"
        if listener is not None:
            host, port = listener.getsockname()[:2]
            address = f"{host}:{port}"
        receiver = Receiver(ctx, scheduler, settings) if settings.webhook_secret else None
        log.info(
            "action=start cache_dir=%s allow_file_urls=%s metrics_addr=%s webhooks=%s",
            settings.cache_dir,
            settings.allow_file_urls,
            address,
            "on" if receiver else "off",
        )
        return cls(ctx, scheduler, notifier, receiver, _listener=listener)

    def observe(self, event_type: str | None, body: dict[str, Any]) -> None:
        """A watch event of a sync (Kopf's): the sync cache keeps the newest body,
        and a new generation or `gitferry.dev/requested-at` asks its worker for a
        reconcile now (syncs.Triggers)."""
        meta = body.get("metadata") or {}
        key = SyncKey(str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if event_type == "DELETED":
            self.context.syncs.remove(key, body)
        else:
            self.context.syncs.observe(body)
        why = self._triggers.observe(event_type, body)
        if why is not None:
            self.scheduler.request(key, why)

    def first_delay(self, body: dict[str, Any]) -> float:
        """Seconds before a sync's first reconcile here: 0 for a new or changed
        sync, or one whose requested-at is unhandled; for one already Ready at its generation (an operator restart), a
        random point within min(its interval, GITFERRY_STARTUP_SPREAD), so that a
        thousand syncs are re-verified spread out, not all at once."""
        status = SyncStatus.from_dict(body.get("status"))
        meta = body.get("metadata") or {}
        generation = int(meta.get("generation") or 0)
        requested = (meta.get("annotations") or {}).get(ANNOTATION_REQUESTED_AT)
        if status.ready != "True" or status.observed_generation != generation:
            return 0.0
        if requested and requested != status.last_handled_reconcile_at:
            return 0.0  # asked for while the operator was away: a person waits
        try:
            interval = parse_spec(body.get("spec") or {}).interval
        except InvalidSpec:
            return 0.0
        return random.uniform(0.0, min(interval, self.context.settings.startup_spread))

    def not_ready(self) -> str | None:
        """Why the operator is not ready, or None: it is from its start (clients
        made, discovery read) until it begins to stop."""
        return "the operator is stopping" if self.context.stopping.is_set() else None

    async def serve(self) -> None:
        """Serve /metrics and /readyz on the address Runtime.start bound (if any)."""
        if self._listener is not None and self._server is None:
            self._server = MetricsServer(
                self._listener, self.context.metrics.registry, self.not_ready
            )
            await self._server.start()

    async def stop_serving(self) -> None:
        """After close(): /readyz said 503 while reconciles drained; now the port closes."""
        if self._server is not None:
            await self._server.stop()

    async def serve_webhooks(self) -> None:
        """Start the push webhook receiver (receiver.py), when there is one."""
        if self.receiver is not None:
            await self.receiver.start()

    async def stop_webhooks(self) -> None:
        """Stop taking pushes: the first step of a graceful stop."""
        if self.receiver is not None:
            await self.receiver.stop()

    async def watch_uninstall(self, every: float = 5.0) -> None:
        """Poll the CRD; once it is being deleted, orphan every sync (uninstall.py)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                if await loop.run_in_executor(None, crd_deleting, self.context.kube):
                    await loop.run_in_executor(None, orphan_all, self.context.kube)
            except Exception:  # keep watching: a passing API error must not end it
                log.exception("action=uninstall-check")
            await asyncio.sleep(every)

    async def finalize(self, key: SyncKey, body: dict[str, Any]) -> None:
        """Runs when a sync is deleted (its finalizer)."""
        await asyncio.get_running_loop().run_in_executor(None, self._finalize, key, body)

    def _finalize(self, key: SyncKey, body: dict[str, Any]) -> None:
        with self._finalizing:
            self._running_finalizers += 1
        try:
            finalize(self.context, key, body)
        finally:
            with self._finalizing:
                self._running_finalizers -= 1
                self._finalizing.notify_all()

    def close(self, grace: float = 20.0) -> None:
        """Graceful stop: no stage starts after this (running reconciles end at
        their next stage boundary and never prune), wait up to `grace` seconds
        for them, and only then remove the cache and close the API pool."""
        self.context.stopping.set()
        end = time.monotonic() + grace
        self.scheduler.close(grace)
        with self._finalizing:  # finalizers stop at their next stage boundary too
            while self._running_finalizers and time.monotonic() < end:
                self._finalizing.wait(max(0.0, end - time.monotonic()))
        self.notifier.close()  # queued notifications are dropped; one in flight ends alone
        health.close()  # the CEL workers, ended and reaped
        if self.context.drift is not None:
            self.context.drift.close()
        self.context.source.close()
        self.context.kube.close()
        if self._server is None and self._listener is not None:  # bound, never served
            self._listener.close()
