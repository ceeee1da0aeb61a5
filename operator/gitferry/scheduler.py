"""When reconciles run: one worker per sync, one entry point to ask for one.

Every trigger — the interval, a spec change, the requested-at annotation, a
push webhook (receiver.py), and later drift watches — calls `Scheduler.request`. Requests that
arrive while a reconcile runs coalesce into one follow-up; reconciles of one
sync never overlap; different syncs run concurrently on a bounded pool of
threads. A requested reconcile (a spec change, `requested-at`) goes ahead of
periodic ones waiting for a thread, so a user is never queued behind interval
work. `close` stops taking work and waits, bounded, for running reconciles.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar, cast

log = logging.getLogger("gitferry.scheduler")

K = TypeVar("K", bound=Hashable)
K_co = TypeVar("K_co", covariant=True)

PERIODIC = 1  # queue priorities: lower runs first
REQUESTED = 0


class Outcome(Protocol[K_co]):
    """What one reconcile tells the scheduler (reconcile.Result has this shape)."""

    @property
    def next_in(self) -> float:
        """Seconds until the next periodic reconcile."""

    @property
    def wake(self) -> tuple[K_co, ...]:
        """Other keys to reconcile now (e.g. a sync an object was handed over to)."""


class _Job:
    """One reconcile waiting for, or running on, a pool thread."""

    def __init__(self, key: Hashable, loop: asyncio.AbstractEventLoop) -> None:
        self.key = key
        self.loop = loop
        self.done: asyncio.Future[object] = loop.create_future()

    def finish(self, result: object, error: BaseException | None) -> None:
        def settle() -> None:
            if self.done.done():
                return
            if error is not None:
                self.done.set_exception(error)
            else:
                self.done.set_result(result)

        # A closed event loop raises RuntimeError: nobody waits for the result any more.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(settle)


class Scheduler(Generic[K]):
    """Runs `reconciler(key)` on `max_concurrent` threads, one worker per key.

    Knows nothing of syncs: keys are any hashable value, the reconciler any
    callable returning an `Outcome`."""

    def __init__(self, reconciler: Callable[[K], Outcome[K]], max_concurrent: int) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self._reconcile = reconciler
        self._wake: dict[K, asyncio.Event] = {}
        self._requested: set[K] = set()  # keys whose next run was asked for
        self._queue: queue.PriorityQueue[tuple[int, int, _Job | None]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._closing = threading.Event()
        self._running = 0
        self._idle = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None  # the workers' loop
        self._threads = [
            threading.Thread(target=self._work, name=f"reconcile-{i}", daemon=True)
            for i in range(max_concurrent)
        ]
        for t in self._threads:
            t.start()

    @property
    def queued(self) -> int:
        """Reconciles waiting for a thread."""
        return self._queue.qsize()

    @property
    def running(self) -> int:
        """Reconciles running now."""
        return self._running

    @property
    def workers(self) -> int:
        """Keys with a worker (`run`): the syncs this scheduler reconciles."""
        return len(self._wake)

    def request(self, key: K, why: str) -> None:
        """Ask for a reconcile of `key` as soon as its worker is free, ahead of
        periodic ones. A sync with no worker (not watched here, or gone) has
        nothing to wake."""
        log.debug("sync=%s action=request why=%s", key, why)
        wake = self._wake.get(key)
        if wake is not None:
            self._requested.add(key)
            wake.set()

    def watched(self) -> frozenset[K]:
        """The keys that have a worker here now (call it from the event loop)."""
        return frozenset(self._wake)

    def request_threadsafe(self, key: K, why: str) -> None:
        """`request` from another thread (a watch, a timer): handed to the event loop."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody to wake
                loop.call_soon_threadsafe(self.request, key, why)

    async def run(self, key: K, stopped: asyncio.Event, first_in: float = 0.0) -> None:
        """The worker of one sync: runs until `stopped` is set or the scheduler closes.

        `first_in` (seconds) delays the first reconcile: an operator that restarts
        with many syncs that were already reconciled spreads their re-verification
        instead of starting them all at once (a requested reconcile still goes now)."""
        wake = self._wake[key] = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._loop = loop
        next_in: float | None = None
        if first_in > 0:
            next_in = first_in
        else:
            self._requested.add(key)  # a new worker reconciles at once, as requested
            wake.set()
        try:
            while not stopped.is_set() and not self._closing.is_set():
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
                if stopped.is_set() or self._closing.is_set():
                    break
                wake.clear()
                priority = REQUESTED if key in self._requested else PERIODIC
                self._requested.discard(key)
                job = _Job(key, loop)
                self._queue.put((priority, next(self._seq), job))
                result = cast(Outcome[K], await job.done)
                next_in = result.next_in
                for other in result.wake:  # e.g. the sync an object was handed over to
                    self.request(other, "hand-over")
        finally:
            if self._wake.get(key) is wake:
                del self._wake[key]
            self._requested.discard(key)

    def _work(self) -> None:
        while True:
            _, _, job = self._queue.get()
            if job is None:  # close(): this thread ends
                return
            if self._closing.is_set():
                job.finish(None, asyncio.CancelledError())
                continue
            with self._idle:
                self._running += 1
            try:
                result: object = self._reconcile(job.key)  # type: ignore[arg-type]
                job.finish(result, None)
            except BaseException as e:  # the reconciler catches its own; this is a bug
                log.exception("sync=%s action=reconcile error=unhandled", job.key)
                job.finish(None, e)
            finally:
                with self._idle:
                    self._running -= 1
                    self._idle.notify_all()

    def close(self, grace: float = 20.0) -> bool:
        """Stop taking work, then wait up to `grace` seconds for running reconciles
        (they stop at their next stage boundary). True when none is left."""
        self._closing.set()
        end = time.monotonic() + grace
        with self._idle:
            while self._running and time.monotonic() < end:
                self._idle.wait(timeout=max(0.0, end - time.monotonic()))
            left = self._running
        for _ in self._threads:
            self._queue.put((2, next(self._seq), None))
        if left:
            log.warning("action=stop running_reconciles=%d grace_s=%g", left, grace)
        return left == 0
