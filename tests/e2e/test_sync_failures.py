"""When git holds something wrong, the status says what and where, and the cluster
keeps the last good state."""

from __future__ import annotations

import pytest

from tests.harness.cluster_fixtures import Operator
from tests.harness.git_fixtures import RepoFactory
from tests.harness.manifests import config_map
from tests.harness.syncs import condition, create_sync, events_for, patch_sync, wait_condition

pytestmark = pytest.mark.e2e


def test_invalid_yaml_is_render_failed_naming_file_and_line(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("badyaml")
    sha = repo.commit({"a.yaml": config_map("a", "1")}, "good")
    repo.push()
    create_sync(cluster, "y", namespace, repo.bare.file_url)
    wait_condition(cluster, "y", namespace, revision_sha=sha)

    repo.commit(
        {
            "a.yaml": config_map("a", "2"),
            "b.yaml": "kind: ConfigMap\nmetadata:\n  name: b\n  x: [1, 2\n",
        },
        "bad",
    )
    repo.push()
    sync = wait_condition(cluster, "y", namespace, status="False", reason="RenderFailed")
    ready = condition(sync, "Ready")
    assert ready is not None and "b.yaml" in ready["message"] and "line" in ready["message"]
    assert "Traceback" not in ready["message"]
    stalled = condition(sync, "Stalled")
    assert stalled is not None and stalled["reason"] == "RenderFailed"
    assert cluster.get("configmap", "a", namespace)["data"]["v"] == "1"  # type: ignore[index]
    assert sync["status"]["lastAppliedRevision"].endswith(sha)
    warnings = [e for e in events_for(cluster, "y", namespace) if e["type"] == "Warning"]
    assert any("b.yaml" in e["message"] for e in warnings)


def test_schema_invalid_object_fails_apply_and_writes_none(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("badschema")
    bad = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: broken\n"
        "spec:\n  replicas: many\n  selector: {matchLabels: {a: b}}\n"
        "  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i}]}}\n"
    )
    repo.commit(
        {
            "ok1.yaml": config_map("ok1", "1"),
            "ok2.yaml": config_map("ok2", "1"),
            "zz.yaml": bad,
        },
        "x",
    )
    repo.push()
    create_sync(cluster, "s", namespace, repo.bare.file_url)
    sync = wait_condition(cluster, "s", namespace, status="False", reason="ApplyFailed")
    message = condition(sync, "Ready")["message"]  # type: ignore[index]
    assert f"Deployment/{namespace}/broken" in message and "zz.yaml" in message
    assert cluster.get("configmap", "ok1", namespace) is None
    assert cluster.get("configmap", "ok2", namespace) is None


def test_missing_path_stalls_until_a_commit_creates_it(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("nopath")
    repo.commit({"README.md": "nothing here yet"}, "empty")
    repo.push()
    create_sync(cluster, "p", namespace, repo.bare.file_url, path="deploy/prod")
    sync = wait_condition(cluster, "p", namespace, type_="Stalled", reason="PathNotFound")
    assert "deploy/prod" in condition(sync, "Ready")["message"]  # type: ignore[index]

    sha = repo.commit({"deploy/prod/cm.yaml": config_map("c", "1")}, "add path")
    repo.push()
    sync = wait_condition(cluster, "p", namespace, revision_sha=sha)
    assert condition(sync, "Stalled") is None


def test_immutable_selector_needs_force(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster

    def deployment(app: str) -> str:
        return (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n"
            f"  selector: {{matchLabels: {{app: {app}}}}}\n"
            f"  template: {{metadata: {{labels: {{app: {app}}}}}, spec: {{containers: [{{name: c, image: i}}]}}}}\n"
        )

    repo = repo_factory("immutable")
    sha = repo.commit({"d.yaml": deployment("one")}, "1")
    repo.push()
    create_sync(cluster, "d", namespace, repo.bare.file_url)
    wait_condition(cluster, "d", namespace, revision_sha=sha)
    uid = cluster.get("deployment", "web", namespace)["metadata"]["uid"]  # type: ignore[index]

    sha2 = repo.commit({"d.yaml": deployment("two")}, "2")
    repo.push()
    sync = wait_condition(cluster, "d", namespace, status="False", reason="ApplyFailed")
    message = condition(sync, "Ready")["message"]  # type: ignore[index]
    assert "immutable" in message and "force" in message

    patch_sync(cluster, "d", namespace, {"spec": {"force": True}})
    wait_condition(cluster, "d", namespace, revision_sha=sha2)
    live = cluster.get("deployment", "web", namespace)
    assert live is not None and live["metadata"]["uid"] != uid
    assert live["spec"]["selector"]["matchLabels"] == {"app": "two"}


def test_ignored_and_dot_directories_and_remote_bases(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("ignore")
    sha = repo.commit(
        {
            ".github/workflows/ci.yaml": "on: push\njobs: {}\n",
            "values.yaml": "replicas: 3\n",
            ".gitferryignore": "values.yaml\n",
            "cm.yaml": config_map("c", "1"),
        },
        "with noise",
    )
    repo.push()
    create_sync(cluster, "i", namespace, repo.bare.file_url)
    wait_condition(cluster, "i", namespace, revision_sha=sha)
    assert cluster.get("configmap", "c", namespace) is not None

    repo.commit(
        {
            "overlay/kustomization.yaml": "resources:\n  - https://github.com/example/repo//base?ref=main\n"
        },
        "remote base",
    )
    repo.push()
    create_sync(cluster, "k", namespace, repo.bare.file_url, path="overlay")
    sync = wait_condition(cluster, "k", namespace, status="False", reason="RenderFailed")
    message = condition(sync, "Ready")["message"]  # type: ignore[index]
    assert "kustomization.yaml" in message and "remote" in message.lower()


def test_kustomize_overlay_with_base_and_patch(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("kustomize")
    sha = repo.commit(
        {
            "base/kustomization.yaml": "resources:\n  - cm.yaml\n",
            "base/cm.yaml": config_map("settings", "base"),
            "overlays/prod/kustomization.yaml": (
                "resources:\n  - ../../base\nnamePrefix: prod-\npatches:\n  - path: patch.yaml\n"
            ),
            "overlays/prod/patch.yaml": config_map("settings", "prod"),
        },
        "overlay",
    )
    repo.push()
    create_sync(cluster, "kz", namespace, repo.bare.file_url, path="overlays/prod")
    wait_condition(cluster, "kz", namespace, revision_sha=sha)
    cm = cluster.get("configmap", "prod-settings", namespace)
    assert cm is not None and cm["data"]["v"] == "prod"
