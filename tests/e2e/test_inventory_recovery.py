"""A sync whose status was lost (restored from a backup without status) rebuilds
its inventory from the ownership labels, so pruning still works."""

from __future__ import annotations

import json

import pytest

from tests.harness.cluster_fixtures import Operator, wait_for
from tests.harness.git_fixtures import RepoFactory
from tests.harness.manifests import config_map
from tests.harness.syncs import create_sync, patch_sync, wait_condition

pytestmark = pytest.mark.e2e


def test_lost_status_is_rebuilt_from_labels_and_prune_still_works(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("restore")
    sha = repo.commit({"a.yaml": config_map("a"), "b.yaml": config_map("b")}, "a and b")
    repo.push()
    create_sync(cluster, "r", namespace, repo.bare.file_url)
    wait_condition(cluster, "r", namespace, revision_sha=sha)

    patch_sync(cluster, "r", namespace, {"spec": {"suspend": True}})
    wait_condition(cluster, "r", namespace, status="False", reason="Suspended")
    cluster.kubectl(
        "patch", "grs", "r", "-n", namespace, "--subresource=status", "--type=json",
        "-p", json.dumps([{"op": "remove", "path": "/status/inventory"}]),
    )  # fmt: skip
    sha2 = repo.commit({"b.yaml": None}, "b leaves git")
    repo.push()

    patch_sync(cluster, "r", namespace, {"spec": {"suspend": False}})
    sync = wait_condition(cluster, "r", namespace, revision_sha=sha2)
    wait_for("b to be pruned", lambda: cluster.get("configmap", "b", namespace) is None, 30)
    assert cluster.get("configmap", "a", namespace) is not None
    assert [e["id"] for e in sync["status"]["inventory"]["entries"]] == [
        f"{namespace}_a__ConfigMap"
    ]
