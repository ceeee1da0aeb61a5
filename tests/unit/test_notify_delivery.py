"""The outbox: put never blocks, items go out in order, a failing send is retried
with exponential backoff and then reported, a full queue drops its oldest item,
a send that hangs is abandoned at its timeout."""

from __future__ import annotations

import threading
import time

from gitferry.notify import NotifyError
from gitferry.notify.delivery import Outbox, Policy, Result, backoff, run_with_timeout

FAST = Policy(capacity=10, attempts=3, base_delay=0.01, max_delay=0.04, timeout=2.0)


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(n, 2.0, 60.0) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]
    assert backoff(10_000, 1.0, 5.0) == 5.0


class Sink:
    def __init__(self, fail: int = 0, retryable: bool = True, hang: float = 0.0) -> None:
        self.fail, self.retryable, self.hang = fail, retryable, hang
        self.tries: list[str] = []
        self.results: list[Result[str]] = []
        self.lock = threading.Lock()

    def send(self, item: str) -> None:
        with self.lock:
            self.tries.append(item)
            failing = self.fail > 0
            self.fail -= 1
        if self.hang:
            time.sleep(self.hang)
        if failing:
            raise NotifyError(f"refused {item}", self.retryable)

    def tell(self, result: Result[str]) -> None:
        with self.lock:
            self.results.append(result)


def _outbox(sink: Sink, policy: Policy = FAST) -> Outbox[str]:
    return Outbox("test", sink.send, policy, sink.tell)


def test_items_go_out_in_order() -> None:
    sink = Sink()
    box = _outbox(sink)
    for i in range(5):
        box.put(f"m{i}")
    assert box.idle(5)
    assert sink.tries == [f"m{i}" for i in range(5)]
    assert [(r.outcome, r.item, r.attempts) for r in sink.results] == [
        ("delivered", f"m{i}", 1) for i in range(5)
    ]


def test_a_failing_send_is_retried_then_delivered() -> None:
    sink = Sink(fail=2)
    box = _outbox(sink)
    box.put("m")
    assert box.idle(5)
    assert sink.tries == ["m", "m", "m"]
    assert [(r.outcome, r.attempts) for r in sink.results] == [("delivered", 3)]


def test_a_send_that_keeps_failing_is_reported_with_its_error() -> None:
    sink = Sink(fail=99)
    box = _outbox(sink)
    box.put("m")
    assert box.idle(5)
    (result,) = sink.results
    assert (result.outcome, result.attempts, result.error) == ("failed", 3, "refused m")


def test_a_refusal_that_cannot_pass_is_not_retried() -> None:
    sink = Sink(fail=99, retryable=False)
    box = _outbox(sink)
    box.put("m")
    assert box.idle(5)
    assert sink.tries == ["m"] and sink.results[0].outcome == "failed"


def test_a_full_queue_drops_its_oldest_item() -> None:
    taken, gate = threading.Event(), threading.Event()
    sent: list[str] = []
    results: list[Result[str]] = []

    def send(item: str) -> None:
        taken.set()
        gate.wait(5)
        sent.append(item)

    box: Outbox[str] = Outbox("test", send, Policy(capacity=2, attempts=1, timeout=10),
                              results.append)  # fmt: skip
    box.put("m0")
    assert taken.wait(5)  # the worker holds m0; m1..m4 queue behind it
    start = time.monotonic()
    for i in range(1, 5):
        box.put(f"m{i}")
    assert time.monotonic() - start < 0.5  # put never waits for a send
    gate.set()
    assert box.idle(5)
    assert box.dropped == 2
    assert [r.item for r in results if r.outcome == "dropped"] == ["m1", "m2"]
    assert sent == ["m0", "m3", "m4"]


def test_a_send_that_hangs_is_abandoned_at_its_timeout() -> None:
    sink = Sink(hang=1.0)
    box = _outbox(sink, Policy(attempts=1, timeout=0.1))
    box.put("m")
    assert box.idle(5)
    (result,) = sink.results
    assert result.outcome == "failed" and result.error == "no answer within 0.1s"


def test_run_with_timeout_hands_back_what_the_send_raised() -> None:
    def boom() -> None:
        raise NotifyError("nope", retryable=False)

    try:
        run_with_timeout(boom, 1)
    except NotifyError as e:
        assert e.message == "nope" and not e.retryable
    else:
        raise AssertionError("no error")


def test_close_ends_a_backoff_and_drops_what_waits() -> None:
    sink = Sink(fail=99)
    box = _outbox(sink, Policy(attempts=5, base_delay=30, timeout=1))
    box.put("m1")
    box.put("m2")
    time.sleep(0.1)
    box.close()
    assert box.idle(2)
    assert sink.tries == ["m1"]
    box.put("m3")  # a closed outbox takes nothing
    assert box.idle(1) and sink.tries == ["m1"]
