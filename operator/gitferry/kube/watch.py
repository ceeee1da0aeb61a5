"""Watches: a cache of what an applier owns, by kind, kept current by the API server.

A library: it knows nothing of GitRepositorySync. The caller names the kinds to
watch, a label selector (`gitferry.dev/sync-name`: "has this label") and its
field manager; the cache holds, per object, only a small `Meta` — its
reference, uid, resourceVersion, the labels the caller keeps, and the field set
of the manager's Apply entry as canonical JSON — so its memory is bounded by the
number of objects, never by their size.

How one kind is watched (one thread per kind, `watch-<Kind>[.<group>]`):

- LIST cluster-wide, metadata only (`PartialObjectMetadataList`), paged; then
  WATCH from the list's resourceVersion (`PartialObjectMetadata`, bookmarks on),
  reading events line by line; when the server ends a watch (its timeout, about
  five minutes) it is opened again from the last event's or bookmark's version,
  and nothing is missed.
- The version is too old (410 Gone, as an HTTP status or an ERROR event), a
  watch event is larger than `max_line_bytes`, or a line cannot be read as an
  event: LIST again. A relist reports what changed while nobody watched: an
  object that differs from the cache as MODIFIED (ADDED when new), one that
  vanished as DELETED (from the cached Meta), then `on_relist`.
- The connection breaks, 5xx, 429: reconnect with exponential backoff (0.5 s to
  30 s, jittered) from the last version; a 410 there leads to a relist.
- 403: the kind is `forbidden: …` (logged once) and tried again after 5 s,
  doubling up to `forbidden_retry` (a restarted API server refuses until its
  authorizer has loaded RBAC). A kind the API does not serve (yet: a CRD not installed),
  or one without list and watch, is `unwatchable: …` and looked up again once
  discovery knows it (someone else's refresh) or after `unwatchable_retry`.

The first LIST of a kind reports nothing (the caller knows what it applied);
`synced()` says when the cache can be trusted: listed, and the watch connected.
Callbacks run on the watch thread and must be quick.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .client import Kube, Stream
from .discovery import Discovery, Resource
from .errors import KubeError, LineTooLong
from .managedfields import apply_fields_json
from .refs import ObjRef

log = logging.getLogger("gitferry.kube.watch")

LIST_ACCEPT = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
WATCH_ACCEPT = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"

GroupKind = tuple[str, str]

ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"

_NO_LABELS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Meta:
    """What the cache keeps of one object: small on purpose (bounded memory)."""

    ref: ObjRef  # group, kind, namespace, name
    uid: str
    resource_version: str
    labels: Mapping[str, str]  # only the keys the Watcher keeps
    # Canonical JSON (sorted keys) of the fieldsV1 of the field manager's Apply
    # entry; None when the object has none.
    fields: str | None
    deleting: bool  # deletionTimestamp set

    @property
    def size(self) -> int:
        """Approximate bytes this Meta holds of its own: the length of its strings.
        Group, kind and label keys are shared by every object of a kind, and not
        counted; nor is Python's overhead per object (see WatchStats.bytes)."""
        n = len(self.ref.namespace) + len(self.ref.name) + len(self.uid)
        n += len(self.resource_version) + len(self.fields or "")
        return n + sum(len(v) for v in self.labels.values())


@dataclass(frozen=True)
class WatchEvent:
    type: str  # "ADDED" | "MODIFIED" | "DELETED"
    meta: Meta
    # The object's whole managedFields in this event (to name another manager);
    # not kept in the cache. Empty for a DELETED made up by a relist.
    managed_fields: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class WatchStats:
    watches: int  # kinds watched, whatever their state
    objects: int  # Metas held
    # Approximate bytes held: the sum of Meta.size, the strings kept. Python's own
    # objects add about 800 bytes an object on top (measured by the e2e test: 1000
    # ConfigMaps, 219 B each here, 1046 B each traced).
    bytes: int
    events: int  # watch events seen (bookmarks not counted) since the start
    relists: int  # LISTs after the first one of a kind, since the start


@dataclass(frozen=True)
class WatchOptions:
    page_size: int = 500  # LIST `limit`
    watch_timeout: float = 300.0  # WATCH `timeoutSeconds`, stretched by up to 20 %
    max_line_bytes: int = 4 * 1024 * 1024  # one watch event; larger: dropped, relist
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    forbidden_retry: float = 300.0
    unwatchable_retry: float = 60.0
    connect_timeout: float = 10.0


