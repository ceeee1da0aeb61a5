"""When reconciles run: one worker per sync, one entry point to ask for one.

Every trigger — the interval, a spec change, the requested-at annotation, and
later webhooks and drift watches — calls `Scheduler.request`. Requests that
arrive while a reconcile runs coalesce into one follow-up; reconciles of one
sync never overlap; different syncs run concurrently on a bounded thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, Protocol, TypeVar

log = logging.getLogger("gitferry.scheduler")

K = TypeVar("K", bound=Hashable)
K_co = TypeVar("K_co", covariant=True)


class Outcome(Protocol[K_co]):
    """What one reconcile tells the scheduler (reconcile.Result has this shape)."""

    @property
    def next_in(self) -> float:
        """Seconds until the next periodic reconcile."""

    @property
    def wake(self) -> tuple[K_co, ...]:
        """Other keys to reconcile now (e.g. a sync an object was handed over to)."""


class Scheduler(Generic[K]):
    """Runs `reconciler(key)` on a bounded thread pool, one worker per key.

    Knows nothing of syncs: keys are any hashable value, the reconciler any
    callable returning an `Outcome`."""

    def __init__(self, reconciler: Callable[[K], Outcome[K]], max_concurrent: int) -> None:
        self._reconcile = reconciler
        self._executor = ThreadPoolExecutor(
            max_workers=max_concurrent, thread_name_prefix="reconcile"
        )
        self._wake: dict[K, asyncio.Event] = {}

    def request(self, key: K, why: str) -> None:
        """Ask for a reconcile of `key` as soon as its worker is free. A sync with no
        worker (not watched here, or gone) has nothing to wake."""
        log.debug("sync=%s action=request why=%s", key, why)
        wake = self._wake.get(key)
        if wake is not None:
            wake.set()

    async def run(self, key: K, stopped: asyncio.Event) -> None:
        """The worker of one sync: runs until `stopped` is set."""
        wake = self._wake[key] = asyncio.Event()
        wake.set()  # reconcile at once when the worker starts
        next_in: float | None = None
        loop = asyncio.get_running_loop()
        try:
            while not stopped.is_set():
                waiters = [
                    asyncio.ensure_future(wake.wait()),
                    asyncio.ensure_future(stopped.wait()),
                ]
                try:
                    await asyncio.wait(
                        waiters, timeout=next_in, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    for w in waiters:
                        w.cancel()
                if stopped.is_set():
                    break
                wake.clear()
                result = await loop.run_in_executor(self._executor, self._reconcile, key)
                next_in = result.next_in
                for other in result.wake:  # e.g. the sync an object was handed over to
                    self.request(other, "hand-over")
        finally:
            if self._wake.get(key) is wake:
                del self._wake[key]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._executor.shutdown(wait=False, cancel_futures=True)
