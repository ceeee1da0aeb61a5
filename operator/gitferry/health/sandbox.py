"""healthCheckExprs evaluated in worker processes, bounded in memory and time.

The expressions are a tenant's, and cel-cpp has no memory or cost limit and
holds the GIL while it evaluates: `'aaaaaaaaaa'` followed by eight
`.replace('a','aaaaaaaaaa')` took an in-process operator from 100 MB to 1.1 GB
and froze every thread for seconds. So they run in long-lived worker processes
(`celworker.py`, a plain script of its own that imports only the CEL runtime),
each with an address-space limit (RLIMIT_AS) and a CPU backstop (RLIMIT_CPU),
fed one request at a time through pipes, and waited for with a wall-clock
timeout. A worker that times out, reaches its memory limit or dies is killed
by its pid and reaped; the next evaluation starts a fresh one. The operator's
thread waits in poll(), without the GIL, so every other thread runs on.

A set of expressions that reached a limit is not evaluated again for
`COOLDOWN` seconds (the same Unknown is returned at once), so one tenant's
runaway expression costs one timeout a minute, not one per object per poll.

Workers start lazily (about 20 ms each) and `close()` ends them; judging never
raises.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("gitferry.health")

MiB = 1024 * 1024
_SCRIPT = Path(__file__).with_name("celworker.py")
# A worker's start: the interpreter and the CEL runtime (about 20 ms when idle).
START_TIMEOUT = 10.0
# How long a set of expressions that reached a limit is judged Unknown unevaluated.
COOLDOWN = 60.0
# Tripped sets remembered; the oldest is forgotten first.
MAX_TRIPPED = 1024
# A reply is a few words (the worker clips them); anything longer is a broken worker.
MAX_REPLY_BYTES = 64 * 1024


@dataclass(frozen=True)
class CelLimits:
    """What one evaluation may take (GITFERRY_CEL_TIMEOUT, GITFERRY_CEL_MEMORY_BYTES)
    and how many run at once (GITFERRY_CEL_WORKERS)."""

    timeout: float = 2.0
    memory_bytes: int = 256 * MiB
    workers: int = 2
    # The Kubernetes API stores objects up to about 1.5 MiB: a larger object
    # (as compact JSON) is not sent to a worker at all.
    max_object_bytes: int = 2 * MiB


@dataclass(frozen=True)
class CelError:
    """The expression failed: the CEL runtime's own words, unformatted."""

    text: str


@dataclass(frozen=True)
class NotBool:
    """The expression gave a value of another type (`list<dyn>`)."""

    type_name: str


Result = bool | CelError | NotBool


@dataclass(frozen=True)
class Stop:
    """The expression at index `at` was not evaluated to its end, and why
    (`evaluation exceeded 2s; …`)."""

    at: int
    reason: str


@dataclass(frozen=True)
class Run:
    """An evaluation of a set of expressions: a result per expression evaluated, in
    order (up to the first that is not false), and the Stop that cut it short."""

    results: tuple[Result, ...] = ()
    stop: Stop | None = None


class _Timeout(Exception):
    pass


class _OutOfMemory(Exception):
    pass


class _Gone(Exception):
    """The worker ended, or said something that is not the protocol."""


class _GoneBefore(_Gone):
    """The worker had ended before it read the request (killed from outside)."""


