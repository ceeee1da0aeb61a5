"""Ownership: which sync an object belongs to, and what happens at the borders.

An object that existed before git named it is adopted, and left behind (unlabelled)
when git drops it again. Two syncs never fight over one object: the second one
reports OwnershipConflict. A file moved from one sync's path to another's hands
the object over without deleting it. Each sync is an ApplySet parent that kubectl
recognises as gitferry's and refuses to take over.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.cluster_fixtures import Operator, wait_for
from tests.harness.git_fixtures import RepoFactory
from tests.harness.manifests import config_map, deployment
from tests.harness.syncs import (
    GITFERRY_LABELS,
    PART_OF,
    SYNC_NAME,
    SYNC_NAMESPACE,
    annotations_of,
    applyset_id,
    condition,
    create_sync,
    inventory_ids,
    labels_of,
    patch_sync,
    wait_condition,
    wait_event,
)

pytestmark = pytest.mark.e2e

KUBECTL = str(Path(sys.executable).parent / "kubectl")
ADOPTED = "gitferry.dev/adopted"
CLAIMED_BY = "gitferry.dev/claimed-by"


def test_pre_existing_object_put_in_git_is_adopted_and_left_behind_when_removed(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    cluster.kubectl("create", "configmap", "legacy", "-n", namespace, "--from-literal=v=by-hand")
    uid = cluster.get("configmap", "legacy", namespace)["metadata"]["uid"]  # type: ignore[index]

    repo = repo_factory("adopt")
    sha = repo.commit(
        {"legacy.yaml": config_map("legacy", "from-git"), "app.yaml": config_map("app")}, "1"
    )
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url)
    sync = wait_condition(cluster, "web", namespace, revision_sha=sha)

    legacy = cluster.get("configmap", "legacy", namespace)
    assert legacy is not None and legacy["metadata"]["uid"] == uid
    assert legacy["data"]["v"] == "from-git"
    assert annotations_of(legacy).get(ADOPTED) == "true"
    assert labels_of(legacy).get(SYNC_NAME) == "web"
    assert labels_of(legacy).get(SYNC_NAMESPACE) == namespace
    assert f"{namespace}_legacy__ConfigMap" in inventory_ids(sync)
    # What gitferry created itself is not marked adopted.
    assert ADOPTED not in annotations_of(cluster.get("configmap", "app", namespace))

    # Git drops it again: the object stays as it is, only no longer gitferry's.
    sha2 = repo.commit({"legacy.yaml": None}, "stop managing legacy")
    repo.push()
    sync = wait_condition(cluster, "web", namespace, revision_sha=sha2)
    legacy = cluster.get("configmap", "legacy", namespace)
    assert legacy is not None, "gitferry deleted an object it had adopted"
    assert legacy["metadata"]["uid"] == uid
    assert legacy["metadata"].get("deletionTimestamp") is None
    assert legacy["data"] == {"v": "from-git"}
    left = {k: v for k, v in labels_of(legacy).items() if k in GITFERRY_LABELS}
    assert left == {}, f"gitferry's labels are still on the object it let go: {left}"
    assert f"{namespace}_legacy__ConfigMap" not in inventory_ids(sync)


def test_second_sync_holding_the_same_object_reports_ownership_conflict(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    first = repo_factory("first")
    sha1 = first.commit({"shared.yaml": config_map("shared", "alpha")}, "1")
    first.push()
    create_sync(cluster, "alpha", namespace, first.bare.file_url)
    wait_condition(cluster, "alpha", namespace, revision_sha=sha1)

    second = repo_factory("second")
    second.commit(
        {"shared.yaml": config_map("shared", "beta"), "own.yaml": config_map("beta-own")}, "1"
    )
    second.push()
    create_sync(cluster, "beta", namespace, second.bare.file_url)
    sync = wait_condition(cluster, "beta", namespace, status="False", reason="OwnershipConflict")
    message = condition(sync, "Ready")["message"]  # type: ignore[index]
    assert "alpha" in message and "shared" in message, message

    shared = cluster.get("configmap", "shared", namespace)
    assert labels_of(shared)[SYNC_NAME] == "alpha"
    assert labels_of(shared)[PART_OF] == applyset_id("alpha", namespace)
    assert shared["data"]["v"] == "alpha"  # type: ignore[index]
    assert f"{namespace}_shared__ConfigMap" not in inventory_ids(sync)
    # The first sync is not disturbed.
    wait_condition(cluster, "alpha", namespace, revision_sha=sha1, timeout=5)


def test_moving_a_file_between_syncs_hands_the_object_over_without_recreating_it(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("move")
    sha = repo.commit(
        {
            "a/moved.yaml": config_map("moved", "a"),
            "a/stays-in-a.yaml": config_map("stays-in-a"),
            "b/stays-in-b.yaml": config_map("stays-in-b"),
        },
        "two syncs",
    )
    repo.push()
    create_sync(cluster, "sync-a", namespace, repo.bare.file_url, path="a")
    create_sync(cluster, "sync-b", namespace, repo.bare.file_url, path="b")
    wait_condition(cluster, "sync-a", namespace, revision_sha=sha)
    wait_condition(cluster, "sync-b", namespace, revision_sha=sha)
    moved = cluster.get("configmap", "moved", namespace)
    assert labels_of(moved)[SYNC_NAME] == "sync-a"
    uid = moved["metadata"]["uid"]  # type: ignore[index]

    # Make sure B sees the move before A does.
    patch_sync(cluster, "sync-a", namespace, {"spec": {"suspend": True}})
    wait_condition(cluster, "sync-a", namespace, status="False", reason="Suspended")
    sha2 = repo.commit(
        {"a/moved.yaml": None, "b/moved.yaml": config_map("moved", "b")}, "move to b"
    )
    repo.push()

    # B: still in A's inventory, so not yet B's; B records its claim.
    sync_b = wait_condition(
        cluster, "sync-b", namespace, status="False", reason="OwnershipConflict"
    )
    assert "sync-a" in condition(sync_b, "Ready")["message"]  # type: ignore[index]
    wait_for(
        "B's claim on the ConfigMap",
        lambda: (
            annotations_of(cluster.get("configmap", "moved", namespace)).get(CLAIMED_BY)
            == f"{namespace}/sync-b"
        ),
    )
    assert labels_of(cluster.get("configmap", "moved", namespace))[SYNC_NAME] == "sync-a"

    # A resumes: the object left A's git and B claims it, so A hands it over.
    patch_sync(cluster, "sync-a", namespace, {"spec": {"suspend": False}})
    sync_a = wait_condition(cluster, "sync-a", namespace, revision_sha=sha2)
    wait_event(cluster, "sync-a", namespace, r"handed over")
    assert f"{namespace}_moved__ConfigMap" not in inventory_ids(sync_a)

    sync_b = wait_condition(cluster, "sync-b", namespace, revision_sha=sha2)
    assert f"{namespace}_moved__ConfigMap" in inventory_ids(sync_b)
    moved = cluster.get("configmap", "moved", namespace)
    assert moved is not None and moved["metadata"]["uid"] == uid, "the ConfigMap was recreated"
    assert labels_of(moved)[SYNC_NAME] == "sync-b"
    assert labels_of(moved)[PART_OF] == applyset_id("sync-b", namespace)
    assert moved["data"]["v"] == "b"


def test_sync_is_an_applyset_parent_that_kubectl_will_not_take_over(
    operator: Operator, namespace: str, repo_factory: RepoFactory, tmp_path: Path
) -> None:
    cluster = operator.cluster
    cluster.kubectl("create", "configmap", "unrelated", "-n", namespace, "--from-literal=v=1")
    repo = repo_factory("applyset")
    sha = repo.commit(
        {
            "c1.yaml": config_map("c1"),
            "c2.yaml": config_map("c2"),
            "deployment.yaml": deployment("web"),
        },
        "1",
    )
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url)
    sync = wait_condition(cluster, "web", namespace, revision_sha=sha)

    expected_id = applyset_id("web", namespace)
    assert labels_of(sync).get("applyset.kubernetes.io/id") == expected_id
    tooling = annotations_of(sync).get("applyset.kubernetes.io/tooling", "")
    assert re.fullmatch(r"gitferry/v?\d+\.\d+\.\d+\S*", tooling), tooling
    kinds = annotations_of(sync).get("applyset.kubernetes.io/contains-group-kinds")
    assert kinds == "ConfigMap,Deployment.apps"

    members = cluster.kubectl(
        "get", "configmaps", "-n", namespace, "-l", f"{PART_OF}={expected_id}", "-o", "name"
    ).stdout.split()
    assert sorted(members) == ["configmap/c1", "configmap/c2"]
    deployments = cluster.kubectl(
        "get", "deployments", "-n", namespace, "-l", f"{PART_OF}={expected_id}", "-o", "name"
    ).stdout.split()
    assert deployments == ["deployment.apps/web"]

    # kubectl's own ApplySet pruning must refuse a set that gitferry manages.
    intruder = tmp_path / "intruder.yaml"
    intruder.write_text(config_map("intruder"))
    proc = subprocess.run(
        [
            KUBECTL, "apply", "--prune", "--applyset=gitrepositorysyncs.gitferry.dev/web",
            "-n", namespace, "-f", str(intruder),
        ],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "KUBECTL_APPLYSET": "true"},
    )  # fmt: skip
    assert proc.returncode != 0, f"kubectl took over gitferry's ApplySet:\n{proc.stdout}"
    assert "gitferry" in proc.stderr, proc.stderr
    assert cluster.get("configmap", "intruder", namespace) is None
    for name in ("c1", "c2", "unrelated"):
        assert cluster.get("configmap", name, namespace) is not None
    after = cluster.get("grs", "web", namespace)
    assert annotations_of(after).get("applyset.kubernetes.io/tooling") == tooling
