"""A Namespace or CRD that leaves git while git still declares objects inside it
is not deleted: deleting it would take those objects (and a volume's data) with it.

It stays, in the inventory, and a Warning Event says what keeps it; once git no
longer declares anything inside it, the next prune deletes it as usual.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.harness.cluster_fixtures import Cluster, Operator, deleted_afterwards, wait_for
from tests.harness.git_fixtures import RepoFactory
from tests.harness.manifests import (
    config_map,
    deployment,
    in_namespace,
    namespace_manifest,
    persistent_volume_claim,
    widget,
    widget_crd,
)
from tests.harness.syncs import (
    condition,
    create_sync,
    events_for,
    inventory_ids,
    request_reconcile,
    wait_condition,
    wait_event,
)

pytestmark = pytest.mark.e2e

KEPT_BY_GIT = "git still declares objects inside it"


def uid(cluster: Cluster, kind: str, name: str, namespace: str | None = None) -> str:
    obj = cluster.get(kind, name, namespace)
    assert obj is not None, f"{kind}/{name} is gone"
    assert obj["metadata"].get("deletionTimestamp") is None, f"{kind}/{name} is being deleted"
    return str(obj["metadata"]["uid"])


def gone_or_terminating(cluster: Cluster, kind: str, name: str) -> bool:
    obj = cluster.get(kind, name)
    return obj is None or bool(obj["metadata"].get("deletionTimestamp"))


def handled(cluster: Cluster, namespace: str) -> str | None:
    """The last `gitferry.dev/requested-at` value grs/web has handled."""
    sync = cluster.get("grs", "web", namespace)
    return ((sync or {}).get("status") or {}).get("lastHandledReconcileAt")


def prune_skipped(cluster: Cluster, namespace: str, what: str) -> list[dict[str, Any]]:
    """The PruneSkipped Warnings on grs/web that name `what` (e.g. `Namespace/x`)."""
    return [
        e
        for e in events_for(cluster, "web", namespace)
        if e["type"] == "Warning" and e["reason"] == "PruneSkipped" and what in e["message"]
    ]


def test_namespace_removed_from_git_stays_while_git_still_declares_a_volume_claim_and_a_deployment_in_it(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    app_ns = f"{namespace}-app"
    repo = repo_factory("nsdeclared")
    sha = repo.commit(
        {
            "namespace.yaml": namespace_manifest(app_ns),
            "data.yaml": persistent_volume_claim("data", app_ns),
            "web.yaml": in_namespace(deployment("web"), app_ns),
            "stays.yaml": config_map("stays"),
        },
        "the app, its volume and its namespace",
    )
    repo.push()
    with deleted_afterwards(cluster, "namespace", app_ns):
        create_sync(cluster, "web", namespace, repo.bare.file_url, interval="1h")
        sync = wait_condition(cluster, "web", namespace, revision_sha=sha)
        ns_id = f"_{app_ns}__Namespace"
        assert ns_id in inventory_ids(sync)
        pvc_uid = uid(cluster, "persistentvolumeclaim", "data", app_ns)
        web_uid = uid(cluster, "deployment", "web", app_ns)
        ns_uid = uid(cluster, "namespace", app_ns)

        # Someone deletes only namespace.yaml: the claim and the Deployment stay in git.
        sha2 = repo.commit({"namespace.yaml": None}, "drop namespace.yaml")
        repo.push()
        request_reconcile(cluster, "web", namespace)
        sync = wait_condition(cluster, "web", namespace, revision_sha=sha2)

        # Nothing was deleted: not the Namespace, and so not what git holds inside it.
        assert uid(cluster, "namespace", app_ns) == ns_uid, "the Namespace was deleted"
        assert uid(cluster, "persistentvolumeclaim", "data", app_ns) == pvc_uid
        assert uid(cluster, "deployment", "web", app_ns) == web_uid
        # Still gitferry's, to be pruned later.
        assert ns_id in inventory_ids(sync)
        assert condition(sync, "Ready")["reason"] == "ReconciliationSucceeded"  # type: ignore[index]
        warning = wait_event(
            cluster, "web", namespace, re.escape(f"Namespace/{app_ns} ") + ".*" + KEPT_BY_GIT,
            "Warning",
        )  # fmt: skip
        assert warning["reason"] == "PruneSkipped"
        assert f"PersistentVolumeClaim/{app_ns}/data" in warning["message"], warning["message"]
        assert f"Deployment/{app_ns}/web" in warning["message"], warning["message"]

        # The next reconcile keeps it too, and says so once, not on every reconcile.
        asked = request_reconcile(cluster, "web", namespace)
        wait_for("the requested reconcile", lambda: handled(cluster, namespace) == asked)
        assert uid(cluster, "namespace", app_ns) == ns_uid
        assert len(prune_skipped(cluster, namespace, f"Namespace/{app_ns} ")) == 1

        # A later commit removes what was inside: now the Namespace goes too.
        sha3 = repo.commit({"data.yaml": None, "web.yaml": None}, "retire the app")
        repo.push()
        request_reconcile(cluster, "web", namespace)
        sync = wait_condition(cluster, "web", namespace, revision_sha=sha3)
        assert inventory_ids(sync) == {f"{namespace}_stays__ConfigMap"}
        wait_for(
            f"Namespace/{app_ns} to be gone or terminating",
            lambda: gone_or_terminating(cluster, "namespace", app_ns),
        )
        wait_event(cluster, "web", namespace, r"\bdeleted 3\b", "Normal")


def test_crd_removed_from_git_stays_while_git_still_declares_its_custom_resources(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    group = f"{namespace}.example.com"
    crd = f"widgets.{group}"
    repo = repo_factory("crddeclared")
    sha = repo.commit(
        {
            "crd.yaml": widget_crd(group),
            "w1.yaml": widget(group, "w1", size=3),
            "stays.yaml": config_map("stays"),
        },
        "widgets",
    )
    repo.push()
    with deleted_afterwards(cluster, "crd", crd):
        create_sync(cluster, "web", namespace, repo.bare.file_url, interval="1h")
        sync = wait_condition(cluster, "web", namespace, revision_sha=sha)
        crd_id = f"_{crd}_apiextensions.k8s.io_CustomResourceDefinition"
        assert crd_id in inventory_ids(sync)
        crd_uid = uid(cluster, "crd", crd)
        w1_uid = uid(cluster, crd, "w1", namespace)

        # The CRD leaves git; a Widget of it stays.
        sha2 = repo.commit({"crd.yaml": None}, "drop crd.yaml")
        repo.push()
        request_reconcile(cluster, "web", namespace)
        sync = wait_condition(cluster, "web", namespace, revision_sha=sha2)

        assert uid(cluster, "crd", crd) == crd_uid, "the CRD was deleted"
        w1 = cluster.get(crd, "w1", namespace)
        assert w1 is not None and w1["metadata"]["uid"] == w1_uid
        assert w1["spec"] == {"size": 3}
        assert crd_id in inventory_ids(sync)
        warning = wait_event(
            cluster, "web", namespace,
            re.escape(f"CustomResourceDefinition/{crd} ") + ".*" + KEPT_BY_GIT, "Warning",
        )  # fmt: skip
        assert warning["reason"] == "PruneSkipped"
        assert f"Widget/{namespace}/w1" in warning["message"], warning["message"]

        # The Widget leaves git too: both go, the Widget first.
        sha3 = repo.commit({"w1.yaml": None}, "no more widgets")
        repo.push()
        request_reconcile(cluster, "web", namespace)
        sync = wait_condition(cluster, "web", namespace, revision_sha=sha3)
        assert inventory_ids(sync) == {f"{namespace}_stays__ConfigMap"}
        wait_for(f"CRD {crd} to be gone", lambda: gone_or_terminating(cluster, "crd", crd))
        wait_event(cluster, "web", namespace, r"\bdeleted 2\b", "Normal")
