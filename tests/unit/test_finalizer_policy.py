"""Deleting a GitRepositorySync, on the in-memory API: its objects are pruned with
every prune guard still in force, released when it says `prune: false` or is
suspended, orphaned on an uninstall — and nothing is deleted on a guess."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from gitferry.api import SyncKey, sync_path
from gitferry.applyset import ANNOTATION_GROUP_KINDS, LABEL_PART_OF, applyset_id
from gitferry.context import Context
from gitferry.events import EventRecorder
from gitferry.finalizer import finalize
from gitferry.kube import Discovery, KubeError, ObjRef
from gitferry.settings import Settings
from gitferry.source import GitSource
from gitferry.status import StatusWriter
from tests.unit.fakeapi import GITFERRY_CRD, FakeKube, manifest

KEY = SyncKey("apps", "web")
MARKS = {
    "gitferry.dev/sync-name": KEY.name,
    "gitferry.dev/sync-namespace": KEY.namespace,
    LABEL_PART_OF: applyset_id(KEY.name, KEY.namespace),
}
TEAM = ObjRef("", "Namespace", "", "team")
CFG = ObjRef("", "ConfigMap", "team", "cfg")
WEB = ObjRef("apps", "Deployment", "team", "web")
OWNED = [TEAM, CFG, WEB]
SA = "system:serviceaccount:apps:deployer"


class NoGit:
    """The finalizer never fetches: any use of the git source is a bug."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the finalizer used the git source ({name})")


def context(fake: FakeKube) -> Context:
    discovery = Discovery(fake.kube)
    discovery.refresh()
    return Context(
        kube=fake.kube,
        discovery=discovery,
        source=cast(GitSource, NoGit()),
        settings=Settings(cache_dir=Path("/nonexistent/gitferry-cache")),
        status=StatusWriter(fake.kube),
        events=EventRecorder(fake.kube),
    )


def ours(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"]["labels"] = {"app": "web", **MARKS}
    return obj


@pytest.fixture
def fake() -> FakeKube:
    """A sync apps/web that created the Namespace team, a ConfigMap and a Deployment."""
    fake = FakeKube()
    fake.seed(manifest("v1", "Namespace", "apps"))
    fake.seed(
        ours(manifest("v1", "Namespace", "team")),
        ours(manifest("v1", "ConfigMap", "cfg", "team", data={"k": "v"})),
        ours(manifest("apps/v1", "Deployment", "web", "team", spec={"replicas": 1})),
    )
    return fake


def deleted_sync(
    fake: FakeKube, inventory: list[ObjRef] | None = OWNED, **spec: Any
) -> dict[str, Any]:
    """The sync as Kopf hands it to the finalizer: being deleted, still ours."""
    body = manifest(
        "gitferry.dev/v1alpha1",
        "GitRepositorySync",
        KEY.name,
        KEY.namespace,
        finalizers=["gitferry.dev/finalizer"],
        deletionTimestamp="2026-01-01T00:00:00Z",
        annotations={ANNOTATION_GROUP_KINDS: "ConfigMap,Deployment.apps,Namespace"},
        spec={"url": "https://git.example.com/org/deploy.git", "timeout": "30s", **spec},
    )
    if inventory is not None:
        body["status"] = {"inventory": {"entries": [{"id": r.id, "v": "v1"} for r in inventory]}}
    (stored,) = fake.seed(body)
    fake.forget_calls()
    return stored


def exists(fake: FakeKube, ref: ObjRef) -> bool:
    api = f"{ref.group}/v1" if ref.group else "v1"
    return fake.object(api, ref.kind, ref.name, ref.namespace) is not None


def gitferry_labels(fake: FakeKube, ref: ObjRef) -> dict[str, str]:
    api = f"{ref.group}/v1" if ref.group else "v1"
    obj = fake.object(api, ref.kind, ref.name, ref.namespace)
    assert obj is not None
    return {k: v for k, v in obj["metadata"].get("labels", {}).items() if k in MARKS}


def warnings(fake: FakeKube) -> list[str]:
    return [f"{e['reason']}: {e['message']}" for e in fake.events() if e["type"] == "Warning"]


# --- prune: true -----------------------------------------------------------------------------
def test_a_deleted_sync_prunes_what_it_created(fake: FakeKube) -> None:
    finalize(context(fake), KEY, deleted_sync(fake))

    assert not any(exists(fake, r) for r in OWNED)
    deletes = fake.writes("DELETE")
    assert [c.path for c in deletes] == [  # what is inside first, the Namespace last
        "/apis/apps/v1/namespaces/team/deployments/web",
        "/api/v1/namespaces/team/configmaps/cfg",
        "/api/v1/namespaces/team",
    ]
    assert all(c.body["preconditions"]["uid"] for c in deletes)
    assert warnings(fake) == []


def test_a_sync_with_a_service_account_is_pruned_as_that_account(fake: FakeKube) -> None:
    finalize(context(fake), KEY, deleted_sync(fake, serviceAccountName="deployer"))

    assert {c.user for c in fake.writes("DELETE")} == {SA}
    namespace_check = next(c for c in fake.calls if c.path == "/api/v1/namespaces/apps")
    assert namespace_check.user is None  # the uninstall check is the operator's own


def test_a_sync_whose_status_lost_its_inventory_prunes_what_its_labels_name(
    fake: FakeKube,
) -> None:
    finalize(context(fake), KEY, deleted_sync(fake, inventory=None))
    assert not any(exists(fake, r) for r in OWNED)


def test_what_the_guards_keep_is_released_and_named_in_a_warning(fake: FakeKube) -> None:
    fake.seed(manifest("v1", "Secret", "db-password", "team"))  # made by hand
    finalize(context(fake), KEY, deleted_sync(fake))

    assert not exists(fake, CFG) and not exists(fake, WEB)
    assert exists(fake, TEAM) and gitferry_labels(fake, TEAM) == {}
    assert warnings(fake) == [
        "PruneSkipped: Namespace/team was not deleted with the sync: it still holds objects "
        "gitferry did not create: Secret/team/db-password"
    ]


def test_a_namespace_another_sync_fills_is_released_not_deleted(fake: FakeKube) -> None:
    labels = {"gitferry.dev/sync-name": "other", "gitferry.dev/sync-namespace": "apps"}
    fake.seed(manifest("v1", "ConfigMap", "theirs", "team", labels=labels))
    finalize(context(fake), KEY, deleted_sync(fake))

    assert exists(fake, TEAM) and gitferry_labels(fake, TEAM) == {}
    assert exists(fake, ObjRef("", "ConfigMap", "team", "theirs"))
    assert warnings(fake) == [
        "PruneSkipped: Namespace/team was not deleted with the sync: git still declares objects "
        "inside it: ConfigMap/team/theirs (sync apps/other)"
    ]


def test_what_could_not_be_deleted_is_named_and_the_sync_still_goes(fake: FakeKube) -> None:
    fake.fail(
        "DELETE",
        "/api/v1/namespaces/team/configmaps/cfg",
        403,
        'configmaps "cfg" is forbidden: User "system:serviceaccount:apps:deployer" cannot delete resource "configmaps"',
    )
    # (Had the sync owned the Namespace too, the ConfigMap would go with it.)
    finalize(
        context(fake), KEY, deleted_sync(fake, inventory=[CFG, WEB])
    )  # returns: Kopf lets it go

    assert exists(fake, CFG) and not exists(fake, WEB)
    assert any(
        w.startswith(
            'PruneFailed: the sync is released, but: ConfigMap/team/cfg: configmaps "cfg" is forbidden'
        )
        for w in warnings(fake)
    )


# --- released, not deleted ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec", [{"prune": False}, {"suspend": True}], ids=["prune-false", "suspended"]
)
def test_a_sync_that_may_not_delete_releases_its_objects(
    fake: FakeKube, spec: dict[str, Any]
) -> None:
    finalize(context(fake), KEY, deleted_sync(fake, **spec))

    assert fake.writes("DELETE") == []
    for ref in OWNED:
        assert exists(fake, ref)
        assert gitferry_labels(fake, ref) == {}
    assert {c.content_type for c in fake.writes("PATCH")} == {"application/merge-patch+json"}


