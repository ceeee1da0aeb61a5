"""Deleting a suspended sync orphans its objects, as Flux does: suspend means no
changes at all, so the finalizer deletes nothing. The objects stay as they are,
only gitferry's labels go, and the sync disappears."""

from __future__ import annotations

import time

import pytest

from tests.harness.cluster_fixtures import Operator
from tests.harness.git_fixtures import RepoFactory
from tests.harness.manifests import config_map, deployment, service
from tests.harness.syncs import (
    GITFERRY_LABELS,
    create_sync,
    labels_of,
    patch_sync,
    wait_condition,
    wait_event,
)

pytestmark = pytest.mark.e2e

OBJECTS = [("configmap", "settings"), ("service", "web"), ("deployment", "web")]


def test_deleting_a_suspended_sync_leaves_its_objects_in_place_without_gitferry_labels(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("suspended")
    sha = repo.commit(
        {
            "settings.yaml": config_map("settings"),
            "service.yaml": service("web"),
            "deployment.yaml": deployment("web"),
        },
        "web",
    )
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, interval="1h")
    wait_condition(cluster, "web", namespace, revision_sha=sha)
    uids = {}
    for kind, name in OBJECTS:
        obj = cluster.get(kind, name, namespace)
        assert obj is not None and set(GITFERRY_LABELS) <= set(labels_of(obj))
        uids[kind] = obj["metadata"]["uid"]

    patch_sync(cluster, "web", namespace, {"spec": {"suspend": True}})
    wait_condition(cluster, "web", namespace, status="False", reason="Suspended")

    since = time.time()
    # `kubectl delete` waits for the finalizer, as a user's script would.
    cluster.kubectl("delete", "grs", "web", "-n", namespace, "--wait=true", "--timeout=60s")
    assert cluster.get("grs", "web", namespace) is None

    # Checked right after `kubectl delete` returned: no waiting.
    for kind, name in OBJECTS:
        obj = cluster.get(kind, name, namespace)
        assert obj is not None, f"{kind}/{name} was deleted with a suspended sync"
        assert obj["metadata"]["uid"] == uids[kind], f"{kind}/{name} was recreated"
        assert obj["metadata"].get("deletionTimestamp") is None
        left = {k: v for k, v in labels_of(obj).items() if k in GITFERRY_LABELS}
        assert left == {}, f"{kind}/{name} still carries {left}"
    # The pod template's own labels are the user's, not gitferry's: untouched.
    web = cluster.get("deployment", "web", namespace)
    assert web["spec"]["template"]["metadata"]["labels"] == {"app": "web"}  # type: ignore[index]

    wait_event(cluster, "web", namespace, r"suspended.*orphaned", "Warning")
    if cluster.has_audit_log():
        deletes = [
            f"{e['objectRef'].get('resource')}/{e['objectRef'].get('name')}"
            for e in cluster.audit_writes(operator.user, since)
            if e["verb"] == "delete" and e["objectRef"].get("namespace") == namespace
        ]
        assert deletes == [], f"gitferry deleted {deletes} for a suspended sync"
