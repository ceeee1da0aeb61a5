"""What prune deletes, and what it never deletes, on the in-memory API: only what
this sync labelled and created, with the uid it read as a precondition; anything
else stays and is released (only gitferry's own marks removed) or is left
untouched when it belongs to someone else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gitferry.api import InventoryEntry, SyncKey
from gitferry.applyset import LABEL_PART_OF, applyset_id
from gitferry.deadline import Deadline
from gitferry.errors import PruneFailed
from gitferry.kube import Discovery, ObjRef
from gitferry.ownership import Decision, decide
from gitferry.prune import Pruner, PruneResult, find_owned
from tests.unit.fakeapi import FakeKube, manifest

ME = SyncKey("apps", "web")
OTHER = SyncKey("apps", "other")
MARKS = {
    "gitferry.dev/sync-name": ME.name,
    "gitferry.dev/sync-namespace": ME.namespace,
    LABEL_PART_OF: applyset_id(ME.name, ME.namespace),
}
CM = ObjRef("", "ConfigMap", "team", "cfg")


def ours(obj: dict[str, Any], **annotations: str) -> dict[str, Any]:
    """`obj` as this sync applied it: its labels, plus the user's own `app` label."""
    meta = obj["metadata"]
    meta["labels"] = {"app": "web", **meta.get("labels", {}), **MARKS}
    if annotations:
        meta["annotations"] = {"note": "kept", **annotations}
    return obj


def cm(name: str = "cfg", ns: str = "team", **meta: Any) -> dict[str, Any]:
    return manifest("v1", "ConfigMap", name, ns, data={"k": "v"}, **meta)


@pytest.fixture
def fake() -> FakeKube:
    fake = FakeKube()
    fake.seed(manifest("v1", "Namespace", "team"))
    return fake


def prune(
    fake: FakeKube,
    *refs: ObjRef,
    can_hand_over: Callable[[SyncKey, ObjRef], bool] = lambda _s, _r: False,
    declared: frozenset[ObjRef] = frozenset(),
) -> PruneResult:
    """Prune `refs` (stale, in prune order) while git still declares `declared`."""
    discovery = Discovery(fake.kube)
    discovery.refresh()
    fake.forget_calls()
    ids = frozenset(r.id for r in declared)
    pruner = Pruner(fake.kube, discovery, ME, can_hand_over, ids)
    return pruner.prune([InventoryEntry(r.id, "v1") for r in refs], Deadline.after(30))


def live(fake: FakeKube, ref: ObjRef = CM) -> dict[str, Any] | None:
    api = f"{ref.group}/v1" if ref.group else "v1"
    return fake.object(api, ref.kind, ref.name, ref.namespace)


def labels(obj: dict[str, Any] | None) -> dict[str, str]:
    assert obj is not None
    return dict(obj["metadata"].get("labels") or {})


def annotations(obj: dict[str, Any] | None) -> dict[str, str]:
    assert obj is not None
    return dict(obj["metadata"].get("annotations") or {})


# --- deleted ---------------------------------------------------------------------------
def test_an_object_this_sync_created_is_deleted_with_the_uid_it_read(fake: FakeKube) -> None:
    (stored,) = fake.seed(ours(cm()))
    result = prune(fake, CM)
    assert result.deleted == [CM] and result.kept == [] and result.failed == []
    assert live(fake) is None
    (delete,) = fake.writes()
    assert delete.method == "DELETE" and delete.path == "/api/v1/namespaces/team/configmaps/cfg"
    assert delete.body["preconditions"] == {
        "uid": stored["metadata"]["uid"],
        "resourceVersion": stored["metadata"]["resourceVersion"],
    }


def test_an_object_recreated_between_the_read_and_the_delete_is_never_hit(
    fake: FakeKube,
) -> None:
    fake.seed(ours(cm()))

    def someone_recreates_it() -> None:
        fake.remove("v1", "ConfigMap", "cfg", "team")
        fake.seed(cm())

    fake.before("DELETE", "/api/v1/namespaces/team/configmaps/cfg", someone_recreates_it)
    result = prune(fake, CM)

    # The uid precondition refuses the delete; read again, the new object is
    # not ours (no gitferry labels): left alone, and it leaves the inventory.
    assert result.deleted == [] and result.failed == []
    assert result.kept == [(CM, "its labels name another owner")]
    assert live(fake) is not None  # the new one is still there