# --- uninstall: orphaned ----------------------------------------------------------------------
def namespace_apps_deleting(fake: FakeKube) -> None:
    fake.seed(
        manifest(
            "v1",
            "Namespace",
            "apps",
            finalizers=["kubernetes"],
            deletionTimestamp="2026-01-01T00:00:00Z",
        )
    )


def crd_deleting(fake: FakeKube) -> None:
    crd = {
        **GITFERRY_CRD,
        "metadata": {
            **GITFERRY_CRD["metadata"],
            "deletionTimestamp": "2026-01-01T00:00:00Z",
            "finalizers": ["customresourcecleanup.apiextensions.k8s.io"],
        },
    }
    fake.seed(crd)


@pytest.mark.parametrize(
    "uninstall", [namespace_apps_deleting, crd_deleting], ids=["namespace", "crd"]
)
def test_on_an_uninstall_the_objects_are_orphaned(fake: FakeKube, uninstall: Any) -> None:
    body = deleted_sync(fake)
    uninstall(fake)

    finalize(context(fake), KEY, body)

    assert all(exists(fake, r) for r in OWNED)
    assert fake.writes() == []  # not even a label removed, not an Event
    assert all(gitferry_labels(fake, r) == MARKS for r in OWNED)


def test_when_the_api_cannot_say_whether_it_is_an_uninstall_nothing_is_deleted(
    fake: FakeKube,
) -> None:
    body = deleted_sync(fake)
    fake.fail("GET", "/api/v1/namespaces/apps", 500, "etcdserver: request timed out", times=None)

    with pytest.raises(KubeError, match="etcdserver: request timed out"):
        finalize(context(fake), KEY, body)  # Kopf retries the handler

    assert fake.writes() == []
    assert all(exists(fake, r) for r in OWNED)


def test_the_finalizer_reads_the_sync_afresh(fake: FakeKube) -> None:
    """A reconcile that ran just before grew the inventory: the copy Kopf handed
    over is older than the one the API server has now."""
    ctx = context(fake)
    stale = deleted_sync(fake, inventory=[CFG])
    deleted_sync(fake, inventory=OWNED)

    finalize(ctx, KEY, stale)

    assert fake.calls[0].path == sync_path(KEY)
    assert not any(exists(fake, r) for r in OWNED)
