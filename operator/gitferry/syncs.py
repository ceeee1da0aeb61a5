"""The latest body of each sync, so that a reconcile reads its sync without a
request (issue 11: a no-op reconcile makes no API request at all).

Fed by the watch the adapter already has (Kopf's events for every sync) and by
gitferry's own writes to a sync (the status and ApplySet-parent patches return
the object as stored): a reconcile never reads a copy older than what the
previous reconcile wrote. Bodies are kept by the larger resourceVersion, read
as an integer — etcd's revision, which every kube-apiserver backed by etcd
gives; a version that is not an integer is treated as newer (the safe side:
a later event always wins).
"""

from __future__ import annotations

import threading
from typing import Any

from .api import SyncKey
from .constants import ANNOTATION_REQUESTED_AT


def _key(body: dict[str, Any]) -> SyncKey:
    meta = body.get("metadata") or {}
    return SyncKey(str(meta.get("namespace", "")), str(meta.get("name", "")))


def _version(body: dict[str, Any]) -> int | None:
    rv = (body.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(rv))
    except (TypeError, ValueError):
        return None


class SyncCache:
    """Sync bodies by key; thread-safe. `get` returns None when the cache does
    not know the sync (the caller then asks the API server).

    `live`: a watch feeds the cache (the operator's runtime). A cache nobody
    feeds (a test or the benchmark driving the pipeline directly) holds
    nothing, so that a change made behind its back is never missed."""

    def __init__(self, live: bool = False) -> None:
        self.live = live
        self._bodies: dict[SyncKey, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def observe(self, body: dict[str, Any]) -> None:
        """A body seen in a watch event or returned by a write; an older one
        (smaller resourceVersion) than the one held is ignored."""
        if (
            not self.live
            or not isinstance(body, dict)
            or not (body.get("metadata") or {}).get("name")
        ):
            return
        key = _key(body)
        new = _version(body)
        with self._lock:
            held = self._bodies.get(key)
            old = _version(held) if held else None
            if held is not None and new is not None and old is not None and new < old:
                return
            # Only the UID-holding, kind-bearing whole object is a body (a status
            # patch returns one; a partial answer would be skipped above).
            self._bodies[key] = body

    def remove(self, key: SyncKey, body: dict[str, Any] | None = None) -> None:
        """The sync is gone (a DELETED event), unless a newer body was seen since."""
        with self._lock:
            held = self._bodies.get(key)
            if held is None:
                return
            if body is not None:
                gone, old = _version(body), _version(held)
                if gone is not None and old is not None and gone < old:
                    return
            del self._bodies[key]

    def get(self, key: SyncKey) -> dict[str, Any] | None:
        with self._lock:
            return self._bodies.get(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._bodies)


class Triggers:
    """What in a sync's watch events asks for a reconcile now: a new generation
    (its spec changed) or a new `gitferry.dev/requested-at`.

    gitferry judges these itself from the watch events instead of letting Kopf
    diff each body against a copy it keeps in an annotation: Kopf writes that
    annotation whenever any label or annotation changes (the ApplySet parent's
    included), one more PATCH of the sync each time (issue 11: a new sync cost 3
    of Kopf's patches). Only Kopf's events feed it, never gitferry's own writes:
    a status write that returns the new generation must not hide the change.

    A sync seen for the first time triggers nothing here: its worker starts and
    reconciles it (at once when its generation or request is unhandled)."""

    def __init__(self) -> None:
        self._seen: dict[SyncKey, tuple[int, str]] = {}
        self._lock = threading.Lock()

    def observe(self, event_type: str | None, body: dict[str, Any]) -> str | None:
        """The reason to reconcile now ("update", "requested-at"), or None."""
        key = _key(body)
        if event_type == "DELETED":
            with self._lock:
                self._seen.pop(key, None)
            return None
        meta = body.get("metadata") or {}
        try:
            generation = int(meta.get("generation") or 0)
        except (TypeError, ValueError):
            generation = 0
        requested = str((meta.get("annotations") or {}).get(ANNOTATION_REQUESTED_AT) or "")
        with self._lock:
            before = self._seen.get(key)
            self._seen[key] = (generation, requested)
        if before is None:
            return None
        if generation != before[0]:
            return "update"
        if requested and requested != before[1]:
            return "requested-at"
        return None

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)