def test_a_status_write_between_the_read_and_the_delete_does_not_fail_the_prune(
    fake: FakeKube,
) -> None:
    fake.seed(ours(cm()))
    # A controller writes the object (a new resourceVersion, same uid) right before
    # the delete: the rv precondition refuses it once; read again, still ours.
    fake.before(
        "DELETE",
        "/api/v1/namespaces/team/configmaps/cfg",
        lambda: fake.seed(ours(cm(), touched="by a controller")),
    )
    result = prune(fake, CM)
    assert result.deleted == [CM] and result.failed == []
    assert live(fake) is None


def test_an_object_already_gone_is_simply_done(fake: FakeKube) -> None:
    result = prune(fake, CM)
    assert result == PruneResult()
    assert fake.writes() == []


def test_an_object_whose_kind_is_gone_counts_as_deleted(fake: FakeKube) -> None:
    gone = ObjRef("example.com", "Gadget", "team", "g1")  # no such CRD (any more)
    assert prune(fake, gone).deleted == [gone]
    assert fake.writes() == []


# --- kept and untouched: it is someone else's --------------------------------------------
def test_an_object_whose_labels_name_another_sync_is_left_untouched(fake: FakeKube) -> None:
    """Another sync took it over: its labels are that sync's record, never ours to strip."""
    other = cm(labels={"gitferry.dev/sync-name": "other", "gitferry.dev/sync-namespace": "apps"})
    fake.seed(other)
    result = prune(fake, CM)
    assert result.kept == [(CM, "its labels name another owner")]
    assert result.deleted == []
    assert fake.writes() == []


def test_an_object_another_controller_owns_is_left_untouched(fake: FakeKube) -> None:
    """A ReplicaSet copied gitferry's labels from its Deployment's pod template."""
    owner = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "uid": "u-1",
        "controller": True,
    }
    fake.seed(ours(manifest("apps/v1", "ReplicaSet", "web-5d4f", "team", ownerReferences=[owner])))
    rs = ObjRef("apps", "ReplicaSet", "team", "web-5d4f")
    result = prune(fake, rs)
    assert result.kept == [(rs, "it is owned by Deployment/web")]
    assert fake.writes() == []
    assert labels(live(fake, rs))["gitferry.dev/sync-name"] == "web"


# --- kept and released: only gitferry's marks come off --------------------------------------
def assert_released(fake: FakeKube, ref: ObjRef = CM) -> None:
    obj = live(fake, ref)
    assert labels(obj) == {"app": "web"}  # the user's label stays
    assert "gitferry.dev/adopted" not in annotations(obj)
    assert annotations(obj).get("note", "kept") == "kept"  # and so do the user's annotations
    (patch,) = fake.writes()
    assert patch.method == "PATCH" and patch.content_type == "application/merge-patch+json"
    assert fake.writes("DELETE") == []


def test_an_adopted_object_stays_and_is_released(fake: FakeKube) -> None:
    fake.seed(ours(cm(), **{"gitferry.dev/adopted": "true"}))
    result = prune(fake, CM)
    assert result.kept == [(CM, "it existed before gitferry adopted it")]
    assert_released(fake)


def test_an_object_annotated_prune_disabled_stays_and_is_released(fake: FakeKube) -> None:
    fake.seed(ours(cm(), **{"gitferry.dev/prune": "disabled"}))
    result = prune(fake, CM)
    assert result.kept == [(CM, "it is annotated gitferry.dev/prune: disabled")]
    assert_released(fake)
    assert annotations(live(fake))["gitferry.dev/prune"] == "disabled"  # the user's own mark


def test_a_release_rechecks_when_the_object_changed_since_it_was_read(fake: FakeKube) -> None:
    fake.seed(ours(cm(), **{"gitferry.dev/prune": "disabled"}))
    fake.before(
        "PATCH",
        "/api/v1/namespaces/team/configmaps/cfg",
        lambda: fake.seed(ours(cm(), **{"gitferry.dev/prune": "disabled", "touched": "yes"})),
    )
    result = prune(fake, CM)
    # The first release patch is refused (resourceVersion moved); read again, the
    # rule still holds, and the second one goes through.
    assert result.failed == []
    assert result.kept == [(CM, "it is annotated gitferry.dev/prune: disabled")]
    assert "gitferry.dev/sync-name" not in labels(live(fake))