def _size(n: int) -> str:
    return f"{n / MiB:g} MiB" if n % (MiB // 4) == 0 else f"{n} bytes"


class _Worker:
    """One celworker process and its two pipes (both non-blocking)."""

    def __init__(self, limits: CelLimits) -> None:
        cpu = int(limits.timeout) + 3  # a backstop: the operator kills it at timeout
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-B", str(_SCRIPT), str(limits.memory_bytes), str(cpu)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={},  # nothing of the operator's environment
            cwd="/",
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in = self.proc.stdin.fileno()
        self._out = self.proc.stdout.fileno()
        os.set_blocking(self._in, False)
        os.set_blocking(self._out, False)
        self._buffer = b""
        try:
            ready = self._read(time.monotonic() + START_TIMEOUT)
        except (_Timeout, _Gone) as e:
            self.kill()
            raise _Gone(f"did not start: {str(e) or 'timed out'}") from None
        if ready != {"ready": True}:
            self.kill()
            raise _Gone(f"did not start: {ready.get('failed') or ready}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def evaluate(
        self, sources: Sequence[str], payload: bytes, deadline: float, results: list[Result]
    ) -> None:
        """Send one request and collect its replies into `results`; raises
        _Timeout, _OutOfMemory or _Gone (then `results` holds what came before)."""
        self._write(json.dumps({"sources": list(sources)}).encode() + b"\n", deadline)
        self._write(payload + b"\n", deadline)
        while len(results) < len(sources):
            reply = self._read(deadline)
            if reply.get("memory") is True:
                raise _OutOfMemory
            if isinstance(reply.get("value"), bool):
                results.append(reply["value"])
            elif isinstance(reply.get("error"), str):
                results.append(CelError(reply["error"]))
            elif isinstance(reply.get("type"), str):
                results.append(NotBool(reply["type"]))
            else:
                raise _Gone(f"an unexpected reply {str(reply)[:80]}")
            if results[-1] is not False:
                return

    def _write(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        poller = select.poll()
        poller.register(self._in, select.POLLOUT)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Timeout
            if not poller.poll(left * 1000):
                continue
            try:
                view = view[os.write(self._in, view) :]
            except BlockingIOError:
                continue
            except OSError:  # EPIPE: it had ended before it read everything
                raise _GoneBefore(self._ended()) from None

    def _read(self, deadline: float) -> dict[str, Any]:
        poller = select.poll()
        poller.register(self._out, select.POLLIN)
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_REPLY_BYTES:
                raise _Gone("a reply too long")
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Timeout
            if not poller.poll(left * 1000):
                continue
            try:
                chunk = os.read(self._out, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                raise _Gone(self._ended())
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            reply = json.loads(line)
        except ValueError:
            raise _Gone("a reply that is not JSON") from None
        if not isinstance(reply, dict):
            raise _Gone("a reply that is not an object")
        return reply

    def _ended(self) -> str:
        """How the process ended, once its output closed."""
        try:
            code = self.proc.wait(1.0)
        except subprocess.TimeoutExpired:
            self.kill()
            return "it closed its output"
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            if -code == signal.SIGXCPU:
                return f"{name}: its CPU time limit"
            return name
        return f"exit code {code}"

    def kill(self) -> None:
        """SIGKILL by pid (unless it is already reaped), then reap it."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()

    def close(self, grace: float = 1.0) -> None:
        """End of input: it exits by itself; killed if it has not within `grace`."""
        if self.proc.returncode is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(grace)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


class Pool:
    """Up to `limits.workers` CEL workers, one evaluation at a time each."""

    def __init__(self, limits: CelLimits | None = None) -> None:
        self.limits = limits or CelLimits()
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._workers: set[_Worker] = set()  # every live one, idle or busy
        self._slots = 0  # workers running or starting
        # Sets of expressions that reached a limit: until when, and the Stop.
        self._tripped: dict[tuple[str, ...], tuple[float, Stop]] = {}

    def pids(self) -> list[int]:
        with self._cond:
            return sorted(w.pid for w in self._workers)

    def evaluate(self, sources: Sequence[str], variables: Mapping[str, Any]) -> Run:
        """Evaluate `sources` in order with `variables` in scope, up to the first
        that is not false. Never raises: a limit reached is the Run's Stop."""
        key = tuple(sources)
        with self._cond:
            tripped = self._tripped.get(key)
            if tripped is not None and tripped[0] > time.monotonic():
                return Run((), tripped[1])
        try:
            payload = json.dumps(variables, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError, RecursionError) as e:
            return Run((), Stop(0, f"the object cannot be passed to CEL as JSON: {e}"))
        if len(payload) > self.limits.max_object_bytes:
            size = _size(self.limits.max_object_bytes)
            return Run((), Stop(0, f"not evaluated: the object is larger than {size} as JSON"))
        return self._run(key, payload)

    def _run(self, key: tuple[str, ...], payload: bytes) -> Run:
        timeout = self.limits.timeout
        results: list[Result] = []
        for attempt in (1, 2):
            try:
                worker = self._acquire(time.monotonic() + timeout)
            except _Timeout:
                return Run(
                    (), Stop(0, f"not evaluated: every CEL worker was busy for {timeout:g}s")
                )
            except _Gone as e:
                log.warning("action=cel-worker-start error=%s", e)
                return Run((), Stop(0, f"not evaluated: the CEL worker {e}"))
            try:
                worker.evaluate(key, payload, time.monotonic() + timeout, results)
            except _GoneBefore as e:
                self._release(worker, keep=False)
                if attempt == 1:
                    continue  # it had ended while idle (killed from outside): a fresh one
                reason = f"the CEL worker ended before it read the request ({e})"
            except _Timeout:
                self._release(worker, keep=False)
                reason = f"evaluation exceeded {timeout:g}s"
            except _OutOfMemory:
                self._release(worker, keep=False)
                reason = f"evaluation exceeded the {_size(self.limits.memory_bytes)} memory limit"
            except _Gone as e:
                self._release(worker, keep=False)
                reason = f"evaluation ended the CEL worker ({e})"
            except BaseException:
                self._release(worker, keep=False)
                raise
            else:
                self._release(worker, keep=True)
                return Run(tuple(results))
            log.info("action=cel-worker-replace pid=%s why=%s", worker.pid, reason)
            stop = Stop(len(results), f"{reason}; not evaluated again for {COOLDOWN:g}s")
            self._trip(key, stop)
            return Run(tuple(results), stop)
        raise AssertionError("unreachable: the second attempt returns")

    def _trip(self, key: tuple[str, ...], stop: Stop) -> None:
        """Remember, for COOLDOWN seconds, that this set reached a limit."""
        with self._cond:
            now = time.monotonic()
            for k in [k for k, (until, _) in self._tripped.items() if until <= now]:
                del self._tripped[k]
            while len(self._tripped) >= MAX_TRIPPED:
                del self._tripped[next(iter(self._tripped))]
            self._tripped[key] = (now + COOLDOWN, stop)

    def _acquire(self, deadline: float) -> _Worker:
        """An idle worker, else a new one while there are fewer than
        `limits.workers`, else wait for one until `deadline` (_Timeout)."""
        with self._cond:
            while True:
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive():
                        return worker
                    self._forget(worker)
                if self._slots < self.limits.workers:
                    self._slots += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _Timeout
                self._cond.wait(left)
        try:
            worker = _Worker(self.limits)
        except BaseException:
            with self._cond:
                self._slots -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._workers.add(worker)
        return worker

    def _release(self, worker: _Worker, keep: bool) -> None:
        if not keep:
            worker.kill()
        with self._cond:
            if keep and worker.alive() and worker in self._workers:
                self._idle.append(worker)
            else:
                self._forget(worker)
            self._cond.notify()

    def _forget(self, worker: _Worker) -> None:
        """Under the lock: a dead worker is reaped and gives its slot back (unless
        close() took it already)."""
        worker.kill()
        if worker in self._workers:
            self._workers.discard(worker)
            self._slots -= 1

    def close(self) -> None:
        """End every worker and reap it: an idle one at the end of its input, a
        busy one by SIGKILL (its evaluation becomes a Stop, and its own thread
        closes its pipes). The pool stays usable: a later evaluation starts a
        fresh worker."""
        with self._cond:
            idle, self._idle = self._idle, []
            busy = [w for w in self._workers if w not in idle]
            self._slots -= len(self._workers)
            self._workers.clear()
        for worker in idle:
            worker.close()
        for worker in busy:
            worker.proc.kill()  # by pid; Popen never signals a pid it has reaped
            worker.proc.wait()


_pool: Pool | None = None
_pool_lock = threading.Lock()


def pool() -> Pool:
    """The operator's pool: configured by `configure`, else with CelLimits()."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = Pool()
        return _pool


def configure(limits: CelLimits) -> None:
    """Use `limits` from now on (the workers of the old limits are ended)."""
    global _pool
    with _pool_lock:
        old, _pool = _pool, Pool(limits)
    if old is not None:
        old.close()


def close() -> None:
    """End every CEL worker; a later evaluation starts a fresh one."""
    with _pool_lock:
        current = _pool
    if current is not None:
        current.close()


atexit.register(close)
