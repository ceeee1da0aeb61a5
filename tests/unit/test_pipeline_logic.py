"""The pipeline's pure parts: inventory math, ownership rules, change sets,
conditions and the spec parser — plain data in, plain data out."""

from __future__ import annotations

import pytest

from gitferry import inventory, status
from gitferry.api import InventoryEntry, SyncKey, SyncStatus, parse_duration, parse_spec
from gitferry.errors import InvalidSpec, RenderFailed
from gitferry.kube import Action, Change, ChangeSet, Item, ObjRef
from gitferry.kube.apply import stages
from gitferry.ownership import Decision, decide

ME = SyncKey("apps", "web")
OTHER = SyncKey("apps", "other")


def entry(ns: str, name: str, group: str, kind: str) -> InventoryEntry:
    return InventoryEntry(ObjRef(group, kind, ns, name).id, "v1")


def obj(kind: str, name: str, ns: str = "", api: str = "v1", **meta: object) -> dict[str, object]:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": ns, **meta}}


def test_inventory_id_round_trips_with_empty_namespace_and_group() -> None:
    ref = ObjRef("", "Namespace", "", "apps")
    assert ref.id == "_apps__Namespace"
    assert ObjRef.from_id(ref.id) == ref
    assert ObjRef("apps", "Deployment", "apps", "web").id == "apps_web_apps_Deployment"


def test_inventory_union_prefers_the_new_version_and_is_sorted() -> None:
    old = [InventoryEntry("b", "v1"), InventoryEntry("a", "v1beta1")]
    new = [InventoryEntry("a", "v1")]
    assert inventory.union(old, new) == (InventoryEntry("a", "v1"), InventoryEntry("b", "v1"))


def test_stale_objects_are_pruned_in_reverse_apply_order() -> None:
    old = [
        entry("", "team", "", "Namespace"),
        entry("", "widgets.example.com", "apiextensions.k8s.io", "CustomResourceDefinition"),
        entry("team", "cfg", "", "ConfigMap"),
        entry("team", "web", "apps", "Deployment"),
        entry("team", "w1", "example.com", "Widget"),
        entry("team", "keep", "", "ConfigMap"),
    ]
    new = [entry("team", "keep", "", "ConfigMap")]
    kinds = [ObjRef.from_id(e.id).kind for e in inventory.stale(old, new)]
    assert kinds == ["Widget", "Deployment", "ConfigMap", "CustomResourceDefinition", "Namespace"]


def test_apply_stages_put_namespaces_and_crds_first_in_kind_order() -> None:
    items = [
        Item(obj("Deployment", "web", "team", "apps/v1")),
        Item(obj("ConfigMap", "cfg", "team")),
        Item(obj("Namespace", "team")),
        Item(obj("CustomResourceDefinition", "w.example.com", api="apiextensions.k8s.io/v1")),
        Item(obj("Widget", "w1", "team", "example.com/v1")),
    ]
    first, rest = stages(items)
    assert {i.ref.kind for i in first} == {"Namespace", "CustomResourceDefinition"}
    assert [i.ref.kind for i in rest] == ["ConfigMap", "Deployment", "Widget"]


def test_change_set_summary_names_only_what_happened() -> None:
    changes = ChangeSet(
        [Change(ObjRef("", "ConfigMap", "a", str(i)), Action.CREATED) for i in range(3)]
        + [Change(ObjRef("", "ConfigMap", "a", "x"), Action.UNCHANGED)]
        + [Change(ObjRef("", "ConfigMap", "a", "y"), Action.DELETED)]
    )
    assert changes.summary() == "created 3, unchanged 1, deleted 1"
    assert changes.changed
    assert not ChangeSet([Change(ObjRef("", "ConfigMap", "a", "x"), Action.UNCHANGED)]).changed


@pytest.mark.parametrize(
    ("labels", "annotations", "other_holds", "expected", "adopted"),
    [
        (None, None, False, Decision.CREATE, False),
        (
            {"gitferry.dev/sync-name": "web", "gitferry.dev/sync-namespace": "apps"},
            {},
            False,
            Decision.OWN,
            False,
        ),
        ({}, {}, False, Decision.ADOPT, True),
        ({}, {"gitferry.dev/claimed-by": "apps/web"}, False, Decision.TAKE_OVER, False),
        (
            {"gitferry.dev/sync-name": "other", "gitferry.dev/sync-namespace": "apps"},
            {},
            True,
            Decision.CONFLICT,
            False,
        ),
        (
            {"gitferry.dev/sync-name": "other", "gitferry.dev/sync-namespace": "apps"},
            {},
            False,
            Decision.TAKE_OVER,
            False,
        ),
        (
            {"gitferry.dev/sync-name": "web", "gitferry.dev/sync-namespace": "apps"},
            {"gitferry.dev/adopted": "true"},
            False,
            Decision.OWN,
            True,
        ),
    ],
)
def test_ownership_rules(
    labels: dict[str, str] | None,
    annotations: dict[str, str] | None,
    other_holds: bool,
    expected: Decision,
    adopted: bool,
) -> None:
    ref = ObjRef("", "ConfigMap", "apps", "cfg")
    live = (
        None
        if labels is None
        else obj("ConfigMap", "cfg", "apps", labels=labels, annotations=annotations)
    )
    verdict = decide(ME, ref, live, lambda owner, _ref: other_holds and owner == OTHER)
    assert verdict.decision == expected
    assert verdict.adopted == adopted
    assert verdict.writable == (expected != Decision.CONFLICT)