def test_a_prune_that_keeps_conflicting_fails_and_stays_in_the_inventory(
    fake: FakeKube,
) -> None:
    fake.seed(ours(cm()))
    fake.before(
        "DELETE",
        "/api/v1/namespaces/team/configmaps/cfg",
        lambda: fake.seed(ours(cm(), touched="again")),
        times=10,
    )
    result = prune(fake, CM)
    assert [e.id for e in result.remaining()] == [CM.id]
    assert "Precondition failed" in result.failed[0][1]
    assert live(fake) is not None


def test_a_namespace_holding_an_object_gitferry_did_not_create_stays(fake: FakeKube) -> None:
    fake.seed(ours(manifest("v1", "Namespace", "team")))
    fake.seed(manifest("v1", "Secret", "db-password", "team"))  # made by hand
    ns = ObjRef("", "Namespace", "", "team")
    result = prune(fake, ns)
    assert result.kept == [
        (ns, "it still holds objects gitferry did not create: Secret/team/db-password")
    ]
    assert_released(fake, ns)
    assert live(fake, ObjRef("", "Secret", "team", "db-password")) is not None


def test_a_namespace_holding_an_adopted_object_stays(fake: FakeKube) -> None:
    fake.seed(ours(manifest("v1", "Namespace", "team")))
    fake.seed(ours(cm("legacy"), **{"gitferry.dev/adopted": "true"}))
    ns = ObjRef("", "Namespace", "", "team")
    assert [why for _, why in prune(fake, ns).kept] == [
        "it still holds objects gitferry did not create: ConfigMap/team/legacy"
    ]


def test_a_namespace_holding_only_what_the_cluster_put_there_is_deleted(fake: FakeKube) -> None:
    """The default ServiceAccount, kube-root-ca.crt, Events and the ReplicaSet of a
    Deployment being deleted with it never keep a Namespace."""
    fake.seed(ours(manifest("v1", "Namespace", "team")))
    fake.seed(manifest("v1", "Event", "web.17a", "team", reason="Pulled"))
    owner = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "uid": "u-1",
        "controller": True,
    }
    fake.seed(manifest("apps/v1", "ReplicaSet", "web-5d4f", "team", ownerReferences=[owner]))
    ns = ObjRef("", "Namespace", "", "team")
    assert {o["metadata"]["name"] for o in fake.objects("v1", "ServiceAccount", "team")} == {
        "default"
    }

    assert prune(fake, ns).deleted == [ns]
    assert live(fake, ns) is None


def test_a_namespace_whose_contents_cannot_be_listed_stays(fake: FakeKube) -> None:
    fake.seed(ours(manifest("v1", "Namespace", "team")))
    fake.fail(
        "GET",
        "/api/v1/namespaces/team/secrets",
        403,
        'secrets is forbidden: User "system:serviceaccount:apps:deployer" cannot list resource "secrets"',
    )
    ns = ObjRef("", "Namespace", "", "team")
    (kept,) = prune(fake, ns).kept
    assert kept[0] == ns and "Secret objects that could not be listed" in kept[1]
    assert live(fake, ns) is not None


WIDGETS = ObjRef("apiextensions.k8s.io", "CustomResourceDefinition", "", "widgets.example.com")


def test_a_crd_whose_objects_another_team_created_stays(fake: FakeKube) -> None:
    fake.seed(ours(live(fake, WIDGETS)))  # type: ignore[arg-type]
    fake.seed(ours(manifest("example.com/v1", "Widget", "ours", "team")))
    fake.seed(manifest("example.com/v1", "Widget", "theirs", "default"))
    result = prune(fake, WIDGETS)
    assert result.kept == [
        (WIDGETS, "it still holds objects gitferry did not create: Widget/default/theirs")
    ]
    assert_released(fake, WIDGETS)


def test_a_crd_holding_only_this_syncs_objects_is_deleted(fake: FakeKube) -> None:
    fake.seed(ours(live(fake, WIDGETS)))  # type: ignore[arg-type]
    fake.seed(ours(manifest("example.com/v1", "Widget", "ours", "team")))
    assert prune(fake, WIDGETS).deleted == [WIDGETS]
    assert live(fake, WIDGETS) is None


