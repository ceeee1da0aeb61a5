"""The scheduler: requests coalesce, one sync never overlaps itself, a user's
request goes ahead of periodic work, and close() lets running reconciles end."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass

import pytest

from gitferry.scheduler import Scheduler


@dataclass(frozen=True)
class Out:
    next_in: float = 3600.0
    wake: tuple[str, ...] = ()


class Recorder:
    """A reconciler that records calls and can be held inside a reconcile."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.active: dict[str, int] = {}
        self.overlaps = 0
        self.release = threading.Event()
        self.release.set()
        self.lock = threading.Lock()
        self.entered = threading.Semaphore(0)

    def __call__(self, key: str) -> Out:
        with self.lock:
            self.calls.append(key)
            self.active[key] = self.active.get(key, 0) + 1
            if self.active[key] > 1:
                self.overlaps += 1
        self.entered.release()
        self.release.wait(10)
        with self.lock:
            self.active[key] -= 1
        return Out()


async def until(cond: object, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.01)


def test_requests_during_a_reconcile_coalesce_into_one_follow_up() -> None:
    async def story() -> None:
        rec = Recorder()
        sched: Scheduler[str] = Scheduler(rec, 2)
        stop = asyncio.Event()
        rec.release.clear()
        worker = asyncio.create_task(sched.run("a", stop))
        await until(lambda: rec.calls == ["a"])  # the first reconcile, held
        for why in ("spec", "requested-at", "webhook", "spec"):
            sched.request("a", why)
        rec.release.set()
        await until(lambda: len(rec.calls) == 2)
        await asyncio.sleep(0.2)
        assert rec.calls == ["a", "a"]  # four requests, one follow-up
        assert rec.overlaps == 0
        stop.set()
        await worker
        sched.close(1)

    asyncio.run(story())


def test_one_sync_never_overlaps_itself_while_others_run_concurrently() -> None:
    async def story() -> None:
        rec = Recorder()
        sched: Scheduler[str] = Scheduler(rec, 3)
        stop = asyncio.Event()
        rec.release.clear()
        workers = [asyncio.create_task(sched.run(k, stop)) for k in ("a", "b", "c")]
        await until(lambda: sorted(rec.calls) == ["a", "b", "c"])  # three at once
        for _ in range(20):
            sched.request("a", "spam")
        rec.release.set()
        await until(lambda: rec.calls.count("a") == 2)
        assert rec.overlaps == 0
        stop.set()
        await asyncio.gather(*workers)
        sched.close(1)

    asyncio.run(story())


def test_a_requested_reconcile_goes_ahead_of_periodic_ones() -> None:
    async def story() -> None:
        order: list[str] = []
        gate = threading.Event()

        def reconcile(key: str) -> Out:
            order.append(key)
            if key == "blocker":
                gate.wait(10)
            return Out(next_in=0.05 if key.startswith("p") else 3600.0)

        sched: Scheduler[str] = Scheduler(reconcile, 1)
        stop = asyncio.Event()
        blocker = asyncio.create_task(sched.run("blocker", stop))
        await until(lambda: order == ["blocker"])  # the only thread is busy
        periodic = [asyncio.create_task(sched.run(f"p{i}", stop)) for i in range(5)]
        await asyncio.sleep(0.05)
        order.clear()
        # The five new workers' first runs are requested too; let them through once.
        gate.set()
        await until(lambda: {f"p{i}" for i in range(5)} <= set(order))
        gate.clear()
        order.clear()
        sched.request("blocker", "hold the thread")
        await until(lambda: order[:1] == ["blocker"])
        await asyncio.sleep(0.2)  # periodic reconciles of p0..p4 queue up meanwhile
        user = asyncio.create_task(sched.run("user", stop))
        await asyncio.sleep(0.1)  # the user's request is queued behind the busy thread
        order.clear()
        gate.set()
        await until(lambda: "user" in order)
        assert order[0] == "user", order  # ahead of every queued periodic run
        stop.set()
        await asyncio.gather(blocker, user, *periodic)
        sched.close(1)

    asyncio.run(story())


def test_close_waits_for_running_reconciles_and_takes_no_new_work() -> None:
    async def story() -> None:
        rec = Recorder()
        sched: Scheduler[str] = Scheduler(rec, 1)
        stop = asyncio.Event()
        rec.release.clear()
        worker = asyncio.create_task(sched.run("a", stop))
        await until(lambda: rec.calls == ["a"])
        loop = asyncio.get_running_loop()
        closing = loop.run_in_executor(None, sched.close, 5.0)
        await asyncio.sleep(0.2)
        assert not closing.done()  # still waiting for the running reconcile
        rec.release.set()
        assert await closing is True
        sched.request("a", "after close")
        await asyncio.wait_for(worker, 5)  # the worker ends instead of running again
        assert rec.calls == ["a"]

    asyncio.run(story())


def test_close_gives_up_after_the_grace_period() -> None:
    async def story() -> None:
        rec = Recorder()
        sched: Scheduler[str] = Scheduler(rec, 1)
        rec.release.clear()
        stop = asyncio.Event()
        worker = asyncio.create_task(sched.run("a", stop))
        await until(lambda: rec.calls == ["a"])
        started = time.monotonic()
        assert await asyncio.get_running_loop().run_in_executor(None, sched.close, 0.3) is False
        assert time.monotonic() - started < 2
        rec.release.set()
        stop.set()
        await asyncio.wait_for(worker, 5)

    asyncio.run(story())


def test_zero_threads_is_refused() -> None:
    with pytest.raises(ValueError):
        Scheduler(lambda k: Out(), 0)
