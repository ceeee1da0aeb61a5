"""Asynchronous delivery: a bounded queue per destination, drained by a worker
thread of its own while it holds anything, each item tried up to `attempts`
times with exponential backoff, each attempt bounded by a timeout.

`Outbox.put` never blocks and never fails: the caller (a reconcile) only
enqueues. When the queue is full the oldest item is dropped and counted, as a
chat message about an old revision is worth less than one about the newest.
Items of one outbox go out one at a time, in order: a commit status `pending`
never overtakes the `success` that follows it.

A send that overruns its timeout is abandoned, not killed (Python cannot stop a
thread): its thread ends when its own socket timeouts fire, and the item counts
as a failed attempt. A send that answers after being abandoned may therefore
deliver twice; the senders' own timeouts (Apprise's socket timeouts, the forge
client's) are set below the attempt's, so this stays rare.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from .errors import NotifyError

log = logging.getLogger("gitferry.notify")

T = TypeVar("T")
Outcome = Literal["delivered", "failed", "dropped"]


@dataclass(frozen=True)
class Policy:
    """How hard one outbox tries: queue bound, attempts per item, backoff (base
    doubled after each failed attempt, capped), seconds per attempt."""

    capacity: int = 100
    attempts: int = 5
    base_delay: float = 2.0
    max_delay: float = 60.0
    timeout: float = 15.0


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): base,
    2·base, 4·base, … never more than `cap`."""
    return float(min(cap, base * 2 ** min(max(attempt - 1, 0), 30)))


@dataclass(frozen=True)
class Result(Generic[T]):
    """What became of one item: delivered, failed after `attempts` (with the last
    error, safe to show), or dropped from a full queue unsent."""

    outcome: Outcome
    item: T
    attempts: int = 0
    error: str = ""


def run_with_timeout(fn: Callable[[], None], timeout: float) -> None:
    """Run `fn` on a thread of its own and wait up to `timeout` seconds; raise
    what it raised, or a retryable NotifyError when it did not finish in time."""
    box: list[BaseException | None] = []

    def target() -> None:
        try:
            fn()
            box.append(None)
        except BaseException as e:  # handed to the caller's thread
            box.append(e)

    thread = threading.Thread(target=target, name="gitferry-notify-send", daemon=True)
    thread.start()
    thread.join(timeout)
    if not box:
        raise NotifyError(f"no answer within {timeout:g}s")
    if box[0] is not None:
        raise box[0]


class Outbox(Generic[T]):
    """One destination's queue. `send(item)` delivers one item or raises
    NotifyError; `on_result` hears how each item ended (on the worker thread)."""

    def __init__(
        self,
        name: str,
        send: Callable[[T], None],
        policy: Policy,
        on_result: Callable[[Result[T]], None],
    ) -> None:
        self.name = name
        self._send = send
        self.policy = policy
        self._on_result = on_result
        self._queue: deque[T] = deque()
        self._lock = threading.Condition()
        self._worker: threading.Thread | None = None
        self._closed = threading.Event()
        self.dropped = 0

    def put(self, item: T) -> None:
        """Enqueue `item`; never blocks. A full queue drops its oldest item."""
        dropped: T | None = None
        with self._lock:
            if self._closed.is_set():
                return
            if len(self._queue) >= self.policy.capacity:
                dropped = self._queue.popleft()
                self.dropped += 1
            self._queue.append(item)
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._drain, name=f"gitferry-outbox-{self.name}", daemon=True
                )
                self._worker.start()
        if dropped is not None:
            log.warning("outbox=%s action=drop reason=queue-full dropped_total=%d", self.name,
                        self.dropped)  # fmt: skip
            self._tell(Result("dropped", dropped))

    @property
    def pending(self) -> int:
        """Items waiting (not counting the one being sent)."""
        with self._lock:
            return len(self._queue)

    def idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or being sent; False when `timeout` ran out."""
        with self._lock:
            return self._lock.wait_for(lambda: self._worker is None, timeout)

    def close(self) -> None:
        """Stop: queued items are dropped unsent (uncounted), a backoff in progress
        ends now, an attempt in flight finishes on its own."""
        with self._lock:
            self._closed.set()
            self._queue.clear()

    def _drain(self) -> None:
        while True:
            with self._lock:
                if self._closed.is_set() or not self._queue:
                    self._worker = None
                    self._lock.notify_all()
                    return
                item = self._queue.popleft()
            self._deliver(item)

    def _deliver(self, item: T) -> None:
        p = self.policy
        for attempt in range(1, p.attempts + 1):
            try:
                run_with_timeout(lambda: self._send(item), p.timeout)
            except NotifyError as e:
                error = e.message
                retry = e.retryable and attempt < p.attempts
            except Exception as e:  # a bug: its text could carry anything, so only its type
                error = f"internal error: {type(e).__name__}"
                retry = False
            else:
                self._tell(Result("delivered", item, attempt))
                return
            if not retry:
                self._tell(Result("failed", item, attempt, error))
                return
            delay = backoff(attempt, p.base_delay, p.max_delay)
            log.info("outbox=%s action=retry attempt=%d in_s=%g error=%s", self.name, attempt,
                     delay, error)  # fmt: skip
            if self._closed.wait(delay):
                return

    def _tell(self, result: Result[T]) -> None:
        try:
            self._on_result(result)
        except Exception as e:
            log.exception("outbox=%s action=result error=%s", self.name, type(e).__name__)
