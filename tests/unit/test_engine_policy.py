"""The apply engine's policy, on the in-memory API: validate a whole stage before
writing any of it, write nothing that would not change, Namespaces and CRDs
first, create-only objects left alone, and recreate on an immutable-field change
only when forced — never a Namespace, a CRD or a volume."""

from __future__ import annotations

from typing import Any

import pytest

from gitferry.deadline import Deadline
from gitferry.kube import Action, ApplyError, Discovery, Engine, Item, ObjRef, Options
from tests.unit.fakeapi import STATEFULSET_FORBIDDEN, Call, FakeKube, crd_manifest, manifest


@pytest.fixture
def fake() -> FakeKube:
    fake = FakeKube()
    fake.seed(manifest("v1", "Namespace", "team"))
    return fake


def engine(fake: FakeKube) -> Engine:
    discovery = Discovery(fake.kube)
    discovery.refresh()
    return Engine(fake.kube, discovery, Options("gitferry", concurrency=4))


def apply(fake: FakeKube, *items: Item) -> dict[ObjRef, Action]:
    changes = engine(fake).apply(items, Deadline.after(30))
    return {c.ref: c.action for c in changes.changes}


def item(obj: dict[str, Any], **policy: Any) -> Item:
    meta = obj["metadata"]
    return Item(obj, source=f"{meta.get('namespace', '_cluster')}/{meta['name']}.yaml", **policy)


def cm(name: str, ns: str = "team", **data: str) -> dict[str, Any]:
    return manifest("v1", "ConfigMap", name, ns, data=data)


def deployment(name: str, app: str, ns: str = "team") -> dict[str, Any]:
    labels = {"app": app}
    return manifest(
        "apps/v1",
        "Deployment",
        name,
        ns,
        spec={
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]},
            },
        },
    )


def patches(fake: FakeKube) -> list[Call]:
    return [c for c in fake.calls if c.method == "PATCH"]


def writes(fake: FakeKube) -> list[str]:
    return [str(c) for c in fake.writes()]


# --- validate first, then write ------------------------------------------------
def test_every_object_of_a_stage_is_dry_run_before_any_is_written(fake: FakeKube) -> None:
    apply(
        fake,
        item(manifest("v1", "Namespace", "shop")),
        item(cm("a", "shop")),
        item(cm("b", "shop")),
        item(manifest("v1", "Service", "web", "shop", spec={"ports": [{"port": 80}]})),
        item(deployment("web", "web", "shop")),
    )
    kinds = [(c.dry_run, c.path.split("/")[-2]) for c in patches(fake)]
    assert kinds[:2] == [(True, "namespaces"), (False, "namespaces")]  # stage 1: the Namespace
    rest = kinds[2:]
    assert [dry for dry, _ in rest] == [True] * 4 + [False] * 4  # stage 2: all dry-runs first
    assert {k for _, k in rest[:4]} == {k for _, k in rest[4:]}


def test_one_invalid_object_writes_nothing_and_every_failure_is_named(fake: FakeKube) -> None:
    fake.fail(
        "PATCH",
        "/api/v1/namespaces/team/configmaps/bad",
        422,
        'ConfigMap "bad" is invalid: data[no spaces]: Invalid value: "no spaces": a valid config key must consist of alphanumeric characters',
        dry_run=True,
    )
    with pytest.raises(ApplyError) as e:
        apply(
            fake,
            item(cm("good")),
            item(cm("bad")),
            item(cm("lost", "nowhere")),  # its Namespace does not exist
            item(deployment("web", "web")),
        )
    message = str(e.value)
    assert message.startswith("2 object(s) failed validation, nothing was applied: ")
    assert (
        'ConfigMap/team/bad (team/bad.yaml): ConfigMap "bad" is invalid: data[no spaces]' in message
    )
    assert 'ConfigMap/nowhere/lost (nowhere/lost.yaml): namespaces "nowhere" not found' in message
    assert "good" not in message
    assert writes(fake) == []