# --- failures stay in the inventory ----------------------------------------------------------
def test_a_failed_delete_stays_in_the_inventory_and_the_rest_goes_on(fake: FakeKube) -> None:
    fake.seed(ours(cm("a")), ours(cm("b")))
    fake.fail(
        "DELETE", "/api/v1/namespaces/team/configmaps/a", 500, "etcdserver: request timed out"
    )
    a, b = ObjRef("", "ConfigMap", "team", "a"), ObjRef("", "ConfigMap", "team", "b")
    result = prune(fake, a, b)
    assert result.deleted == [b]
    assert result.remaining() == [InventoryEntry(a.id, "v1")]
    assert result.failed[0][1] == f"{a}: etcdserver: request timed out"
    assert live(fake, a) is not None


# --- hand-over ------------------------------------------------------------------------------
def claimed(obj: dict[str, Any]) -> dict[str, Any]:
    return ours(obj, **{"gitferry.dev/claimed-by": f"{OTHER.namespace}/{OTHER.name}"})


def test_an_object_another_sync_claims_is_handed_over_not_deleted(fake: FakeKube) -> None:
    fake.seed(claimed(cm()))
    asked: list[tuple[SyncKey, ObjRef]] = []

    def other_still_holds_it(claimant: SyncKey, ref: ObjRef) -> bool:
        asked.append((claimant, ref))
        return True

    result = prune(fake, CM, can_hand_over=other_still_holds_it)
    assert asked == [(OTHER, CM)]
    assert result.handed_over == [(CM, OTHER)] and result.deleted == []
    assert labels(live(fake)) == {"app": "web"}
    assert annotations(live(fake))["gitferry.dev/claimed-by"] == "apps/other"  # it takes it next
    assert fake.writes("DELETE") == []


def test_a_claim_the_claimant_cannot_honour_does_not_save_the_object(fake: FakeKube) -> None:
    """The claimant is gone, or its git no longer holds the object: prune as usual."""
    fake.seed(claimed(cm()))
    assert prune(fake, CM, can_hand_over=lambda _s, _r: False).deleted == [CM]


def test_an_adopted_object_handed_over_stays_adopted_for_its_new_owner(fake: FakeKube) -> None:
    fake.seed(
        ours(cm(), **{"gitferry.dev/adopted": "true", "gitferry.dev/claimed-by": "apps/other"})
    )

    prune(fake, CM, can_hand_over=lambda _s, _r: True)
    verdict = decide(OTHER, CM, live(fake), lambda _s, _r: False)

    assert verdict.decision == Decision.TAKE_OVER
    assert verdict.adopted  # so the new owner, too, never deletes it


# --- what keeps a Namespace: objects git still declares ----------------------------------------
TEAM = ObjRef("", "Namespace", "", "team")


def test_a_namespace_that_left_git_waits_while_git_still_declares_objects_in_it(
    fake: FakeKube,
) -> None:
    """The Namespace manifest left git (a platform team creates namespaces now), its
    ConfigMap did not. Deleting the Namespace would delete the ConfigMap with it."""
    fake.seed(ours(manifest("v1", "Namespace", "team")), ours(cm()))

    result = prune(fake, TEAM, declared=frozenset({CM}))

    assert result.deleted == [] and result.kept == []
    assert result.deferred == [
        (InventoryEntry(TEAM.id, "v1"), "git still declares objects inside it: ConfigMap/team/cfg")
    ]
    assert result.remaining() == [InventoryEntry(TEAM.id, "v1")]  # pruned once it is empty
    assert labels(live(fake, TEAM))["gitferry.dev/sync-name"] == "web"  # still ours
    assert fake.writes() == []


def test_a_namespace_waits_while_another_sync_declares_objects_in_it(fake: FakeKube) -> None:
    fake.seed(ours(manifest("v1", "Namespace", "team")))
    fake.seed(
        cm(
            "theirs",
            labels={"gitferry.dev/sync-name": "other", "gitferry.dev/sync-namespace": "apps"},
        )
    )

    result = prune(fake, TEAM)

    assert [why for _, why in result.deferred] == [
        "git still declares objects inside it: ConfigMap/team/theirs (sync apps/other)"
    ]
    assert fake.writes() == []


