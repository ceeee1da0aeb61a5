"""spec.dependsOn: a sync waits for the syncs it depends on to be Ready, says so
with DependencyNotReady, and starts within seconds once they are; a cycle is
refused, naming it."""

from __future__ import annotations

import time

import pytest

from tests.harness.cluster_fixtures import Operator, wait_for
from tests.harness.git_fixtures import RepoFactory
from tests.harness.manifests import config_map
from tests.harness.syncs import condition, create_sync, wait_condition

pytestmark = pytest.mark.e2e

BROKEN = "kind: ConfigMap\nmetadata:\n  name: b\n  x: [1, 2\n"


def test_chain_of_three_waits_for_the_failing_middle_and_starts_once_it_is_fixed(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repos = {name: repo_factory(name) for name in ("base", "middle", "app")}
    shas = {
        "base": repos["base"].commit({"base.yaml": config_map("base", "1")}, "base"),
        "middle": repos["middle"].commit({"middle.yaml": BROKEN}, "a broken middle"),
        "app": repos["app"].commit({"app.yaml": config_map("app", "1")}, "app"),
    }
    for repo in repos.values():
        repo.push()
    create_sync(cluster, "base", namespace, repos["base"].bare.file_url)
    create_sync(cluster, "middle", namespace, repos["middle"].bare.file_url,
                dependsOn=[{"name": "base"}])  # fmt: skip
    # The app's own interval and retry are an hour: only the middle becoming Ready
    # can start it within the test.
    create_sync(cluster, "app", namespace, repos["app"].bare.file_url, interval="1h",
                retryInterval="1h", dependsOn=[{"name": "middle", "namespace": namespace}])  # fmt: skip

    wait_condition(cluster, "base", namespace, revision_sha=shas["base"])
    wait_condition(cluster, "middle", namespace, status="False", reason="RenderFailed")
    app = wait_condition(cluster, "app", namespace, status="False", reason="DependencyNotReady")
    ready = condition(app, "Ready")
    assert ready is not None
    # Why the middle is not ready, in its own words (RenderFailed, or its own wait for
    # the base when the app looked before the base was Ready).
    assert f"dependency {namespace}/middle is not ready: " in ready["message"]
    assert condition(app, "Stalled") is None  # waiting is not stuck
    assert cluster.get("configmap", "app", namespace) is None  # nothing applied meanwhile
    assert "lastAttemptedRevision" not in app["status"]  # nor fetched

    shas["middle"] = repos["middle"].commit({"middle.yaml": config_map("middle", "1")}, "fixed")
    repos["middle"].push()
    wait_condition(cluster, "middle", namespace, revision_sha=shas["middle"], timeout=30)
    middle_ready = time.monotonic()
    wait_condition(cluster, "app", namespace, revision_sha=shas["app"], timeout=20)
    assert time.monotonic() - middle_ready < 15  # woken, not at its hour or the 30 s requeue
    assert cluster.get("configmap", "app", namespace) is not None


def test_cycle_of_two_is_refused_naming_it(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("cycle")
    repo.commit({"a.yaml": config_map("a", "1")}, "a")
    repo.push()
    create_sync(cluster, "x", namespace, repo.bare.file_url, dependsOn=[{"name": "y"}])
    create_sync(cluster, "y", namespace, repo.bare.file_url, dependsOn=[{"name": "x"}])
    for name, other in (("x", "y"), ("y", "x")):
        sync = wait_condition(cluster, name, namespace, "Stalled", reason="DependencyCycle")
        stalled = condition(sync, "Stalled")
        assert stalled is not None
        cycle = f"{namespace}/{name} → {namespace}/{other} → {namespace}/{name}"
        assert cycle in stalled["message"], stalled["message"]
        ready = condition(sync, "Ready")
        assert ready is not None and ready["status"] == "False"
    assert cluster.get("configmap", "a", namespace) is None


def test_cross_namespace_dependency_refused_when_the_operator_forbids_it(
    operator_factory: object, namespace: str, repo_factory: RepoFactory
) -> None:
    op = operator_factory(namespace, GITFERRY_NO_CROSS_NAMESPACE_REFS="true")  # type: ignore[operator]
    cluster = op.cluster
    repo = repo_factory("tenant")
    repo.commit({"a.yaml": config_map("a", "1")}, "a")
    repo.push()
    create_sync(cluster, "t", namespace, repo.bare.file_url,
                dependsOn=[{"name": "infra", "namespace": "kube-system"}])  # fmt: skip
    sync = wait_condition(cluster, "t", namespace, "Stalled", reason="InvalidSpec")
    stalled = condition(sync, "Stalled")
    assert stalled is not None and "kube-system/infra is in another namespace" in stalled["message"]
    wait_for("nothing applied", lambda: cluster.get("configmap", "a", namespace) is None, 5)
