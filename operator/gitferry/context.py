"""What every reconcile shares: clients, the git cache, settings, and what each
sync's git held at its last render (so that syncs can hand objects over)."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from .api import InventoryEntry, Sync, SyncKey, SyncStatus, sync_path
from .deadline import Deadline, DeadlineExceeded
from .drift import Drift
from .errors import ShuttingDown
from .events import EventRecorder
from .kube import ChangeSet, Discovery, Kube, KubeError, ObjRef
from .metrics import Metrics
from .render.files import KUSTOMIZATION_FILES
from .reports import Reporter, SyncReport, publish
from .settings import Settings
from .source import GitSource, RevisionInfo
from .status import StatusWriter
from .syncs import SyncCache


@dataclass
class Wait:
    """A health check in progress: the revision and generation it judges, until
    when (time.monotonic()), which objects it waits for and which are healthy."""

    revision: str
    generation: int
    until: float
    targets: tuple[ObjRef, ...]
    healthy: frozenset[ObjRef] = frozenset()
    # When git was last asked (time.monotonic()): a waiting sync asks once per interval.
    fetched_at: float = 0.0
    # What the apply wrote, for the report once the revision is healthy.
    changes: ChangeSet | None = None
    # Who changed what in the revision (subject, author, paths), for that report too.
    info: RevisionInfo | None = None


class SyncLock:
    """A lock that can be weakly referenced (threading.Lock cannot)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> SyncLock:
        self._lock.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()