def test_a_write_that_fails_after_its_dry_run_names_what_was_written(fake: FakeKube) -> None:
    fake.fail(
        "PATCH", "/api/v1/namespaces/team/configmaps/b", 409, "the object changed", dry_run=False
    )
    with pytest.raises(ApplyError) as e:
        apply(fake, item(cm("a")), item(cm("b")), item(deployment("web", "web")))
    message = str(e.value)
    assert message.startswith("ConfigMap/team/b (team/b.yaml): the object changed")
    assert message.endswith(
        "(1 object(s) written before it failed: ConfigMap/team/a; the rest not)"
    )
    assert fake.object("apps/v1", "Deployment", "web", "team") is None  # a later rank


def test_an_invalid_namespace_stops_every_later_stage_before_it_is_even_dry_run(
    fake: FakeKube,
) -> None:
    fake.fail(
        "PATCH",
        "/api/v1/namespaces/shop",
        422,
        'Namespace "shop" is invalid: metadata.labels: Invalid value',
    )
    with pytest.raises(ApplyError, match=r"Namespace/shop \(_cluster/shop.yaml\)"):
        apply(fake, item(manifest("v1", "Namespace", "shop")), item(cm("a")))
    assert writes(fake) == []
    assert not any("configmaps" in c.path for c in patches(fake))


# --- nothing to do, nothing written ------------------------------------------------
def test_applying_what_is_already_there_writes_nothing(fake: FakeKube) -> None:
    objs = [cm("a", x="1"), cm("b", y="2"), deployment("web", "web")]
    assert set(apply(fake, *map(item, objs)).values()) == {Action.CREATED}
    before = fake.objects("v1", "ConfigMap", "team") + fake.objects("apps/v1", "Deployment")
    fake.forget_calls()

    again = apply(fake, *map(item, objs))

    assert set(again.values()) == {Action.UNCHANGED}
    assert writes(fake) == []
    assert fake.objects("v1", "ConfigMap", "team") + fake.objects("apps/v1", "Deployment") == before


def test_only_the_object_that_changed_is_written(fake: FakeKube) -> None:
    apply(fake, item(cm("a", x="1")), item(cm("b", y="2")))
    fake.forget_calls()
    result = apply(fake, item(cm("a", x="1")), item(cm("b", y="3")))
    assert result == {
        ObjRef("", "ConfigMap", "team", "a"): Action.UNCHANGED,
        ObjRef("", "ConfigMap", "team", "b"): Action.CONFIGURED,
    }
    assert writes(fake) == ["PATCH /api/v1/namespaces/team/configmaps/b"]


def test_a_field_another_controller_wrote_after_the_read_is_no_reason_to_write(
    fake: FakeKube,
) -> None:
    """The live copy handed in (read during the ownership stage) is older than the
    cluster: a controller annotated the Deployment since. The dry-run shows a newer
    resourceVersion, so the engine compares with a fresh read, not the stale copy."""
    eng = engine(fake)
    web = item(deployment("web", "web"))
    eng.apply([web], Deadline.after(30))
    live = eng.read_live([web], Deadline.after(30))
    fake.request(
        "PATCH",
        "/apis/apps/v1/namespaces/team/deployments/web",
        body={"metadata": {"annotations": {"deployment.kubernetes.io/revision": "1"}}},
        content_type="application/merge-patch+json",
    )
    fake.forget_calls()

    changes = eng.apply([web], Deadline.after(30), live)

    assert [c.action for c in changes.changes] == [Action.UNCHANGED]
    assert writes(fake) == []


# --- order -------------------------------------------------------------------------
def test_namespaces_and_crds_are_written_before_what_needs_them(fake: FakeKube) -> None:
    """A custom resource of a CRD in the same revision, in a Namespace of the same
    revision: neither could even be dry-run before the other two exist."""
    gadget = manifest("example.com/v1", "Gadget", "g1", "shop", spec={"size": 3})
    result = apply(
        fake,
        item(gadget),
        item(cm("settings", "shop")),
        item(crd_manifest("example.com", "Gadget", "gadgets")),
        item(manifest("v1", "Namespace", "shop")),
    )
    assert set(result.values()) == {Action.CREATED}
    order = [c.path.split("/")[-2] for c in fake.writes("PATCH")]
    assert sorted(order[:2]) == ["customresourcedefinitions", "namespaces"]
    assert sorted(order[2:]) == ["configmaps", "gadgets"]
    assert fake.object("example.com/v1", "Gadget", "g1", "shop") is not None


