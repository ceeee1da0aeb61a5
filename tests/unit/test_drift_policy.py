"""Drift as policy: which watch events are drift, the no-op test, and backoff with
one Warning against a field manager that keeps taking gitferry's fields."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from gitferry.api import SyncKey
from gitferry.drift import FIGHT_THRESHOLD, Drift
from gitferry.kube import ObjRef
from gitferry.kube.managedfields import canonical

KEY = SyncKey("apps", "web")
REF = ObjRef("apps", "Deployment", "apps", "web")
LABELS = {"gitferry.dev/sync-name": "web", "gitferry.dev/sync-namespace": "apps"}
OURS = {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {}}}}}
LESS = {"f:spec": {"f:template": {"f:spec": {"f:containers": {}}}}}


def applied(fields: dict[str, Any] = OURS, uid: str = "u1") -> dict[str, Any]:
    return {"metadata": {"uid": uid, "managedFields": [
        {"manager": "gitferry", "operation": "Apply", "fieldsV1": fields},
        {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
         "fieldsV1": {"f:status": {}}},
    ]}}  # fmt: skip


@dataclass(frozen=True)
class Meta:
    ref: ObjRef
    uid: str
    fields: str | None
    deleting: bool = False
    labels: dict[str, str] = field(default_factory=lambda: dict(LABELS))


class Cache:
    def __init__(self) -> None:
        self.objects: dict[ObjRef, Meta] = {}
        self.watched: set[tuple[str, str]] = set()
        self.unsynced: set[tuple[str, str]] = set()

    def watch(self, group: str, kind: str) -> None:
        self.watched.add((group, kind))

    def retain(self, kinds: Any) -> None:
        self.watched &= set(kinds)

    def synced(self, group: str, kind: str) -> bool:
        return (group, kind) in self.watched and (group, kind) not in self.unsynced

    def get(self, ref: ObjRef) -> Meta | None:
        return self.objects.get(ref)


@pytest.fixture
def setup() -> Any:
    cache = Cache()
    requests: list[tuple[SyncKey, str]] = []
    drift = Drift(cache, lambda k, why: requests.append((k, why)))
    drift.record(KEY, "main@sha1:1", 3, {REF: applied()})
    cache.objects[REF] = Meta(REF, "u1", canonical(OURS))
    yield drift, cache, requests
    drift.close()


def settle(requests: list[Any], n: int, timeout: float = 3.0) -> None:
    end = time.monotonic() + timeout
    while len(requests) < n and time.monotonic() < end:
        time.sleep(0.02)


def test_record_watches_the_kinds_and_unchanged_holds(setup: Any) -> None:
    drift, cache, _ = setup
    assert cache.watched == {("apps", "Deployment")}
    assert drift.unchanged(KEY, "main@sha1:1", 3)
    assert not drift.unchanged(KEY, "main@sha1:2", 3)  # a new revision
    assert not drift.unchanged(KEY, "main@sha1:1", 4)  # a new spec
    assert not drift.unchanged(SyncKey("apps", "other"), "main@sha1:1", 3)


@pytest.mark.parametrize(
    "meta",
    [
        None,  # deleted
        Meta(REF, "u2", canonical(OURS)),  # recreated by someone
        Meta(REF, "u1", canonical(LESS)),  # a field taken
        Meta(REF, "u1", canonical(OURS), deleting=True),
    ],
)
def test_unchanged_is_false_after_drift(setup: Any, meta: Meta | None) -> None:
    drift, cache, _ = setup
    if meta is None:
        del cache.objects[REF]
    else:
        cache.objects[REF] = meta
    assert not drift.unchanged(KEY, "main@sha1:1", 3)


def test_unchanged_needs_a_synced_watch(setup: Any) -> None:
    drift, cache, _ = setup
    cache.unsynced.add(("apps", "Deployment"))
    assert not drift.unchanged(KEY, "main@sha1:1", 3)


def test_full_verification_is_due_after_its_interval() -> None:
    cache = Cache()
    drift = Drift(cache, lambda k, why: None, full_verify_interval=0.05)
    try:
        drift.record(KEY, "r", 1, {REF: applied()})
        cache.objects[REF] = Meta(REF, "u1", canonical(OURS))
        assert drift.unchanged(KEY, "r", 1)
        time.sleep(0.1)
        assert not drift.unchanged(KEY, "r", 1)
    finally:
        drift.close()


def test_status_and_others_fields_are_not_drift(setup: Any) -> None:
    drift, _, requests = setup
    drift.on_event("MODIFIED", Meta(REF, "u1", canonical(OURS)), [])
    time.sleep(0.8)
    assert requests == []


def test_a_taken_field_requests_one_reconcile_debounced(setup: Any) -> None:
    drift, _, requests = setup
    taker = [{"manager": "kubectl-edit", "operation": "Update",
              "fieldsV1": {"f:spec": {"f:replicas": {}}}}]  # fmt: skip
    for _ in range(3):  # a burst
        drift.on_event("MODIFIED", Meta(REF, "u1", canonical(LESS)), taker)
    settle(requests, 1)
    time.sleep(0.3)
    assert requests == [(KEY, "drift (changed)")]


def test_deletion_is_drift(setup: Any) -> None:
    drift, _, requests = setup
    drift.on_event("DELETED", Meta(REF, "u1", canonical(OURS)), [])
    settle(requests, 1)
    assert requests == [(KEY, "drift (deleted)")]


def test_objects_of_no_baseline_and_unlabelled_objects_are_ignored(setup: Any) -> None:
    drift, _, requests = setup
    other = ObjRef("", "ConfigMap", "apps", "x")
    drift.on_event("DELETED", Meta(other, "u9", None), [])
    drift.on_event("DELETED", Meta(REF, "u1", None, labels={}), [])
    time.sleep(0.7)
    assert requests == []


def test_own_apply_is_not_drift(setup: Any) -> None:
    drift, _, requests = setup
    drift.applying(KEY)  # the sync's reconcile writes: no baseline until record
    drift.on_event("MODIFIED", Meta(REF, "u1", canonical(LESS)), [])
    drift.record(KEY, "main@sha1:2", 3, {REF: applied(LESS)})
    time.sleep(0.7)
    assert requests == []


def test_a_fight_backs_off_and_warns_once_naming_the_manager_and_field(setup: Any) -> None:
    drift, _, requests = setup
    hpa = [{"manager": "horizontal-pod-autoscaler", "operation": "Update",
            "fieldsV1": {"f:spec": {"f:replicas": {}}}}]  # fmt: skip
    for i in range(FIGHT_THRESHOLD + 2):
        drift.on_event("MODIFIED", Meta(REF, "u1", canonical(LESS)), hpa)
        settle(requests, i + 1, timeout=0.8)
        drift.record(KEY, "main@sha1:1", 3, {REF: applied()})  # gitferry put it back
    # The first corrections come at once; later ones wait longer and longer.
    assert len(requests) <= FIGHT_THRESHOLD + 1
    warnings = drift.warnings(KEY)
    assert len(warnings) == 1
    assert "horizontal-pod-autoscaler" in warnings[0] and "spec.replicas" in warnings[0]
    assert str(REF) in warnings[0]
    assert drift.warnings(KEY) == []  # once


def test_edits_by_different_managers_are_no_fight(setup: Any) -> None:
    """People editing one object by hand with different tools: each edit is
    corrected at once, nobody is named in a Warning."""
    drift, _, requests = setup
    tools = ["kubectl-edit", "kubectl-patch", "kubectl-scale", "kubectl-label", "Mozilla"]
    for i, tool in enumerate(tools):
        taker = [{"manager": tool, "operation": "Update",
                  "fieldsV1": {"f:spec": {"f:replicas": {}}}}]  # fmt: skip
        drift.on_event("MODIFIED", Meta(REF, "u1", canonical(LESS)), taker)
        settle(requests, i + 1, timeout=0.8)
        drift.record(KEY, "main@sha1:1", 3, {REF: applied()})
    assert len(requests) == len(tools)  # no backoff
    assert drift.warnings(KEY) == []


def test_each_manager_that_fights_is_named_once(setup: Any) -> None:
    drift, _, requests = setup
    for i in range(2 * (FIGHT_THRESHOLD + 1)):
        tool = ("m1", "m2")[i % 2]
        taker = [{"manager": tool, "operation": "Update",
                  "fieldsV1": {"f:spec": {"f:replicas": {}}}}]  # fmt: skip
        drift.on_event("MODIFIED", Meta(REF, "u1", canonical(LESS)), taker)
        drift.record(KEY, "main@sha1:1", 3, {REF: applied()})
    warnings = drift.warnings(KEY)
    assert [("m1" in w, "m2" in w) for w in warnings] == [(True, False), (False, True)]


def test_forget_drops_everything_of_a_sync(setup: Any) -> None:
    drift, _, requests = setup
    drift.forget(KEY)
    assert not drift.unchanged(KEY, "main@sha1:1", 3)
    drift.on_event("DELETED", Meta(REF, "u1", None), [])
    time.sleep(0.7)
    assert requests == []


@dataclass(frozen=True)
class VersionedMeta(Meta):
    resource_version: str = "0"


def test_a_change_made_while_the_sync_applies_is_drift_once_the_apply_ends(setup: Any) -> None:
    drift, _, requests = setup
    drift.applying(KEY)
    # Someone deletes the object after gitferry's write (resourceVersion 7 > 5).
    drift.on_event("DELETED", VersionedMeta(REF, "u1", canonical(OURS), resource_version="7"), [])
    # gitferry's own write (resourceVersion 5) is no drift.
    drift.on_event("MODIFIED", VersionedMeta(REF, "u1", canonical(OURS), resource_version="5"), [])
    time.sleep(0.7)
    assert requests == []  # held while the apply runs
    done = applied()
    done["metadata"]["resourceVersion"] = "5"
    drift.record(KEY, "main@sha1:1", 3, {REF: done})
    settle(requests, 1)
    assert requests == [(KEY, "drift (deleted)")]


def test_held_events_are_judged_against_the_old_baseline_when_the_apply_fails(setup: Any) -> None:
    drift, _, requests = setup
    drift.applying(KEY)
    drift.on_event("DELETED", VersionedMeta(REF, "u1", canonical(OURS), resource_version="7"), [])
    drift.abandon(KEY)
    settle(requests, 1)
    assert requests == [(KEY, "drift (deleted)")]