@dataclass
class Context:
    kube: Kube
    discovery: Discovery
    source: GitSource
    settings: Settings
    status: StatusWriter
    events: EventRecorder
    metrics: Metrics = field(default_factory=Metrics)
    # The latest body of each sync (Kopf's events, gitferry's own writes).
    syncs: SyncCache = field(default_factory=SyncCache)
    # Drift detection and the no-op test (drift.py); None: every reconcile verifies in full.
    drift: Drift | None = None
    # Secret data read for git credentials, by (namespace, name, identity): (when, data).
    _secrets: dict[tuple[str, str, str], tuple[float, dict[str, str]]] = field(default_factory=dict)
    # Subscribers to SyncReports (chat notifications, commit statuses): they enqueue only.
    reporters: list[Reporter] = field(default_factory=list)
    _last_warning: dict[SyncKey, str] = field(default_factory=dict)
    # What each sync's git held at its last render: decides hand-overs.
    _last_render: dict[SyncKey, frozenset[str]] = field(default_factory=dict)
    # One lock per sync, alive while someone holds or waits for it: the map never
    # grows with every sync ever seen, and two threads always share one lock.
    _sync_locks: weakref.WeakValueDictionary[SyncKey, SyncLock] = field(
        default_factory=weakref.WeakValueDictionary
    )
    # Consecutive failed reconciles per sync: the retry backs off exponentially.
    _failures: dict[SyncKey, int] = field(default_factory=dict)
    # Since when (time.monotonic()) each sync has waited for a busy repository.
    _waiting: dict[SyncKey, float] = field(default_factory=dict)
    # Containers already reported as kept for what git declares inside them.
    _deferred: dict[SyncKey, frozenset[str]] = field(default_factory=dict)
    # Health checks in progress (spec.wait, spec.healthChecks).
    _waits: dict[SyncKey, Wait] = field(default_factory=dict)
    # Who depends on whom (learnt from dependents' reconciles): a sync that becomes
    # Ready wakes its dependents at once.
    _dependents: dict[SyncKey, set[SyncKey]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Renders running at once (settings.max_concurrent_renders): bounds memory.
    _render_slots: threading.BoundedSemaphore | None = None
    # Set when the operator begins to stop: no stage starts after it.
    stopping: threading.Event = field(default_factory=threading.Event)
    # Push webhooks (receiver.py): when (time.monotonic()) a push last named each
    # sync, until a fetch heard the remote since; and whether each sync's last
    # render read only files under its spec.path.
    _poked: dict[SyncKey, float] = field(default_factory=dict)
    _confined: dict[SyncKey, bool] = field(default_factory=dict)

    def render_slot(self, deadline: Deadline) -> threading.BoundedSemaphore:
        """One of max_concurrent_renders, acquired (release it); DeadlineExceeded
        when none frees up in time."""
        with self._lock:
            if self._render_slots is None:
                self._render_slots = threading.BoundedSemaphore(
                    self.settings.max_concurrent_renders
                )
            slots = self._render_slots
        if not slots.acquire(timeout=deadline.remaining("render, waiting for a render slot")):
            deadline.remaining("render, waiting for a render slot")
            raise DeadlineExceeded("render, waiting for a render slot")
        return slots

    def check_running(self, stage: str) -> None:
        """Raise ShuttingDown before `stage` once the operator is stopping."""
        if self.stopping.is_set():
            raise ShuttingDown(f"the operator is stopping; {stage} did not start")

    def sync_lock(self, key: SyncKey) -> SyncLock:
        """Held by a reconcile and by the finalizer of one sync: they never overlap."""
        with self._lock:
            lock = self._sync_locks.get(key)
            if lock is None:
                lock = self._sync_locks[key] = SyncLock()
            return lock

    def forget(self, key: SyncKey) -> None:
        """A deleted sync's memory must not judge a new one of the same name."""
        with self._lock:
            self._last_render.pop(key, None)
            self._last_warning.pop(key, None)
            self._failures.pop(key, None)
            self._waiting.pop(key, None)
            self._deferred.pop(key, None)
            self._waits.pop(key, None)
            self._dependents.pop(key, None)
            for dependents in self._dependents.values():
                dependents.discard(key)
            self._poked.pop(key, None)
            self._secrets = {k: v for k, v in self._secrets.items() if k[0] != key.namespace}
            self._confined.pop(key, None)
        self.metrics.forget_sync(key.namespace, key.name)  # its series go with it
        if self.drift is not None:
            self.drift.forget(key)

    def report(self, report: SyncReport) -> None:
        """Publish a SyncReport to every subscriber (reports.py); never blocks."""
        publish(self.reporters, report)

    def wait_of(self, key: SyncKey) -> Wait | None:
        """The health check in progress for a sync, if any."""
        with self._lock:
            return self._waits.get(key)

    def set_wait(self, key: SyncKey, wait: Wait | None) -> None:
        """Start or update (a Wait) or end (None) a sync's health check."""
        with self._lock:
            if wait is None:
                self._waits.pop(key, None)
            else:
                self._waits[key] = wait

    def depends(self, key: SyncKey, dependencies: tuple[SyncKey, ...]) -> None:
        """Record that `key` waits for `dependencies` (replacing what it waited for)."""
        with self._lock:
            for dependents in self._dependents.values():
                dependents.discard(key)
            for dep in dependencies:
                self._dependents.setdefault(dep, set()).add(key)

    def dependents(self, key: SyncKey) -> tuple[SyncKey, ...]:
        """The syncs known to wait for `key`."""
        with self._lock:
            return tuple(sorted(self._dependents.get(key, ()), key=str))

    def remember_render(self, key: SyncKey, ids: set[str]) -> None:
        with self._lock:
            self._last_render[key] = frozenset(ids)

    def sync_body(
        self, key: SyncKey, deadline: Deadline | None = None, cached: bool = False
    ) -> dict[str, Any] | None:
        """The sync as the API server has it now; None when it is gone or being
        deleted. `cached`: from the sync cache when it knows the sync (no request)."""
        body = self.syncs.get(key) if cached else None
        if body is None:
            try:
                body = self.kube.request("GET", sync_path(key), deadline=deadline)
            except KubeError as e:
                if e.not_found:
                    return None
                raise
            self.syncs.observe(body)
        return None if (body.get("metadata") or {}).get("deletionTimestamp") else body

    def credentials(
        self, namespace: str, name: str, service_account: str | None, max_age: float,
        read: Callable[[], dict[str, str]],
    ) -> dict[str, str]:  # fmt: skip
        """A Secret's data as `read()` gives it, kept up to `max_age` seconds per
        (namespace, name, identity): a reconcile that git's shared cache answers
        makes no request for its credentials either. 0 reads afresh."""
        key = (namespace, name, service_account or "")
        now = time.monotonic()
        with self._lock:
            held = self._secrets.get(key)
        if held is not None and max_age > 0 and now - held[0] < max_age:
            return held[1]
        data = read()
        with self._lock:
            self._secrets[key] = (now, data)
        return data

    def owner_ids(self, owner: SyncKey, deadline: Deadline | None = None) -> frozenset[str] | None:
        """The inventory ids sync `owner`'s git holds: its last render here, else its
        inventory; None when that sync is gone or being deleted."""
        body = self.sync_body(owner, deadline)
        if body is None:
            return None
        with self._lock:
            rendered = self._last_render.get(owner)
        if rendered is not None:
            return rendered
        return frozenset(e.id for e in SyncStatus.from_dict(body.get("status")).inventory or ())

    def can_hand_over(self, claimant: SyncKey, ref: ObjRef) -> bool:
        """Hand an object over only to a sync whose last render includes it; when
        that render is unknown here (a restart), hand over: it deletes less."""
        if self.sync_body(claimant) is None:
            return False
        with self._lock:
            rendered = self._last_render.get(claimant)
        return rendered is None or ref.id in rendered

    def client_for(self, sync: Sync) -> Kube:
        """Apply and prune as the sync's ServiceAccount (impersonated), else as the
        operator's default one, else as the operator itself. One connection pool
        serves every identity (kube.Kube.as_user)."""
        return self.client_as(sync.key.namespace, sync.spec.service_account_name)

    def client_as(self, namespace: str, service_account: str | None) -> Kube:
        """The client for a sync of `namespace` naming `service_account` (or none):
        also for a sync whose spec does not parse, which must never fall back to
        the operator's own identity."""
        sa = service_account or self.settings.default_service_account
        user = f"system:serviceaccount:{namespace}:{sa}" if sa else None
        return self.kube.as_user(user)

    def warn_once(self, key: SyncKey, message: str) -> bool:
        """True the first time a failure message is seen for a sync in a row:
        a failure retried every 30s raises one Warning, not one per retry."""
        with self._lock:
            if self._last_warning.get(key) == message:
                return False
            self._last_warning[key] = message
            return True

    def start_waiting(self, key: SyncKey) -> None:
        """The sync's reconcile was deferred: a busy repository or host."""
        with self._lock:
            self._waiting.setdefault(key, time.monotonic())

    def waiting_since(self, key: SyncKey) -> float | None:
        """When the sync began to wait for a busy repository (None: it does not)."""
        with self._lock:
            return self._waiting.get(key)

    def succeeded(self, key: SyncKey) -> None:
        """A reconcile succeeded: the next failure warns again and retries soon."""
        with self._lock:
            self._waiting.pop(key, None)
            self._last_warning.pop(key, None)
            self._failures.pop(key, None)

    def retry_after(self, key: SyncKey, retry: float, interval: float) -> float:
        """Seconds until the retry of a failed reconcile: `retry` after the first
        failure, doubling with each failure in a row, capped at the larger of
        `retry` and min(interval, 10 minutes) (controller-runtime's exponential
        backoff per item, bounded by the sync's own cadence)."""
        with self._lock:
            self._waiting.pop(key, None)  # the wait ended, in a failure
            n = self._failures[key] = self._failures.get(key, 0) + 1
        cap = max(retry, min(interval, 600.0))
        return float(min(retry * 2 ** min(n - 1, 30), cap))

    def new_deferrals(
        self, key: SyncKey, deferred: list[tuple[InventoryEntry, str]]
    ) -> list[tuple[InventoryEntry, str]]:
        """The deferred prunes not yet reported for this sync (one Warning each,
        not one per reconcile: a no-op reconcile writes nothing)."""
        ids = frozenset(e.id for e, _ in deferred)
        with self._lock:
            seen = self._deferred.get(key, frozenset())
            self._deferred[key] = ids
        return [(e, why) for e, why in deferred if e.id not in seen]

    def poke(self, key: SyncKey) -> None:
        """A push webhook named this sync: its next fetch must hear the remote
        since now (one answer, got after the push, serves every sync it named)."""
        with self._lock:
            self._poked[key] = time.monotonic()

    def poked(self, key: SyncKey) -> float | None:
        """When a push webhook last named this sync and no fetch has heard the remote
        since (time.monotonic()), or None."""
        with self._lock:
            return self._poked.get(key)

    def unpoke(self, key: SyncKey, at: float | None) -> None:
        """A fetch heard the remote after the poke of `at`; a newer poke stays."""
        with self._lock:
            if at is not None and self._poked.get(key) == at:
                del self._poked[key]

    def remember_sources(self, key: SyncKey, sources: Iterable[str]) -> None:
        """The files the sync's objects came from at its last render. A kustomization
        may read beyond spec.path (`../base`): such a sync is never skipped by a push
        that touches none of its path."""
        confined = not any(PurePosixPath(s).name in KUSTOMIZATION_FILES for s in sources)
        with self._lock:
            self._confined[key] = confined

    def confined(self, key: SyncKey) -> bool:
        """Whether the sync's last render here read only files under its spec.path;
        False when unknown (no render since the operator started)."""
        with self._lock:
            return self._confined.get(key, False)