def test_conditions_keep_transition_time_and_drop_false_reconciling() -> None:
    first = status.merge_conditions((), status.progressing("go"), 1, "t1")
    assert {c.type for c in first} == {"Ready", "Reconciling"}
    done = status.merge_conditions(first, status.succeeded("ok"), 1, "t2")
    assert [c.type for c in done] == ["Ready"]
    assert done[0].last_transition_time == "t2"
    again = status.merge_conditions(done, status.succeeded("ok"), 2, "t3")
    assert again[0].last_transition_time == "t2" and again[0].observed_generation == 2


def test_status_round_trips_through_its_one_model() -> None:
    raw = {
        "observedGeneration": 3,
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "observedGeneration": 3,
                "lastTransitionTime": "2026-11-30T00:00:00Z",
                "reason": "ReconciliationSucceeded",
                "message": "Applied revision: main@sha1:abc",
            }
        ],
        "lastAttemptedRevision": "main@sha1:abc",
        "lastAppliedRevision": "main@sha1:abc",
        "lastHandledReconcileAt": "1",
        "inventory": {"entries": [{"id": "apps_web_apps_Deployment", "v": "v1"}]},
    }
    parsed = SyncStatus.from_dict(raw)
    assert parsed.to_dict() == raw
    assert parsed.ready == "True"
    assert SyncStatus.from_dict(None).inventory is None
    assert SyncStatus.from_dict({"inventory": {}}).inventory == ()


def test_an_inventory_entry_gitferry_cannot_read_is_left_out_not_fatal() -> None:
    raw = {"inventory": {"entries": [{"id": "garbage", "v": "v1"}, {"id": "a_b__ConfigMap"}]}}
    assert SyncStatus.from_dict(raw).inventory == (InventoryEntry("a_b__ConfigMap", ""),)


def test_a_status_patch_removes_what_the_new_status_lacks() -> None:
    old = SyncStatus(observed_generation=1, last_applied_revision="main@sha1:a")
    new = SyncStatus(observed_generation=2)
    assert status.merge_patch(old, new) == {
        "status": {"observedGeneration": 2, "lastAppliedRevision": None}
    }
    assert status.same(old, old)


def test_a_render_failure_is_stalled_and_its_message_kept() -> None:
    conds = status.failed(RenderFailed("deploy/a.yaml: line 3: bad"))
    assert [(c.type, c.status, c.reason) for c in conds] == [
        ("Ready", "False", "RenderFailed"),
        ("Stalled", "True", "RenderFailed"),
    ]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("1500ms", 1.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "interval") == seconds


@pytest.mark.parametrize("text", ["0s", "0.0001ms", "500ms", "3000000h", "721h", "1e9s", ""])
def test_durations_that_would_hot_loop_or_overflow_are_refused(text: str) -> None:
    with pytest.raises(InvalidSpec, match=r"^spec\.retryInterval: "):
        parse_duration(text, "retryInterval")


def test_spec_defaults_and_refusals() -> None:
    spec = parse_spec({"url": "https://git.example.com/a.git"})
    assert (spec.path, spec.interval, spec.timeout, spec.prune) == (".", 300, 120, True)
    assert spec.retry_interval == spec.interval
    with pytest.raises(InvalidSpec, match="spec.ref"):
        parse_spec({"url": "x", "ref": {"branch": "main", "tag": "v1"}})
    assert parse_spec({"url": "x", "ref": {"branch": "main", "commit": "a" * 40}}).ref.commit
    with pytest.raises(InvalidSpec, match="spec.interval"):
        parse_spec({"url": "x", "interval": "5 minutes"})


def test_inventory_id_of_an_rbac_name_with_underscores_round_trips() -> None:
    ref = ObjRef("rbac.authorization.k8s.io", "Role", "apps", "read_only_role")
    assert ObjRef.from_id(ref.id) == ref
