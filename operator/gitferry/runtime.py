"""Wires the long-lived parts together: clients, discovery, git cache, scheduler."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .api import SyncKey
from .context import Context
from .events import EventRecorder
from .finalizer import finalize
from .kube import Discovery, Kube, load_configuration
from .receiver import Receiver
from .reconcile import reconcile
from .scheduler import Scheduler
from .settings import Settings
from .source import GitSource, SourceSettings
from .status import StatusWriter
from .uninstall import crd_deleting, orphan_all

log = logging.getLogger("gitferry.runtime")


@dataclass
class Runtime:
    context: Context
    scheduler: Scheduler[SyncKey]
    receiver: Receiver | None = None  # push webhooks, when a Secret is configured
    _finalizing: threading.Condition = field(default_factory=threading.Condition)
    _running_finalizers: int = 0

    @classmethod
    def start(cls, settings: Settings | None = None) -> Runtime:
        settings = settings or Settings.from_env()
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
            )
        )
        ctx = Context(
            kube=kube,
            discovery=discovery,
            source=source,
            settings=settings,
            status=StatusWriter(kube),
            events=EventRecorder(kube),
        )
        scheduler: Scheduler[SyncKey] = Scheduler(
            functools.partial(reconcile, ctx), settings.max_concurrent_reconciles
        )
        receiver = Receiver(ctx, scheduler, settings) if settings.webhook_secret else None
        log.info(
            "action=start cache_dir=%s allow_file_urls=%s webhooks=%s",
            settings.cache_dir,
            settings.allow_file_urls,
            "on" if receiver else "off",
        )
        return cls(ctx, scheduler, receiver)

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
        self.context.source.close()
        self.context.kube.close()
