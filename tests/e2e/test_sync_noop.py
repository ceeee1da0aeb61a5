"""A reconcile of an unchanged repository writes nothing to the API server."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.harness.cluster_fixtures import Operator, wait_for
from tests.harness.git_fixtures import RepoFactory
from tests.harness.syncs import create_sync, wait_condition

pytestmark = pytest.mark.e2e


def hundred_objects() -> dict[str, str | bytes | None]:
    cms = "---\n".join(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n  i: '{i}'\n"
        for i in range(60)
    )
    svcs = "---\n".join(
        f"apiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{i}\nspec:\n  selector: {{app: a{i}}}\n"
        "  ports: [{port: 80}]\n"
        for i in range(20)
    )
    deps = "---\n".join(
        f"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: dep-{i}\nspec:\n"
        f"  selector: {{matchLabels: {{app: a{i}}}}}\n"
        f"  template: {{metadata: {{labels: {{app: a{i}}}}}, spec: {{containers: [{{name: c, image: i}}]}}}}\n"
        for i in range(20)
    )
    return {"configmaps.yaml": cms, "services.yaml": svcs, "deployments.yaml": deps}


def reconciles(operator: Operator) -> int:
    return operator.log().count("action=reconcile result=ok")


def test_noop_reconcile_of_100_objects_writes_nothing(
    operator_factory: Callable[..., Operator], namespace: str, repo_factory: RepoFactory
) -> None:
    # The full verification (read and dry-run every object): the drift watches would
    # answer from their cache instead (test_drift.py counts that no-op's requests).
    operator = operator_factory(namespace, GITFERRY_DRIFT_WATCHES="false")
    cluster = operator.cluster
    if cluster.control_plane is None:
        pytest.fail("this test reads the API server's audit log: run it on the local control plane")
    repo = repo_factory("hundred")
    sha = repo.commit(hundred_objects(), "100 objects")
    repo.push()
    create_sync(cluster, "big", namespace, repo.bare.file_url, interval="2s")
    sync = wait_condition(cluster, "big", namespace, revision_sha=sha, timeout=120)
    assert len(sync["status"]["inventory"]["entries"]) == 100

    # Let the first reconciles (and the controllers' status updates) settle.
    done = reconciles(operator)
    wait_for("another reconcile", lambda: reconciles(operator) > done, 30)
    since = time.time()
    done = reconciles(operator)
    wait_for("three no-op reconciles", lambda: reconciles(operator) >= done + 3, 60)
    time.sleep(0.5)  # the audit log is written when each request completes

    writes = cluster.audit_writes(operator.user, since)
    assert writes == [], [f"{w['verb']} {w['requestURI']}" for w in writes]
    assert "created=0 configured=0" in operator.log().rsplit("action=apply", 1)[-1]
