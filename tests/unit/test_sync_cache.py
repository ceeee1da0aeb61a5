"""The sync cache keeps the newest body of each sync: a watch event older than
gitferry's own write never replaces it."""

from __future__ import annotations

from typing import Any

from gitferry.api import SyncKey
from gitferry.syncs import SyncCache

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