# --- create once, then leave alone ---------------------------------------------------
def test_a_create_only_object_is_created_once_and_then_left_alone(fake: FakeKube) -> None:
    seed = item(cm("seed", password="changeme"), create_only=True)
    assert apply(fake, seed) == {seed.ref: Action.CREATED}
    fake.request(
        "PATCH",
        "/api/v1/namespaces/team/configmaps/seed",
        body={"data": {"password": "s3cret"}},
        content_type="application/merge-patch+json",
    )  # the user's own value
    fake.forget_calls()

    assert apply(fake, seed) == {seed.ref: Action.SKIPPED}
    assert patches(fake) == []  # not even dry-run
    assert fake.object("v1", "ConfigMap", "seed", "team")["data"] == {"password": "s3cret"}  # type: ignore[index]


# --- immutable fields ------------------------------------------------------------------
def test_an_immutable_field_change_fails_without_force_and_deletes_nothing(
    fake: FakeKube,
) -> None:
    apply(fake, item(deployment("web", "web")))
    uid = fake.object("apps/v1", "Deployment", "web", "team")["metadata"]["uid"]  # type: ignore[index]
    fake.forget_calls()

    with pytest.raises(ApplyError) as e:
        apply(fake, item(deployment("web", "web-v2")))

    assert "Deployment/team/web (team/web.yaml): " in str(e.value)
    assert "spec.selector: Invalid value" in str(e.value) and "field is immutable" in str(e.value)
    assert "set spec.force or the annotation gitferry.dev/force: enabled" in str(e.value)
    assert writes(fake) == []
    assert fake.object("apps/v1", "Deployment", "web", "team")["metadata"]["uid"] == uid  # type: ignore[index]


def test_with_force_an_immutable_field_change_recreates_the_object(fake: FakeKube) -> None:
    apply(fake, item(deployment("web", "web")))
    old_uid = fake.object("apps/v1", "Deployment", "web", "team")["metadata"]["uid"]  # type: ignore[index]

    result = apply(fake, item(deployment("web", "web-v2"), force=True))

    assert list(result.values()) == [Action.RECREATED]
    new = fake.object("apps/v1", "Deployment", "web", "team")
    assert new is not None and new["metadata"]["uid"] != old_uid
    assert new["spec"]["selector"] == {"matchLabels": {"app": "web-v2"}}


def test_the_statefulset_wording_without_the_word_immutable_is_recognised(
    fake: FakeKube,
) -> None:
    def sts(service: str) -> dict[str, Any]:
        return manifest(
            "apps/v1", "StatefulSet", "db", "team", spec={"serviceName": service, "replicas": 1}
        )

    apply(fake, item(sts("db")))
    with pytest.raises(ApplyError) as e:
        apply(fake, item(sts("db-headless")))
    assert STATEFULSET_FORBIDDEN in str(e.value)
    assert "set spec.force" in str(e.value)

    assert apply(fake, item(sts("db-headless"), force=True)) == {
        ObjRef("apps", "StatefulSet", "team", "db"): Action.RECREATED
    }


def test_force_never_recreates_over_an_error_that_is_not_about_immutability(
    fake: FakeKube,
) -> None:
    apply(fake, item(cm("a", x="1")))
    fake.fail(
        "PATCH",
        "/api/v1/namespaces/team/configmaps/a",
        422,
        'ConfigMap "a" is invalid: data: Too long: must have at most 1048576 bytes',
    )
    with pytest.raises(ApplyError, match="Too long"):
        apply(fake, item(cm("a", x="2" * 10), force=True))
    assert fake.writes("DELETE") == []


NEVER_RECREATED = [
    pytest.param(
        manifest("v1", "Namespace", "team", labels={"tier": "x"}),
        (
            "PATCH",
            "/api/v1/namespaces/team",
            'Namespace "team" is invalid: metadata.name: field is immutable',
        ),
        id="Namespace",
    ),
    pytest.param(
        crd_manifest("example.com", "Widget", "widgets", namespaced=False),  # scope: immutable
        None,
        id="CustomResourceDefinition",
    ),
    pytest.param(
        manifest("v1", "PersistentVolumeClaim", "data", "team", spec={"storageClassName": "fast"}),
        None,
        id="PersistentVolumeClaim",
    ),
]