def test_the_objects_this_revision_leaves_do_not_keep_their_namespace(fake: FakeKube) -> None:
    """Prune order: the ConfigMap that left git first, then its Namespace."""
    fake.seed(ours(manifest("v1", "Namespace", "team")), ours(cm()))
    result = prune(fake, CM, TEAM)
    assert result.deleted == [CM, TEAM]


# --- rebuilding an inventory from the labels -------------------------------------------------
SET_KINDS = frozenset(
    {
        ("", "Namespace"),
        ("", "ConfigMap"),
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("example.com", "Widget"),
    }
)


def rebuild(fake: FakeKube, kinds: frozenset[tuple[str, str]] = SET_KINDS) -> list[InventoryEntry]:
    discovery = Discovery(fake.kube)
    discovery.refresh()
    fake.forget_calls()
    # The ApplySet's additional-namespaces name "team"; the sync lives in "apps".
    return find_owned(fake.kube, discovery, ME, Deadline.after(30), kinds, frozenset({"team"}))


def test_a_lost_inventory_is_rebuilt_from_labels_without_controller_owned_copies(
    fake: FakeKube,
) -> None:
    (web,) = fake.seed(ours(manifest("apps/v1", "Deployment", "web", "team")))
    owner = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "web",
        "uid": web["metadata"]["uid"],
        "controller": True,
    }
    fake.seed(
        ours(manifest("v1", "Namespace", "team")),
        ours(cm()),
        ours(manifest("apps/v1", "ReplicaSet", "web-5d4f", "team", ownerReferences=[owner])),
        ours(manifest("example.com/v1", "Widget", "w1", "team")),
        cm(
            "theirs",
            labels={"gitferry.dev/sync-name": "other", "gitferry.dev/sync-namespace": "apps"},
        ),
        cm(
            "namesake",
            labels={"gitferry.dev/sync-name": "web", "gitferry.dev/sync-namespace": "elsewhere"},
        ),
        cm("by-hand"),
    )

    found = rebuild(fake)

    assert found == sorted(
        [
            InventoryEntry(TEAM.id, "v1"),
            InventoryEntry(CM.id, "v1"),
            InventoryEntry(ObjRef("apps", "Deployment", "team", "web").id, "v1"),
            InventoryEntry(ObjRef("example.com", "Widget", "team", "w1").id, "v1"),
        ],
        key=lambda e: e.id,
    )
    lists = [c for c in fake.calls if c.method == "GET" and c.path not in ("/api", "/apis")]
    # One list per kind the ApplySet names: cluster-scoped ones (Namespace)
    # cluster-wide, namespaced ones in the sync's namespace and "team" only.
    assert sorted(c.path for c in lists) == [
        "/api/v1/namespaces",
        "/api/v1/namespaces/apps/configmaps",
        "/api/v1/namespaces/team/configmaps",
        "/apis/apps/v1/namespaces/apps/deployments",
        "/apis/apps/v1/namespaces/apps/replicasets",
        "/apis/apps/v1/namespaces/team/deployments",
        "/apis/apps/v1/namespaces/team/replicasets",
        "/apis/example.com/v1/namespaces/apps/widgets",
        "/apis/example.com/v1/namespaces/team/widgets",
    ]
    assert {c.query["labelSelector"] for c in lists} == {
        "gitferry.dev/sync-name=web,gitferry.dev/sync-namespace=apps"
    }


def test_a_sync_whose_applyset_names_no_kinds_owns_nothing(fake: FakeKube) -> None:
    fake.seed(ours(cm()))
    assert rebuild(fake, frozenset()) == []
    assert fake.calls == []


def test_a_rebuild_that_cannot_list_a_kind_fails_instead_of_forgetting_objects(
    fake: FakeKube,
) -> None:
    fake.seed(ours(cm()))
    fake.fail(
        "GET",
        "/api/v1/namespaces/team/configmaps",
        403,
        'configmaps is forbidden: User "system:serviceaccount:apps:deployer" cannot list resource "configmaps"',
    )
    with pytest.raises(PruneFailed, match="listing ConfigMap failed: configmaps is forbidden"):
        rebuild(fake)
