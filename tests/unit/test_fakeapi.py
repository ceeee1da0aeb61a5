"""The in-memory API double behaves like the API server where gitferry's policy
tests lean on it: a policy test is only as honest as its double."""

from __future__ import annotations

import pytest

from gitferry.deadline import Deadline
from gitferry.kube import APPLY_PATCH, MERGE_PATCH, Discovery, KubeError
from tests.unit.fakeapi import FakeKube, crd_manifest, manifest

CM = "/api/v1/namespaces/team/configmaps/cfg"
APPLY = {"fieldManager": "gitferry", "force": "true"}


def apply(fake: FakeKube, body: dict[str, object], dry_run: bool = False) -> dict[str, object]:
    query = {**APPLY, "dryRun": "All"} if dry_run else APPLY
    return fake.request("PATCH", CM, query=query, body=body, content_type=APPLY_PATCH)


def rv(obj: dict[str, object] | None) -> str:
    assert obj is not None
    return str(obj["metadata"]["resourceVersion"])  # type: ignore[index]


@pytest.fixture
def fake() -> FakeKube:
    fake = FakeKube()
    fake.seed(manifest("v1", "Namespace", "team"))
    return fake


def test_discovery_serves_the_builtin_kinds_and_every_crd(fake: FakeKube) -> None:
    discovery = Discovery(fake.kube)
    discovery.refresh()
    assert discovery.is_namespaced("", "Namespace") is False
    assert discovery.is_namespaced("apps", "Deployment") is True
    assert discovery.is_namespaced("example.com", "Widget") is True
    assert discovery.knows("gitferry.dev", "GitRepositorySync")
    assert not discovery.knows("example.com", "Gadget")

    fake.seed(crd_manifest("example.com", "Gadget", "gadgets", versions=("v1beta1", "v1")))
    assert discovery.knows("example.com", "Gadget")  # refreshed once, as after a CRD install
    gadget = discovery.for_group_kind("example.com", "Gadget")
    assert gadget is not None and gadget.version == "v1"  # GA preferred over beta


def test_an_apply_that_changes_nothing_keeps_the_resource_version(fake: FakeKube) -> None:
    body = manifest("v1", "ConfigMap", "cfg", "team", data={"a": "1"})
    created = apply(fake, body)
    assert apply(fake, body)["metadata"] == created["metadata"]
    changed = apply(fake, manifest("v1", "ConfigMap", "cfg", "team", data={"a": "2"}))
    assert int(rv(changed)) > int(rv(created))


def test_a_dry_run_returns_the_would_be_object_and_stores_nothing(fake: FakeKube) -> None:
    assert apply(fake, manifest("v1", "ConfigMap", "cfg", "team"), dry_run=True)
    assert fake.object("v1", "ConfigMap", "cfg", "team") is None

    live = apply(fake, manifest("v1", "ConfigMap", "cfg", "team", data={"a": "1"}))
    dry = apply(fake, manifest("v1", "ConfigMap", "cfg", "team", data={"a": "2"}), dry_run=True)
    assert dry["data"] == {"a": "2"} and rv(dry) == rv(live)
    assert fake.object("v1", "ConfigMap", "cfg", "team") == live


def test_a_namespaced_object_needs_its_namespace_even_in_a_dry_run(fake: FakeKube) -> None:
    with pytest.raises(KubeError, match='namespaces "nope" not found') as e:
        fake.request(
            "PATCH",
            "/api/v1/namespaces/nope/configmaps/cfg",
            query={**APPLY, "dryRun": "All"},
            body=manifest("v1", "ConfigMap", "cfg", "nope"),
            content_type=APPLY_PATCH,
        )
    assert e.value.not_found


def test_merge_patch_deletes_with_null_and_honours_the_resource_version(fake: FakeKube) -> None:
    live = apply(fake, manifest("v1", "ConfigMap", "cfg", "team", labels={"a": "1", "b": "2"}))
    patch = {"metadata": {"labels": {"a": None}, "resourceVersion": rv(live)}}
    patched = fake.request("PATCH", CM, body=patch, content_type=MERGE_PATCH)
    assert patched["metadata"]["labels"] == {"b": "2"}
    with pytest.raises(KubeError, match="the object has been modified") as e:
        fake.request("PATCH", CM, body=patch, content_type=MERGE_PATCH)  # rv is stale now
    assert e.value.status == 409


def test_delete_preconditions_protect_an_object_recreated_in_between(fake: FakeKube) -> None:
    old = apply(fake, manifest("v1", "ConfigMap", "cfg", "team"))
    fake.remove("v1", "ConfigMap", "cfg", "team")
    apply(fake, manifest("v1", "ConfigMap", "cfg", "team"))
    pre = {"uid": old["metadata"]["uid"], "resourceVersion": rv(old)}
    with pytest.raises(KubeError, match="Precondition failed: UID") as e:
        fake.request("DELETE", CM, body={"preconditions": pre})
    assert e.value.status == 409
    assert fake.object("v1", "ConfigMap", "cfg", "team") is not None


def test_deleting_a_namespace_or_an_owner_takes_what_it_holds(fake: FakeKube) -> None:
    (web,) = fake.seed(manifest("apps/v1", "Deployment", "web", "team"))
    owner = {"kind": "Deployment", "name": "web", "uid": web["metadata"]["uid"], "controller": True}
    fake.seed(manifest("apps/v1", "ReplicaSet", "web-1", "team", ownerReferences=[owner]))
    fake.request("DELETE", "/apis/apps/v1/namespaces/team/deployments/web")
    assert fake.objects("apps/v1", "ReplicaSet") == []

    fake.seed(manifest("v1", "Secret", "s", "team"))
    fake.request("DELETE", "/api/v1/namespaces/team")
    assert fake.objects("v1", "Secret", "team") == []


def test_lists_select_by_label_equality_across_namespaces(fake: FakeKube) -> None:
    fake.seed(
        manifest("v1", "ConfigMap", "a", "team", labels={"app": "web", "tier": "front"}),
        manifest("v1", "ConfigMap", "b", "default", labels={"app": "web"}),
        manifest("v1", "ConfigMap", "c", "team", labels={"app": "db"}),
    )
    names = lambda sel: [  # noqa: E731
        i["metadata"]["name"]
        for i in fake.request("GET", "/api/v1/configmaps", query={"labelSelector": sel})["items"]
    ]
    assert names("app=web") == ["b", "a"]  # sorted by namespace, then name
    assert names("app=web,tier=front") == ["a"]
    assert names("app!=web,app") == ["c"]
    listed = fake.request("GET", "/api/v1/namespaces/team/configmaps")["items"]
    assert "kind" not in listed[0]  # as the API server lists built-in kinds


def test_failures_are_injected_and_impersonation_recorded(fake: FakeKube) -> None:
    fake.fail("GET", "/api/v1/namespaces/team", 500, "etcdserver: request timed out")
    with pytest.raises(KubeError, match="etcdserver") as e:
        fake.as_user("system:serviceaccount:team:deployer").request(
            "GET", "/api/v1/namespaces/team", deadline=Deadline.after(30)
        )
    assert e.value.status == 500 and e.value.reason == "InternalError"
    fake.request("GET", "/api/v1/namespaces/team")  # only once
    assert [c.user for c in fake.calls] == ["system:serviceaccount:team:deployer", None]