@pytest.mark.parametrize(("obj", "fault"), NEVER_RECREATED)
def test_namespaces_crds_and_volumes_are_never_recreated_even_with_force(
    fake: FakeKube, obj: dict[str, Any], fault: tuple[str, str, str] | None
) -> None:
    fake.seed(
        manifest("v1", "PersistentVolumeClaim", "data", "team", spec={"storageClassName": "slow"})
    )
    if fault:
        fake.fail(fault[0], fault[1], 422, fault[2], dry_run=True)
    fake.forget_calls()

    with pytest.raises(ApplyError) as e:
        apply(fake, item(obj, force=True))

    assert f"(a {obj['kind']} is never deleted to be recreated)" in str(e.value)
    assert writes(fake) == []


# --- adoption takes over what people's tools owned ------------------------------------------
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def kubectl_made(name: str, **data: str) -> dict[str, Any]:
    """A ConfigMap as `kubectl apply` (client-side) left it."""
    obj = cm(name, **data)
    obj["metadata"]["annotations"] = {LAST_APPLIED: '{"data":{"x":"1"}}'}
    obj["metadata"]["managedFields"] = [
        {
            "manager": "kubectl-client-side-apply",
            "operation": "Update",
            "apiVersion": "v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {"f:x": {}, "f:old": {}}},
        }
    ]
    return obj


def test_adopting_an_object_kubectl_made_takes_over_its_fields_before_applying(
    fake: FakeKube,
) -> None:
    (before,) = fake.seed(kubectl_made("legacy", x="1", old="gone-from-git"))
    fake.forget_calls()

    result = apply(fake, item(cm("legacy", x="1"), take_over=True))

    assert list(result.values()) == [Action.CONFIGURED]
    takeover, write = fake.writes()
    assert (takeover.method, takeover.content_type) == ("PATCH", "application/json-patch+json")
    assert takeover.body[0] == {
        "op": "test",
        "path": "/metadata/resourceVersion",
        "value": before["metadata"]["resourceVersion"],
    }
    assert write.content_type == "application/apply-patch+yaml"
    after = fake.object("v1", "ConfigMap", "legacy", "team")
    assert after is not None and LAST_APPLIED not in after["metadata"].get("annotations", {})
    # Only what git sets (data.x) changes hands; data.old, which git does not set,
    # stays kubectl's: adopting never resets a field git leaves out.
    entries = {e["manager"]: e["fieldsV1"] for e in after["metadata"]["managedFields"]}
    assert entries["kubectl-client-side-apply"] == {"f:data": {"f:old": {}}}
    assert entries["gitferry"]["f:data"] == {"f:x": {}}
    assert after["data"]["old"] == "gone-from-git"


def test_adopting_an_object_no_tool_manages_writes_nothing_when_it_already_matches(
    fake: FakeKube,
) -> None:
    fake.seed(cm("plain", x="1"))
    fake.forget_calls()
    assert list(apply(fake, item(cm("plain", x="1"), take_over=True)).values()) == [
        Action.UNCHANGED
    ]
    assert writes(fake) == []


def test_adopting_an_object_a_controller_touched_since_it_was_read_still_succeeds(
    fake: FakeKube,
) -> None:
    fake.seed(kubectl_made("legacy", x="1"))
    eng = engine(fake)
    adopted = item(cm("legacy", x="1"), take_over=True)
    live = eng.read_live([adopted], Deadline.after(30))  # the ownership stage's read
    fake.request(
        "PATCH",
        "/api/v1/namespaces/team/configmaps/legacy",
        body={"metadata": {"annotations": {"controller.example.com/seen": "yes"}}},
        content_type="application/merge-patch+json",
    )  # a controller, a moment later

    changes = eng.apply([adopted], Deadline.after(30), live)

    assert [c.action for c in changes.changes] == [Action.CONFIGURED]


def test_an_object_whose_crd_was_deleted_since_discovery_names_the_missing_kind(
    fake: FakeKube,
) -> None:
    fake.seed(crd_manifest("example.com", "Widget", "widgets"))
    eng = engine(fake)  # discovery still lists Widgets
    fake.kube.request(
        "DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com"
    )
    widget = manifest("example.com/v1", "Widget", "w1", "team")
    with pytest.raises(ApplyError) as e:
        eng.apply([item(widget)], Deadline.after(30))
    assert "Widget/team/w1 (team/w1.yaml): the API serves no example.com/v1 Widget" in str(e.value)
    assert "is its CRD installed?" in str(e.value)
