"""healthCheckExprs are a tenant's code: they run in worker processes, bounded.

The reviewer's expression (a string multiplied by ten nine times over) is
Unknown after the timeout while the operator's memory stays where it was and
its other threads run on; one past the memory limit is Unknown naming the
limit; a killed worker is replaced; close() leaves no process behind; and a
normal expression still takes a fraction of a millisecond more than in-process.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gitferry.health import (
    MAX_TOTAL_CHARS,
    CelLimits,
    ExprError,
    Health,
    Status,
    assess,
    close,
    compile_exprs,
    configure,
    sandbox,
)

MiB = 1024 * 1024
# The reviewer's: 231 characters that ask for 10**11 bytes.
RUNAWAY = "'aaaaaaaaaa'" + ".replace('a','aaaaaaaaaa')" * 9 + ".size() > 0 && false"
# CPU without memory: 3 ms a step on a 1 MiB string, 2000 steps.
SLOW = "status.xs.all(x, status.s.indexOf('b') < 0)"
GROUP = "example.com/v1"


def widget(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": GROUP,
        "kind": "Widget",
        "metadata": {"name": "w", "namespace": "apps", "generation": 1},
        "status": {"observedGeneration": 1, **status},
    }


def exprs(current: str, **more: str) -> Any:
    return compile_exprs([{"apiVersion": GROUP, "kind": "Widget", "current": current, **more}])


DONE = exprs("status.phase == 'Done'")


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def alive(pid: int) -> bool:
    """Running, or a zombie nobody reaped: either way still in /proc."""
    return Path(f"/proc/{pid}").exists()


def state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return ""


def children() -> list[int]:
    """This process's children that are CEL workers (zombies included)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            cmd = Path(f"/proc/{d}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == os.getpid() and (
            b"celworker" in cmd or not cmd
        ):
            found.append(int(d))
    return found


@pytest.fixture(autouse=True)
def fresh_pool() -> Iterator[None]:
    configure(CelLimits())
    yield
    close()


class Watch:
    """A ticker thread that also samples this process's RSS every 10 ms."""

    def __init__(self) -> None:
        self.ticks = 0
        self.peak = self.base = rss_kib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.ticks += 1
            self.peak = max(self.peak, rss_kib())

    def __enter__(self) -> Watch:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.elapsed = time.monotonic() - self._started


def timed(f: Callable[[], Health]) -> tuple[Health, float]:
    started = time.monotonic()
    health = f()
    return health, time.monotonic() - started


def test_the_reviewers_runaway_expression_is_unknown_after_the_timeout() -> None:
    assert assess(widget(phase="Done"), DONE).status is Status.CURRENT  # a worker is up
    [first] = sandbox.pool().pids()
    runaway = exprs(RUNAWAY)
    with Watch() as watch:
        health, took = timed(lambda: assess(widget(), runaway))
    print(f"\nrunaway: {took:.2f}s, {watch.ticks} ticks, RSS +{watch.peak - watch.base} KiB")
    # Whichever limit it reaches first: the 2 s or the worker's memory.
    assert health.status == Status.UNKNOWN
    assert health.message in (
        "healthCheckExprs[0].current: evaluation exceeded 2s; not evaluated again for 60s",
        "healthCheckExprs[0].current: evaluation exceeded the 256 MiB memory limit; "
        "not evaluated again for 60s",
    ), health.message
    assert took < 3.0
    # The operator's memory stays put, and its other threads run on meanwhile.
    assert watch.peak - watch.base < 4 * 1024
    assert watch.ticks >= 0.5 * took / 0.01
    # The worker was killed by its pid and reaped; the next evaluation has a new one.
    assert not alive(first)
    assert assess(widget(phase="Done"), DONE).status is Status.CURRENT
    assert sandbox.pool().pids() != [first]


def test_a_set_that_reached_a_limit_is_not_evaluated_again_for_a_while() -> None:
    slow = exprs(SLOW)
    big = widget(s="a" * MiB, xs=list(range(2000)))
    first, took = timed(lambda: assess(big, slow))
    assert first.status is Status.UNKNOWN and 2.0 <= took < 3.0
    again, took = timed(lambda: assess(widget(s="", xs=[]), slow))
    assert again == first and took < 0.05
    # Other expressions are not held back.
    assert assess(widget(phase="Done"), DONE).status is Status.CURRENT


def test_an_expression_past_the_memory_limit_is_unknown_naming_the_limit() -> None:
    configure(CelLimits(timeout=30, memory_bytes=128 * MiB))
    runaway = exprs(RUNAWAY, inProgress="status.phase == 'Waiting'")
    health, took = timed(lambda: assess(widget(phase="Ready"), runaway))
    print(f"\nmemory limit: {took:.2f}s")
    assert health == Health(
        Status.UNKNOWN,
        "healthCheckExprs[0].current: evaluation exceeded the 128 MiB memory limit; "
        "not evaluated again for 60s",
    )
    assert took < 10
    assert sandbox.pool().pids() == []
    assert assess(widget(phase="Done"), DONE).status is Status.CURRENT


def test_a_worker_killed_from_outside_is_replaced_unnoticed() -> None:
    assert assess(widget(phase="Done"), DONE).status is Status.CURRENT
    [pid] = sandbox.pool().pids()
    # Should the container run out of memory, the kernel kills a worker first.
    assert Path(f"/proc/{pid}/oom_score_adj").read_text().strip() == "1000"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while state(pid) not in ("Z", "") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert assess(widget(phase="Done"), DONE).status is Status.CURRENT
    assert sandbox.pool().pids() not in ([], [pid])
    assert not alive(pid)  # reaped, not left a zombie


