"""Adoption: objects made by hand before git named them become git's whole truth.

An object created with client-side `kubectl apply` has its fields owned by
kubectl. When a sync adopts it, gitferry takes that ownership over (as `kubectl
apply --server-side` does when it migrates from client-side apply): a field that
git later stops setting goes away, the last-applied annotation goes, and kubectl
no longer appears in managedFields. Fields git never sets, changed later by
`kubectl scale` or `kubectl annotate`, stay as they are.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.harness.cluster_fixtures import Cluster, Operator
from tests.harness.git_fixtures import RepoFactory
from tests.harness.manifests import IMAGE
from tests.harness.syncs import (
    SYNC_NAME,
    annotations_of,
    create_sync,
    labels_of,
    request_reconcile,
    wait_condition,
)

pytestmark = pytest.mark.e2e

ADOPTED = "gitferry.dev/adopted"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
CLIENT_SIDE_APPLY = "kubectl-client-side-apply"


def settings(data: dict[str, str], namespace: str | None = None) -> str:
    meta: dict[str, Any] = {"name": "settings"}
    if namespace:
        meta["namespace"] = namespace
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})


def web(env: dict[str, str], *, image: str = IMAGE, namespace: str | None = None) -> str:
    """A Deployment `web` whose container has `env`; it sets no replicas."""
    meta: dict[str, Any] = {"name": "web"}
    if namespace:
        meta["namespace"] = namespace
    container = {
        "name": "web",
        "image": image,
        "env": [{"name": k, "value": v} for k, v in env.items()],
    }
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [container]},
                },
            },
        }
    )


def live(cluster: Cluster, kind: str, name: str, namespace: str) -> dict[str, Any]:
    obj = cluster.get(kind, name, namespace)
    assert obj is not None, f"{kind}/{name} is gone"
    return obj


def managers(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """manager name -> the fields it owns on the main resource (not status)."""
    out: dict[str, dict[str, Any]] = {}
    for e in obj["metadata"].get("managedFields") or []:
        if not e.get("subresource"):
            out[e["manager"]] = e.get("fieldsV1") or {}
    return out


def env_of(deployment: dict[str, Any]) -> list[dict[str, str]]:
    return deployment["spec"]["template"]["spec"]["containers"][0].get("env") or []  # type: ignore[no-any-return]


def test_object_made_with_client_side_kubectl_apply_is_adopted_and_git_is_then_its_whole_truth(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    # Before gitferry: someone ran `kubectl apply -f` (client-side) on both.
    cluster.apply(settings({"a": "1", "b": "2"}, namespace))
    cluster.apply(web({"A": "1", "B": "2"}, namespace=namespace))
    uids = {kind: live(cluster, kind, n, namespace)["metadata"]["uid"]
            for kind, n in (("configmap", "settings"), ("deployment", "web"))}  # fmt: skip
    assert LAST_APPLIED in annotations_of(live(cluster, "configmap", "settings", namespace))
    assert CLIENT_SIDE_APPLY in managers(live(cluster, "deployment", "web", namespace))

    # Then the same objects are put in git, and a sync picks them up.
    repo = repo_factory("adopt")
    sha = repo.commit(
        {"settings.yaml": settings({"a": "1", "b": "2"}), "web.yaml": web({"A": "1", "B": "2"})},
        "the objects as they are",
    )
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, interval="1h")
    wait_condition(cluster, "web", namespace, revision_sha=sha)

    for kind, name in (("configmap", "settings"), ("deployment", "web")):
        obj = live(cluster, kind, name, namespace)
        assert obj["metadata"]["uid"] == uids[kind], f"{kind}/{name} was recreated"
        assert annotations_of(obj).get(ADOPTED) == "true"
        assert labels_of(obj).get(SYNC_NAME) == "web"
        # kubectl's client-side record is gone: git owns what it sets that kubectl
        # owned. (kubectl keeps the defaults it was given at creation, which git
        # does not set: a Deployment's strategy, revisionHistoryLimit, ...)
        assert LAST_APPLIED not in annotations_of(obj), f"{kind}/{name} keeps {LAST_APPLIED}"
    cm_managers = managers(live(cluster, "configmap", "settings", namespace))
    assert CLIENT_SIDE_APPLY not in cm_managers, cm_managers  # it owned nothing else
    assert {"f:a", "f:b"} <= set(cm_managers["gitferry"]["f:data"]), cm_managers

    # A hand-made annotation after the adoption is not git's business.
    cluster.kubectl("annotate", "configmap/settings", "-n", namespace, "note=by-hand")

    # A commit drops key b and env var B: both leave the cluster.
    sha2 = repo.commit(
        {"settings.yaml": settings({"a": "1"}), "web.yaml": web({"A": "1"})}, "drop b and B"
    )
    repo.push()
    request_reconcile(cluster, "web", namespace)
    wait_condition(cluster, "web", namespace, revision_sha=sha2)

    cm = live(cluster, "configmap", "settings", namespace)
    assert cm["data"] == {"a": "1"}, "key b outlived its removal from git"
    assert annotations_of(cm).get("note") == "by-hand"
    deployment = live(cluster, "deployment", "web", namespace)
    assert env_of(deployment) == [{"name": "A", "value": "1"}], env_of(deployment)
    for obj in (cm, deployment):
        assert LAST_APPLIED not in annotations_of(obj)
        assert obj["metadata"]["uid"] in uids.values()
    assert CLIENT_SIDE_APPLY not in managers(cm)


def test_fields_git_does_not_set_stay_as_kubectl_scale_and_annotate_left_them(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("handsoff")
    sha = repo.commit(
        {"settings.yaml": settings({"a": "1"}), "web.yaml": web({"A": "1"})}, "from git"
    )
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, interval="1h")
    wait_condition(cluster, "web", namespace, revision_sha=sha)
    assert ADOPTED not in annotations_of(live(cluster, "configmap", "settings", namespace))
    assert live(cluster, "deployment", "web", namespace)["spec"]["replicas"] == 1  # defaulted

    # Someone scales the Deployment and annotates the ConfigMap; git sets neither field.
    cluster.kubectl("scale", "deployment/web", "-n", namespace, "--replicas=3")
    cluster.kubectl("annotate", "configmap/settings", "-n", namespace, "team=blue")

    # A commit changes both objects, so gitferry applies them again.
    sha2 = repo.commit(
        {
            "settings.yaml": settings({"a": "2"}),
            "web.yaml": web({"A": "2"}, image=IMAGE.replace(":1", ":2")),
        },
        "a=2, image 2",
    )
    repo.push()
    request_reconcile(cluster, "web", namespace)
    wait_condition(cluster, "web", namespace, revision_sha=sha2)

    cm = live(cluster, "configmap", "settings", namespace)
    assert cm["data"] == {"a": "2"}
    assert annotations_of(cm).get("team") == "blue", "gitferry removed an annotation it never set"
    deployment = live(cluster, "deployment", "web", namespace)
    assert env_of(deployment) == [{"name": "A", "value": "2"}]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":2")
    assert deployment["spec"]["replicas"] == 3, "gitferry reset replicas it never set"


def test_adopting_never_resets_a_field_git_does_not_set(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    # Before gitferry, made by hand: two keys; three replicas and CPU limits.
    cluster.kubectl(
        "create", "configmap", "settings", "-n", namespace, "--from-literal=a=1",
        "--from-literal=b=2",
    )  # fmt: skip
    cluster.kubectl(
        "create", "deployment", "web", "-n", namespace, f"--image={IMAGE}", "--replicas=3"
    )
    cluster.kubectl(
        "set", "resources", "deployment/web", "-n", namespace, "--limits=cpu=200m"
    )  # fmt: skip
    # git holds only key a, and a Deployment that sets neither replicas nor resources.
    repo = repo_factory("adopt-partial")
    sha = repo.commit({"settings.yaml": settings({"a": "1"}), "web.yaml": web({"A": "1"})}, "adopt")
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, interval="1h")
    wait_condition(cluster, "web", namespace, revision_sha=sha)

    cm = live(cluster, "configmap", "settings", namespace)
    assert annotations_of(cm).get(ADOPTED) == "true"
    assert cm["data"] == {"a": "1", "b": "2"}, "adoption removed a key git never set"
    deployment = live(cluster, "deployment", "web", namespace)
    assert deployment["spec"]["replicas"] == 3, "adoption reset replicas git never set"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["cpu"] == "200m", container.get("resources")
    assert env_of(deployment) == [{"name": "A", "value": "1"}]