class _Relist(Exception):
    """What the watch missed only a LIST can tell: its resourceVersion is too old
    (410 Gone), or an event was lost (unreadable)."""


class _Backoff:
    """Exponential delays from `low` to `high`, each drawn in [d/2, d] (jitter)."""

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high, self.failures = low, high, 0

    def next(self) -> float:
        d = min(self.high, self.low * 2**self.failures)
        self.failures = min(self.failures + 1, 32)
        return random.uniform(d / 2, d)

    def reset(self) -> None:
        self.failures = 0


class _Watch:
    """One kind's watch: its thread, cache and state. The cache is written by its
    thread only; readers take the Watcher's lock."""

    def __init__(self, group: str, kind: str) -> None:
        self.gk: GroupKind = (group, kind)
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.cache: dict[ObjRef, Meta] = {}
        self.bytes = 0
        self.state = "listing"
        self.synced = False
        self.listed = False  # a LIST has completed once
        self.rv: str | None = None  # watch from here; None: LIST first
        self.stream: Stream | None = None
        self.resource: Resource | None = None
        self.refresh_discovery = False  # a 404: the kind may be gone
        self.last_refresh = 0.0
        self.forbidden_in_row = 0  # 403s since the last synced watch


class Watcher:
    """Metadata-only watches of the objects matching `label_selector`, by kind."""

    def __init__(
        self,
        kube: Kube,
        discovery: Discovery,
        *,
        label_selector: str,
        field_manager: str,
        keep_labels: Collection[str],
        on_event: Callable[[WatchEvent], None],
        on_relist: Callable[[GroupKind], None] | None = None,
        options: WatchOptions | None = None,
    ) -> None:
        self._kube = kube.as_user(None)  # the watches run as the operator itself
        self._discovery = discovery
        self._selector = label_selector
        self._manager = field_manager
        self._keep = tuple(sorted(set(keep_labels)))
        self._on_event = on_event
        self._on_relist = on_relist
        self.options = options or WatchOptions()
        self._lock = threading.Lock()
        self._watches: dict[GroupKind, _Watch] = {}
        self._closed = False
        self._events = 0
        self._relists = 0

    # --- the caller's side --------------------------------------------------
    def watch(self, group: str, kind: str) -> None:
        """Start watching this kind; nothing when it is watched already (in any
        state) or the Watcher is closed."""
        with self._lock:
            if self._closed or (group, kind) in self._watches:
                return
            w = _Watch(group, kind)
            self._watches[w.gk] = w
            name = f"watch-{kind}.{group}" if group else f"watch-{kind}"
            w.thread = threading.Thread(target=self._run, args=(w,), name=name, daemon=True)
        log.info("action=watch kind=%s group=%s state=starting", kind, group)
        w.thread.start()

    def retain(self, kinds: Collection[GroupKind]) -> None:
        """Stop the watches of kinds not in `kinds` and drop their objects."""
        keep = set(kinds)
        with self._lock:
            gone = [w for gk, w in self._watches.items() if gk not in keep]
            for w in gone:
                del self._watches[w.gk]
        for w in gone:
            log.info("action=unwatch kind=%s group=%s objects=%d", w.gk[1], w.gk[0], len(w.cache))
            self._stop(w)

    def synced(self, group: str, kind: str) -> bool:
        """Whether the kind's first LIST is done and its watch connected (not
        relisting, backing off, forbidden or unwatchable)."""
        with self._lock:
            w = self._watches.get((group, kind))
            return w is not None and w.synced

    def get(self, ref: ObjRef) -> Meta | None:
        with self._lock:
            w = self._watches.get((ref.group, ref.kind))
            return w.cache.get(ref) if w is not None else None

    def objects(self, group: str, kind: str) -> list[Meta]:
        """Every cached object of a kind (empty when the kind is not watched)."""
        with self._lock:
            w = self._watches.get((group, kind))
            return list(w.cache.values()) if w is not None else []

    def kinds(self) -> dict[GroupKind, str]:
        """Each watched kind and its state: `synced`, `listing`, `backoff: <reason>`,
        `forbidden: <message>`, `unwatchable: <reason>`."""
        with self._lock:
            return {gk: w.state for gk, w in self._watches.items()}

    def stats(self) -> WatchStats:
        with self._lock:
            ws = list(self._watches.values())
            return WatchStats(
                watches=len(ws),
                objects=sum(len(w.cache) for w in ws),
                bytes=sum(w.bytes for w in ws),
                events=self._events,
                relists=self._relists,
            )

    def close(self, timeout: float = 5.0) -> None:
        """Stop every watch: open connections are shut at once (no waiting for a
        watch's timeout), threads joined for up to `timeout` seconds in all."""
        with self._lock:
            self._closed = True
            ws = list(self._watches.values())
            self._watches.clear()
        for w in ws:
            self._stop(w)
        end = time.monotonic() + timeout
        for w in ws:
            if w.thread is not None and w.thread is not threading.current_thread():
                w.thread.join(max(0.0, end - time.monotonic()))
        alive = [w.thread.name for w in ws if w.thread is not None and w.thread.is_alive()]
        if alive:
            log.warning("action=close watches-still-running=%s", ",".join(alive))

    def _stop(self, w: _Watch) -> None:
        w.stop.set()
        with self._lock:
            stream = w.stream
            w.synced = False
        if stream is not None:
            stream.abort()

    # --- one kind's thread --------------------------------------------------
    def _run(self, w: _Watch) -> None:
        backoff = _Backoff(self.options.backoff_min, self.options.backoff_max)
        relists_in_row = 0
        while not w.stop.is_set():
            res = self._resolve(w)
            if res is None:
                continue
            try:
                if w.rv is None:
                    self._set_state(w, "listing", synced=False)
                    if not self._list(w, res):
                        continue  # stopped meanwhile
                if self._watch_once(w, res):
                    backoff.reset()
                relists_in_row = 0
            except (_Relist, LineTooLong) as e:
                relists_in_row = self._relist(w, e, relists_in_row, backoff)
            except KubeError as e:
                if e.status == 410:  # a LIST's continue token or a watch's version
                    relists_in_row = self._relist(w, e, relists_in_row, backoff)
                else:
                    self._failed(w, e, backoff)
            except Exception as e:  # a bug: say so, and start over from a LIST
                log.exception("action=watch kind=%s group=%s result=error", w.gk[1], w.gk[0])
                w.rv = None
                self._pause(w, backoff.next(), f"backoff: {type(e).__name__}: {e}")
        self._set_state(w, "stopped", synced=False)

    def _relist(self, w: _Watch, why: Exception, in_row: int, backoff: _Backoff) -> int:
        """Too old (410 Gone), or an event lost: only a LIST knows what the watch
        missed. Returns how many relists in a row this makes."""
        w.rv = None
        log.info("action=relist kind=%s group=%s why=%s", w.gk[1], w.gk[0], why)
        if in_row >= 1:  # again at once: do not spin
            self._pause(w, backoff.next(), f"backoff: relisting again: {why}")
        return in_row + 1

    def _failed(self, w: _Watch, e: KubeError, backoff: _Backoff) -> None:
        kind, group = w.gk[1], w.gk[0]
        if e.status == 403:
            if not w.state.startswith("forbidden"):
                log.warning("action=watch kind=%s group=%s result=forbidden error=%s",
                            kind, group, e.message)  # fmt: skip
            w.rv = None  # nobody watched meanwhile: a LIST says what changed
            # 5 s, 10 s, … up to forbidden_retry: an API server that has just
            # started refuses until its authorizer has loaded RBAC.
            delay = min(self.options.forbidden_retry, 5.0 * 2**w.forbidden_in_row)
            w.forbidden_in_row += 1
            self._pause(w, delay, f"forbidden: {e.message}")
        elif e.status == 404:  # the kind is gone (its CRD deleted) or moved version
            w.refresh_discovery = True
            w.rv = None
            self._pause(w, backoff.next(), f"backoff: {e.message}")
        else:  # connection errors, 5xx, 429, other ERROR events: resume from w.rv
            delay = backoff.next()
            if not w.state.startswith("backoff"):
                log.warning("action=watch kind=%s group=%s result=disconnected retry_s=%.1f error=%s",
                            kind, group, delay, e.message)  # fmt: skip
            self._pause(w, delay, f"backoff: {e.message}")

    def _pause(self, w: _Watch, seconds: float, state: str) -> None:
        self._set_state(w, state, synced=False)
        w.stop.wait(seconds)

    def _set_state(self, w: _Watch, state: str, *, synced: bool) -> None:
        with self._lock:
            was = w.state
            w.state, w.synced = state, synced and not w.stop.is_set()
        if synced:
            w.forbidden_in_row = 0
        if synced and was != "synced":
            log.info("action=watch kind=%s group=%s state=synced objects=%d",
                     w.gk[1], w.gk[0], len(w.cache))  # fmt: skip

    def _resolve(self, w: _Watch) -> Resource | None:
        """The kind's resource at its preferred version, or None after waiting
        (the kind is not served, or cannot be listed and watched)."""
        group, kind = w.gk
        res = None if w.refresh_discovery else self._discovery.for_group_kind(group, kind)
        # A 404 asks discovery at once (after its backoff); a kind never seen, at
        # most once per unwatchable_retry.
        stale = time.monotonic() - w.last_refresh >= self.options.unwatchable_retry
        if w.refresh_discovery or (res is None and stale):
            w.last_refresh = time.monotonic()
            w.refresh_discovery = False
            try:
                self._discovery.refresh()
            except (KubeError, RuntimeError, ValueError) as e:
                log.warning("action=discovery kind=%s group=%s error=%s", kind, group, e)
            res = self._discovery.for_group_kind(group, kind)
        if res is not None and {"list", "watch"} <= res.verbs:
            w.resource = res
            return res
        why = "not served" if res is None else "cannot be listed and watched"
        if w.state != f"unwatchable: {why}":
            log.info("action=watch kind=%s group=%s state=unwatchable why=%s", kind, group, why)
        self._set_state(w, f"unwatchable: {why}", synced=False)
        # Back as soon as someone's refresh of discovery serves it, else after a while.
        end = time.monotonic() + self.options.unwatchable_retry
        while not w.stop.wait(min(1.0, max(0.0, end - time.monotonic()))):
            found = self._discovery.for_group_kind(group, kind)
            if (found is not None and {"list", "watch"} <= found.verbs) or time.monotonic() >= end:
                break
        return None

    def _list(self, w: _Watch, res: Resource) -> bool:
        """LIST every page; swap the cache; report the differences (not the first
        time). False when the watch was stopped meanwhile."""
        first = not w.listed
        new: dict[ObjRef, Meta] = {}
        changed: list[WatchEvent] = []
        cont = ""
        rv = ""
        while True:
            query = {"labelSelector": self._selector, "limit": str(self.options.page_size)}
            if cont:
                query["continue"] = cont
            doc = self._kube.request("GET", res.path(), query=query, accept=LIST_ACCEPT)
            rv = rv or str((doc.get("metadata") or {}).get("resourceVersion") or "")
            for item in doc.get("items") or []:
                md = item.get("metadata") or {}
                meta = self._meta(w.gk, md)
                new[meta.ref] = meta
                if first:
                    continue
                old = w.cache.get(meta.ref)
                mf = list(md.get("managedFields") or [])
                if old is None:
                    changed.append(WatchEvent(ADDED, meta, mf))
                elif old.uid != meta.uid:  # deleted and made again meanwhile
                    changed += [WatchEvent(DELETED, old), WatchEvent(ADDED, meta, mf)]
                elif old.resource_version != meta.resource_version:
                    changed.append(WatchEvent(MODIFIED, meta, mf))
            cont = str((doc.get("metadata") or {}).get("continue") or "")
            if not cont or w.stop.is_set():
                break
        if w.stop.is_set():
            return False
        gone = [WatchEvent(DELETED, m) for ref, m in w.cache.items() if ref not in new]
        with self._lock:
            w.cache = new
            w.bytes = sum(m.size for m in new.values())
            w.rv, w.listed = rv, True
            if not first:
                self._relists += 1
        log.info("action=list kind=%s group=%s objects=%d first=%s changed=%d deleted=%d",
                 w.gk[1], w.gk[0], len(new), first, len(changed), len(gone))  # fmt: skip
        if first:
            return True
        for ev in changed + gone:
            self._emit(w, ev)
        if self._on_relist is not None and not w.stop.is_set():
            try:
                self._on_relist(w.gk)
            except Exception:
                log.exception("action=on-relist kind=%s group=%s", w.gk[1], w.gk[0])
        return True

    def _watch_once(self, w: _Watch, res: Resource) -> bool:
        """One WATCH from w.rv until the server ends it (True when it ran long
        enough, or delivered anything, to count as healthy). Raises _Relist,
        LineTooLong, KubeError."""
        if w.rv is None:
            return False
        timeout = int(self.options.watch_timeout * random.uniform(1.0, 1.2))
        query = {
            "watch": "true",
            "labelSelector": self._selector,
            "resourceVersion": w.rv,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout),
        }
        started = time.monotonic()
        stream = self._kube.stream(
            res.path(),
            query=query,
            accept=WATCH_ACCEPT,
            connect_timeout=self.options.connect_timeout,
            read_timeout=timeout + 30.0,
        )
        with self._lock:
            w.stream = stream
        healthy = False
        try:
            if w.stop.is_set():  # stopped while connecting: _stop saw no stream
                return False
            self._set_state(w, "synced", synced=True)
            for line in stream.lines(self.options.max_line_bytes):
                if w.stop.is_set():
                    return False
                self._handle(w, line)
                healthy = True
        except KubeError:
            if w.stop.is_set():  # our own abort()
                return False
            raise
        finally:
            with self._lock:
                w.stream = None
            stream.close()
        if not healthy and time.monotonic() - started < 1.0 and not w.stop.is_set():
            raise KubeError(0, "WatchEnded", "the watch ended as soon as it began")
        return True

    def _handle(self, w: _Watch, line: bytes) -> None:
        try:
            ev = json.loads(line)
        except ValueError:
            raise _Relist("a watch line is not JSON; its event is lost") from None
        kind = ev.get("type") if isinstance(ev, dict) else None
        obj = ev.get("object") if isinstance(ev, dict) else None
        if not isinstance(obj, dict):
            raise _Relist("a watch event without an object; its event is lost")
        if kind == "ERROR":
            raw_code = obj.get("code")
            code = raw_code if isinstance(raw_code, int) else 0
            message = str(obj.get("message") or obj.get("reason") or "watch error")
            if code == 410:
                raise _Relist(message)
            raise KubeError(code, str(obj.get("reason") or "WatchError"), message)
        md = obj.get("metadata") or {}
        rv = str(md.get("resourceVersion") or "")
        if kind == "BOOKMARK":
            if rv:
                w.rv = rv
            return
        if kind not in (ADDED, MODIFIED, DELETED):
            log.warning("action=watch kind=%s group=%s unknown-event=%.40s", w.gk[1], w.gk[0], kind)
            return
        meta = self._meta(w.gk, md)
        with self._lock:
            if w.stop.is_set():
                return
            old = w.cache.pop(meta.ref, None)
            if old is not None:
                w.bytes -= old.size
            if kind != DELETED:
                w.cache[meta.ref] = meta
                w.bytes += meta.size
            if rv:
                w.rv = rv
            self._events += 1
        self._emit(w, WatchEvent(kind, meta, list(md.get("managedFields") or [])))

    def _emit(self, w: _Watch, ev: WatchEvent) -> None:
        if w.stop.is_set():
            return
        try:
            self._on_event(ev)
        except Exception:  # the caller's bug must not end the watch
            log.exception("action=on-event kind=%s group=%s", w.gk[1], w.gk[0])

    def _meta(self, gk: GroupKind, md: Mapping[str, Any]) -> Meta:
        labels = md.get("labels") or {}
        kept = {k: str(labels[k]) for k in self._keep if k in labels}
        namespace = sys.intern(str(md.get("namespace") or ""))  # few, shared
        return Meta(
            ref=ObjRef(gk[0], gk[1], namespace, str(md.get("name") or "")),
            uid=str(md.get("uid") or ""),
            resource_version=str(md.get("resourceVersion") or ""),
            labels=kept or _NO_LABELS,
            fields=apply_fields_json(md.get("managedFields") or [], self._manager),
            deleting=bool(md.get("deletionTimestamp")),
        )