def test_the_workers_serve_threads_at_once_and_close_leaves_no_process() -> None:
    slow = exprs(SLOW)
    big = widget(s="a" * MiB, xs=list(range(2000)))
    verdicts: list[Health] = []
    threads = [threading.Thread(target=lambda: verdicts.append(assess(big, slow)))] + [
        threading.Thread(target=lambda: verdicts.append(assess(widget(phase="Done"), DONE)))
        for _ in range(8)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The runaway holds one worker; the other serves everyone else.
    assert sorted(v.status for v in verdicts) == [Status.CURRENT] * 8 + [Status.UNKNOWN]
    assert time.monotonic() - started < 3.0
    pids = sandbox.pool().pids()
    assert len(pids) == 1 and children() == pids
    close()
    assert sandbox.pool().pids() == []
    assert not any(alive(p) for p in pids)
    assert children() == []
    # And a later evaluation starts a fresh worker.
    assert assess(widget(phase="Done"), DONE).status is Status.CURRENT
    assert len(children()) == 1


def test_an_object_too_large_is_unknown_unevaluated() -> None:
    health, took = timed(lambda: assess(widget(phase="Done", blob="x" * (2 * MiB)), DONE))
    assert health == Health(
        Status.UNKNOWN,
        "healthCheckExprs[0].current: not evaluated: the object is larger than 2 MiB as JSON",
    )
    assert sandbox.pool().pids() == []


def test_a_worker_that_cannot_start_is_unknown_with_why(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    script = tmp_path / "celworker.py"
    script.write_text('print(\'{"failed": "ImportError: no CEL runtime"}\')\n')
    monkeypatch.setattr(sandbox, "_SCRIPT", script)
    assert assess(widget(phase="Done"), DONE) == Health(
        Status.UNKNOWN,
        "healthCheckExprs[0].current: not evaluated: the CEL worker did not start: "
        "ImportError: no CEL runtime",
    )
    monkeypatch.setattr(sandbox, "_SCRIPT", tmp_path / "missing.py")
    health = assess(widget(phase="Done"), DONE)
    assert health.message.endswith("did not start: exit code 2")
    assert sandbox.pool().pids() == [] and children() == []
    monkeypatch.undo()
    assert assess(widget(phase="Done"), DONE).status is Status.CURRENT  # not tripped


def test_the_worker_stops_itself_at_its_cpu_limit() -> None:
    """RLIMIT_CPU, the backstop for a worker no one kills: SIGXCPU after 1 s of CPU."""
    proc = subprocess.Popen(
        [sys.executable, "-I", "-B", str(sandbox._SCRIPT), str(512 * MiB), "1"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={},
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert json.loads(proc.stdout.readline()) == {"ready": True}
        proc.stdin.write(json.dumps({"sources": [SLOW]}).encode() + b"\n")
        proc.stdin.write(json.dumps({"status": {"s": "a" * MiB, "xs": list(range(2000))}}).encode())
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        assert proc.wait(10) == -signal.SIGXCPU
    finally:
        proc.kill()
        proc.wait()


def test_the_worker_imports_only_the_cel_runtime_and_the_standard_library() -> None:
    tree = ast.parse(sandbox._SCRIPT.read_text())
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        for name in (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
    }
    assert imported == {"__future__", "json", "resource", "signal", "sys", "time", "typing",
                        "cel_expr_python"}  # fmt: skip


def test_too_many_characters_of_expressions_in_all_are_refused() -> None:
    long = "true && " * 255 + "true"
    entries = [
        {"apiVersion": f"g{i}.example.com/v1", "current": long, "failed": long}
        for i in range(MAX_TOTAL_CHARS // (2 * len(long)) + 1)
    ]
    with pytest.raises(ExprError, match=r"^healthCheckExprs: more than 65536 characters"):
        compile_exprs(entries)
    # The largest spec of the worst expression parses in a fraction of a second.
    worst = ("[" + "1," * 1022 + "1]")[:2048]
    entries = [
        {"apiVersion": f"g{i}.example.com/v1", "current": worst}
        for i in range(MAX_TOTAL_CHARS // len(worst))
    ]
    started = time.monotonic()
    compile_exprs(entries)
    print(f"\nworst spec parsed in {time.monotonic() - started:.3f}s")


def test_overhead_per_evaluation() -> None:
    """Not a bound: the numbers, printed (pytest -s)."""
    from cel_expr_python import cel

    from gitferry.health.exprs import _env

    obj = widget(phase="Done", conditions=[{"type": "Ready", "status": "True"}] * 5)
    source = "status.conditions.filter(e, e.type == 'Ready').all(e, e.status == 'True')"
    checked = exprs(source)
    assert assess(obj, checked).status is Status.CURRENT
    n = 500
    started = time.perf_counter()
    for _ in range(n):
        assess(obj, checked)
    worker = (time.perf_counter() - started) / n
    program = _env().compile(source, disable_check=True)
    variables = dict(obj)
    started = time.perf_counter()
    for _ in range(n):
        assert program.eval(data=variables).type() == cel.Type.BOOL
    inline = (time.perf_counter() - started) / n
    print(f"\nper evaluation: {worker * 1e3:.3f} ms in a worker, {inline * 1e3:.3f} ms in-process")
