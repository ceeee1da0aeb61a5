"""Deleting a sync: its finalizer deletes what it applied (prune: true, the default)
before the sync disappears, or lets go of it, unlabelled (prune: false). Objects a
controller owns, like a Deployment's ReplicaSet, are never gitferry's to touch."""

from __future__ import annotations

import json
import time

import pytest

from tests.harness.cluster_fixtures import Cluster, Operator, wait_for
from tests.harness.git_fixtures import RepoFactory
from tests.harness.manifests import config_map, deployment, service
from tests.harness.syncs import (
    GITFERRY_LABELS,
    PART_OF,
    SYNC_NAME,
    SYNC_NAMESPACE,
    applyset_id,
    create_sync,
    labels_of,
    wait_condition,
)

pytestmark = pytest.mark.e2e


def delete_sync(cluster: Cluster, name: str, namespace: str) -> None:
    """`kubectl delete` waits for the finalizer, as a user's script would."""
    cluster.kubectl("delete", "grs", name, "-n", namespace, "--wait=true", "--timeout=60s")
    assert cluster.get("grs", name, namespace) is None


def test_deleting_a_sync_deletes_its_objects_before_it_disappears(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("delete")
    sha = repo.commit(
        {"a.yaml": config_map("a"), "b.yaml": config_map("b"), "svc.yaml": service("web")}, "1"
    )
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url)
    wait_condition(cluster, "web", namespace, revision_sha=sha)
    cluster.kubectl("create", "configmap", "unrelated", "-n", namespace, "--from-literal=v=1")

    delete_sync(cluster, "web", namespace)
    # Checked right after `kubectl delete` returned: no waiting.
    for kind, name in [("configmap", "a"), ("configmap", "b"), ("service", "web")]:
        assert cluster.get(kind, name, namespace) is None, f"{kind}/{name} outlived its sync"
    assert cluster.get("configmap", "unrelated", namespace) is not None


def test_deleting_a_sync_with_prune_false_leaves_its_objects_unlabelled(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("keep")
    sha = repo.commit({"a.yaml": config_map("a"), "svc.yaml": service("web")}, "1")
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, prune=False)
    wait_condition(cluster, "web", namespace, revision_sha=sha)
    uids = {
        kind: cluster.get(kind, name, namespace)["metadata"]["uid"]  # type: ignore[index]
        for kind, name in [("configmap", "a"), ("service", "web")]
    }

    delete_sync(cluster, "web", namespace)
    for kind, name in [("configmap", "a"), ("service", "web")]:
        obj = cluster.get(kind, name, namespace)
        assert obj is not None, f"{kind}/{name} was deleted although prune is false"
        assert obj["metadata"]["uid"] == uids[kind]
        left = {k: v for k, v in labels_of(obj).items() if k in GITFERRY_LABELS}
        assert left == {}, f"{kind}/{name} still carries {left}"


def test_deleting_a_sync_never_touches_the_replicaset_of_its_deployment(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    """The pod template copies the sync's labels, so the ReplicaSet (and its Pods)
    carry them too; they are still the Deployment controller's, not gitferry's."""
    cluster = operator.cluster
    since = time.time()
    copied = {SYNC_NAME: "web", SYNC_NAMESPACE: namespace, PART_OF: applyset_id("web", namespace)}
    repo = repo_factory("rs")
    sha = repo.commit({"deployment.yaml": deployment("web", copied)}, "1")
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url)
    wait_condition(cluster, "web", namespace, revision_sha=sha)
    wait_for(
        "the Deployment's ReplicaSet, labelled like a gitferry object",
        lambda: json.loads(
            cluster.kubectl(
                "get", "replicasets", "-n", namespace, "-l", f"{SYNC_NAME}=web", "-o", "json"
            ).stdout
        )["items"],
    )

    delete_sync(cluster, "web", namespace)
    deployment_left = cluster.get("deployment", "web", namespace)
    assert deployment_left is None or deployment_left["metadata"].get("deletionTimestamp"), (
        "the Deployment outlived its sync"
    )
    if cluster.has_audit_log():
        for resource in ("replicasets", "pods"):
            writes = [
                (e["verb"], e["objectRef"].get("name"))
                for e in cluster.audit_writes(operator.user, since)
                if e["objectRef"].get("resource") == resource
                and e["objectRef"].get("namespace") == namespace
            ]
            assert not writes, f"gitferry wrote {resource} it does not own: {writes}"
