"""Drift: notice within seconds when someone changes or deletes what gitferry
applied, and let a reconcile that would change nothing cost nothing.

After each successful apply the pipeline records a baseline per sync: every
object it applied, with its uid and the fields gitferry's field manager owns
(its server-side-apply entry in `managedFields`). Watches on those objects'
kinds (metadata only, filtered by gitferry's labels: `kube.watch.Watcher`)
report every change; a change matters only when it touches gitferry's fields:

- someone edits a field gitferry manages (`kubectl edit`, a merge patch, another
  applier with --force-conflicts): the API server moves that field to the other
  manager, so gitferry's entry loses it — drift;
- the object is deleted, or deleted and created again (a new uid) — drift;
- a controller writes status, or someone adds a label or annotation git does not
  set: gitferry's entry is unchanged — nothing happens.

Drift requests a reconcile of the owning sync (debounced), which puts git's
values back. Someone who keeps taking the same fields back (an HPA against
`replicas`, a mutating webhook) is corrected with backoff, and one Warning Event
names the other field manager and the fields, so the user can fix the cause.

`unchanged(key, revision, generation)` is the no-op test: the revision and
spec are the ones last applied, every watch is in sync and every object still
carries the fields gitferry gave it. Then the reconcile reads and writes
nothing; a full verification (dry-run of every object) still runs every
`full_verify_interval` as a safety net, as it does for kinds that cannot be
watched (no list/watch permission) — their syncs keep the interval's full
reconcile.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .api import SyncKey
from .constants import FIELD_MANAGER, LABEL_SYNC_NAME, LABEL_SYNC_NAMESPACE
from .kube import ObjRef
from .kube.managedfields import apply_fields_json, field_paths, owners

log = logging.getLogger("gitferry.drift")

# A burst of watch events (a rollout touching an object several times) makes one
# reconcile, this many seconds after the first.
DEBOUNCE_SECONDS = 0.5
# Corrections of one object's fields taken by one field manager within
# FIGHT_WINDOW before backoff starts: that manager keeps changing it.
FIGHT_THRESHOLD = 3
# Who "took" a deleted object: deletions in a row are a fight too (a controller
# garbage-collecting what git declares), though no field manager says who.
DELETED_BY = "(deleted)"
FIGHT_WINDOW = 300.0
MAX_BACKOFF = 300.0
# Events held per sync while its reconcile applies (beyond: the next full
# verification finds what they would have said).
MAX_HELD = 10000


def _version(value: Any) -> int | None:
    """A resourceVersion as an integer (etcd's revision), or None."""
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


class ObjectMeta(Protocol):
    """What the watch cache knows of one object (kube.watch.Meta)."""

    @property
    def uid(self) -> str: ...

    @property
    def fields(self) -> str | None: ...

    @property
    def deleting(self) -> bool: ...

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def ref(self) -> ObjRef: ...


class Cache(Protocol):
    """The watch cache (kube.watch.Watcher) as drift uses it."""

    def watch(self, group: str, kind: str) -> None: ...

    def retain(self, kinds: Collection[tuple[str, str]]) -> None: ...

    def synced(self, group: str, kind: str) -> bool: ...

    def get(self, ref: ObjRef) -> ObjectMeta | None: ...


@dataclass
class Baseline:
    """What one sync's last successful apply left: per object its uid and
    gitferry's fields (canonical JSON), and when it was last fully verified."""

    revision: str
    generation: int
    objects: dict[ObjRef, tuple[str, str | None]]
    verified_at: float  # time.monotonic() of the last full (dry-run) verification


@dataclass
class Fight:
    """Repeated corrections of one object: when, by whom (a field manager, or
    DELETED_BY for a deletion), and which fields were taken. A fight is one
    manager taking fields back again and again: two people's unrelated edits
    of one object are two corrections, never a fight. `open`: it drifted from
    its current baseline already (one correction is due; more events before
    the correction are the same drift)."""

    times: dict[str, list[float]] = field(default_factory=dict)
    open: bool = False
    managers: set[str] = field(default_factory=set)
    paths: set[str] = field(default_factory=set)
    warned: set[str] = field(default_factory=set)  # managers a Warning named


class Drift:
    """Baselines of every sync, fed by watch events; thread-safe.

    `request(key, why)` asks for a reconcile (the scheduler's thread-safe door);
    it is called from drift's own timer thread, never from a watch thread."""

    def __init__(
        self,
        cache: Cache | None,
        request: Callable[[SyncKey, str], None],
        full_verify_interval: float = 3600.0,
    ) -> None:
        self.cache = cache
        self.request = request
        self.full_verify_interval = full_verify_interval
        self._baselines: dict[SyncKey, Baseline] = {}
        self._fights: dict[tuple[SyncKey, ObjRef], Fight] = {}
        self._warnings: dict[SyncKey, list[str]] = {}
        self._due: list[tuple[float, str, SyncKey]] = []  # heap of (when, why, key)
        self._pending: dict[SyncKey, float] = {}
        self._dirty: set[SyncKey] = set()  # syncs asked to reconcile for drift
        # Events of syncs whose reconcile is applying, judged when it ends.
        self._buffers: dict[SyncKey, list[tuple[str, ObjectMeta, list[Mapping[str, Any]]]]] = {}
        self._lock = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="drift", daemon=True)
        self._thread.start()

    # --- what the pipeline tells -----------------------------------------------
    def record(
        self,
        key: SyncKey,
        revision: str,
        generation: int,
        applied: Mapping[ObjRef, Mapping[str, Any]],
    ) -> None:
        """After a successful apply: `applied` maps each object to what the API
        server returned (ChangeSet.live). Starts the watches of their kinds."""
        objects = {
            ref: (
                str((obj.get("metadata") or {}).get("uid", "")),
                apply_fields_json(
                    (obj.get("metadata") or {}).get("managedFields") or [], FIELD_MANAGER
                ),
            )
            for ref, obj in applied.items()
        }
        versions = {
            ref: _version((obj.get("metadata") or {}).get("resourceVersion"))
            for ref, obj in applied.items()
        }
        with self._lock:
            self._baselines[key] = Baseline(revision, generation, objects, time.monotonic())
            for (k, _), fight in self._fights.items():
                if k == key:
                    fight.open = False  # corrected: the next drift is a new round
            held = self._buffers.pop(key, [])
        if self.cache is not None:  # watches only start here; they stop in forget()
            for group, kind in sorted({(r.group, r.kind) for r in objects}):
                self.cache.watch(group, kind)
        # Changes made while the apply ran: those newer than what the apply left
        # are someone else's, and drift.
        for type_, meta, managed in held:
            applied_version = versions.get(meta.ref)
            seen = _version(getattr(meta, "resource_version", None))
            if applied_version is not None and seen is not None and seen > applied_version:
                self.on_event(type_, meta, managed)

    def applying(self, key: SyncKey) -> None:
        """The sync's reconcile is about to write: its own writes are no drift.
        Events of its objects are held until `record` (or `abandon`) judges
        them against what the apply left."""
        with self._lock:
            self._buffers[key] = []

    def abandon(self, key: SyncKey) -> None:
        """The apply failed (no `record`): the held events are judged against
        the old baseline."""
        with self._lock:
            held = self._buffers.pop(key, [])
        for type_, meta, managed in held:
            self.on_event(type_, meta, managed)

    def forget(self, key: SyncKey) -> None:
        """A deleted sync (or one whose reconcile must verify in full next time)."""
        with self._lock:
            self._baselines.pop(key, None)
            self._warnings.pop(key, None)
            self._pending.pop(key, None)
            self._dirty.discard(key)
            self._buffers.pop(key, None)
            for k in [k for k in self._fights if k[0] == key]:
                del self._fights[k]
        if self.cache is not None:  # kinds no sync holds any more stop being watched
            self.cache.retain(self.kinds())

    def kinds(self) -> set[tuple[str, str]]:
        """Every kind some baseline holds: the watches to keep."""
        with self._lock:
            return {(r.group, r.kind) for b in self._baselines.values() for r in b.objects}

    def unchanged(self, key: SyncKey, revision: str, generation: int) -> bool:
        """True when a reconcile of `revision` at `generation` would change
        nothing: the baseline is of them and was fully verified less than
        full_verify_interval ago, every watch is in sync, and every object
        still has its uid and gitferry's fields."""
        if self.cache is None:
            return False
        with self._lock:
            base = self._baselines.get(key)
            if base is None or (base.revision, base.generation) != (revision, generation):
                return False
            if time.monotonic() - base.verified_at > self.full_verify_interval:
                return False
            objects = dict(base.objects)
        for ref, (uid, fields) in objects.items():
            if not self.cache.synced(ref.group, ref.kind):
                return False
            meta = self.cache.get(ref)
            if meta is None or meta.uid != uid or meta.deleting or meta.fields != fields:
                return False
        return True

    def take_dirty(self, key: SyncKey) -> bool:
        """True once after drift asked for a reconcile of `key`: that reconcile
        must apply (even one that would only look at health)."""
        with self._lock:
            if key in self._dirty:
                self._dirty.discard(key)
                return True
            return False

    def warnings(self, key: SyncKey) -> list[str]:
        """Warnings about fights over this sync's objects, not yet posted (each once)."""
        with self._lock:
            return self._warnings.pop(key, [])

    # --- what the watches tell ---------------------------------------------------
    def on_watch_event(self, event: Any) -> None:
        """A kube.watch.WatchEvent (watch thread)."""
        self.on_event(event.type, event.meta, event.managed_fields)

    def on_event(
        self, type_: str, meta: ObjectMeta, managed_fields: Iterable[Mapping[str, Any]]
    ) -> None:
        """A watch event (watch thread): drift when an object of a baseline was
        deleted, replaced, or lost fields gitferry manages."""
        labels = meta.labels
        name, namespace = labels.get(LABEL_SYNC_NAME), labels.get(LABEL_SYNC_NAMESPACE)
        if not name or not namespace:
            return
        key = SyncKey(namespace, name)
        with self._lock:
            held = self._buffers.get(key)
            if held is not None:  # its reconcile is applying: judged at record()
                if len(held) < MAX_HELD:
                    held.append((type_, meta, list(managed_fields)))
                return
            base = self._baselines.get(key)
            known = base.objects.get(meta.ref) if base else None
        if known is None:
            return
        uid, fields = known
        if type_ == "DELETED" or meta.deleting or meta.uid != uid:
            self._drifted(
                key, meta.ref, "deleted" if type_ == "DELETED" else "replaced", set(), set()
            )
            return
        now_fields = meta.fields  # canonical JSON, as apply_fields_json writes it
        if now_fields == fields:
            return  # status, or fields only others own: not ours to correct
        lost = field_paths(fields or "{}") - field_paths(now_fields or "{}")
        if not lost:
            # gitferry's own later apply (more fields), seen before its baseline.
            return
        takers = {m for path in lost for m in owners(list(managed_fields), path)}
        self._drifted(key, meta.ref, "changed", lost, takers)

    def _drifted(
        self, key: SyncKey, ref: ObjRef, how: str, lost: set[str], takers: set[str]
    ) -> None:
        now = time.monotonic()
        with self._lock:
            fight = self._fights.setdefault((key, ref), Fight())
            if fight.open:
                return  # the same drift again (the controller's status writes): one correction
            fight.open = True
            n, first = 0, now
            for who in takers or {DELETED_BY}:
                times = [t for t in fight.times.get(who, ()) if now - t < FIGHT_WINDOW] + [now]
                fight.times[who] = times
                if len(times) > n:
                    n, first = len(times), times[0]
                if len(times) > FIGHT_THRESHOLD and who != DELETED_BY:
                    fight.managers.add(who)
            fight.paths |= lost
            delay = DEBOUNCE_SECONDS
            if n > FIGHT_THRESHOLD:
                delay = min(MAX_BACKOFF, DEBOUNCE_SECONDS * 2 ** (n - FIGHT_THRESHOLD + 2))
                delay *= random.uniform(0.9, 1.1)
                new = fight.managers - fight.warned
                if new:  # each manager that is backed off is named, once
                    fight.warned |= new
                    self._warnings.setdefault(key, []).append(
                        f"{ref} is changed again and again by field manager(s) "
                        f"{', '.join(sorted(new))} ({', '.join(sorted(fight.paths)[:5])}; "
                        f"{n} times in {int(now - first)}s): gitferry puts git's values back "
                        "with backoff; remove these fields from git, or stop the other manager"
                    )
            when = now + delay
            if key in self._pending and self._pending[key] <= when:
                return  # a reconcile is already due sooner
            self._pending[key] = when
            heapq.heappush(self._due, (when, how, key))
            self._lock.notify()
        log.info("sync=%s action=drift object=%s how=%s fields=%s managers=%s delay_s=%.1f",
                 key, ref, how, ",".join(sorted(lost)[:5]), ",".join(sorted(takers)), delay)  # fmt: skip

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(timeout=2.0)

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._closed and (not self._due or self._due[0][0] > time.monotonic()):
                    self._lock.wait(
                        timeout=None if not self._due else self._due[0][0] - time.monotonic()
                    )
                if self._closed:
                    return
                when, how, key = heapq.heappop(self._due)
                if self._pending.get(key) != when:
                    continue  # superseded by a sooner request
                del self._pending[key]
                self._dirty.add(key)
            try:
                self.request(key, f"drift ({how})")
            except Exception:
                log.exception("sync=%s action=drift-request", key)
