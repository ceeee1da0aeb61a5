"""The sync cache keeps the newest body of each sync: a watch event older than
gitferry's own write never replaces it."""

from __future__ import annotations

from typing import Any

from gitferry.api import SyncKey
from gitferry.syncs import SyncCache, Triggers

KEY = SyncKey("apps", "web")


def body(rv: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "apps", "name": "web", "resourceVersion": rv},
            "status": status}  # fmt: skip


def test_newest_resource_version_wins() -> None:
    cache = SyncCache(live=True)
    assert cache.get(KEY) is None
    cache.observe(body("10", a=1))
    cache.observe(body("12", a=2))  # our own status write
    cache.observe(body("11", a=3))  # a watch event that was still on its way
    assert cache.get(KEY) == body("12", a=2)


def test_a_version_that_is_no_integer_counts_as_newer() -> None:
    cache = SyncCache(live=True)
    cache.observe(body("10", a=1))
    cache.observe(body("x", a=2))
    assert cache.get(KEY) == body("x", a=2)


def test_deleted_removes_unless_a_newer_body_was_seen() -> None:
    cache = SyncCache(live=True)
    cache.observe(body("12"))
    cache.remove(KEY, body("11"))
    assert cache.get(KEY) is not None
    cache.remove(KEY, body("13"))
    assert cache.get(KEY) is None and len(cache) == 0


def test_bodies_without_a_name_are_ignored() -> None:
    cache = SyncCache(live=True)
    cache.observe({"metadata": {}})
    cache.observe("nonsense")  # type: ignore[arg-type]
    assert len(cache) == 0


def test_a_cache_nobody_feeds_holds_nothing() -> None:
    cache = SyncCache()
    cache.observe(body("10"))
    assert cache.get(KEY) is None


def event(generation: int, requested: str | None = None) -> dict[str, Any]:
    notes = {"gitferry.dev/requested-at": requested} if requested else {}
    return {"metadata": {"namespace": "apps", "name": "web", "generation": generation,
                         "annotations": notes}}  # fmt: skip


def test_triggers_a_new_generation_and_a_new_request_only() -> None:
    triggers = Triggers()
    assert triggers.observe("ADDED", event(1)) is None  # its worker starts with it
    assert triggers.observe("MODIFIED", event(1)) is None  # a status write, a label
    assert triggers.observe("MODIFIED", event(2)) == "update"
    assert triggers.observe("MODIFIED", event(2, "t1")) == "requested-at"
    assert triggers.observe("MODIFIED", event(2, "t1")) is None  # asked once
    assert triggers.observe(None, event(2, "t1")) is None  # Kopf's relisting
    assert triggers.observe("MODIFIED", event(2)) is None  # the request removed
    assert triggers.observe("MODIFIED", event(3, "t2")) == "update"  # both: one reconcile


def test_triggers_forget_a_deleted_sync() -> None:
    triggers = Triggers()
    triggers.observe("ADDED", event(4))
    assert triggers.observe("DELETED", event(4)) is None
    assert len(triggers) == 0
    assert triggers.observe("ADDED", event(1)) is None  # created again: new
