"""A sync applies what git holds, follows new commits, and puts back what hands changed."""

from __future__ import annotations

import time

import pytest

from tests.harness.cluster_fixtures import Cluster, Operator, wait_for
from tests.harness.git_fixtures import RepoFactory
from tests.harness.manifests import config_map, widget, widget_crd
from tests.harness.syncs import (
    create_sync,
    events_for,
    patch_sync,
    request_reconcile,
    wait_condition,
)

pytestmark = pytest.mark.e2e


def app_files(ns: str, replicas: int = 1) -> dict[str, str | bytes | None]:
    return {
        "deploy/namespace.yaml": f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n",
        "deploy/config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-config\ndata:\n  color: blue\n",
        "deploy/app.yaml": f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
        - name: web
          image: registry.invalid/web:1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
    - port: 80
""",
    }


def test_sync_applies_everything_with_labels_and_reports_revision(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("app")
    sha = repo.commit(app_files(namespace), "first")
    repo.push()
    create_sync(
        cluster, "web", namespace, repo.bare.file_url, path="deploy", ref={"branch": "main"}
    )
    sync = wait_condition(cluster, "web", namespace, revision_sha=sha)
    assert sync["status"]["lastAppliedRevision"] == f"main@sha1:{sha}"

    for kind, name, ns in [
        ("namespace", namespace, None),
        ("configmap", "web-config", namespace),
        ("deployment", "web", namespace),
        ("service", "web", namespace),
    ]:
        obj = cluster.get(kind, name, ns)
        assert obj is not None, f"{kind}/{name} missing"
        labels = obj["metadata"]["labels"]
        assert labels["gitferry.dev/sync-name"] == "web"
        assert labels["gitferry.dev/sync-namespace"] == namespace
        managers = {
            m["manager"] for m in obj["metadata"]["managedFields"] if m["operation"] == "Apply"
        }
        assert "gitferry" in managers

    ids = {e["id"] for e in sync["status"]["inventory"]["entries"]}
    assert f"{namespace}_web_apps_Deployment" in ids and f"_{namespace}__Namespace" in ids
    normal = [e for e in events_for(cluster, "web", namespace) if e["type"] == "Normal"]
    assert any("created" in e["message"] for e in normal)

    # `kubectl wait` is how users script it.
    cluster.kubectl("wait", "--for=condition=Ready", "grs/web", "-n", namespace, "--timeout=10s")

    # A new commit: more replicas and a new Secret.
    files = app_files(namespace, replicas=3)
    files["deploy/secret.yaml"] = (
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web-secret\nstringData:\n  token: abc\n"
    )
    sha2 = repo.commit(files, "scale up, add a secret")
    repo.push()
    wait_condition(cluster, "web", namespace, revision_sha=sha2, timeout=60)
    assert cluster.get("deployment", "web", namespace)["spec"]["replicas"] == 3  # type: ignore[index]
    secret = cluster.get("secret", "web-secret", namespace)
    assert secret is not None and secret["data"]["token"] == "YWJj"


def test_drift_is_corrected_and_hand_added_fields_stay(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("drift")
    sha = repo.commit(app_files(namespace), "first")
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, path="deploy", interval="3s")
    wait_condition(cluster, "web", namespace, revision_sha=sha)

    cluster.kubectl("scale", "deployment/web", "-n", namespace, "--replicas=5")
    cluster.kubectl(
        "label",
        "configmap/web-config",
        "-n",
        namespace,
        "gitferry.dev/sync-name=other",
        "--overwrite",
    )
    cluster.kubectl("annotate", "configmap/web-config", "-n", namespace, "team=payments")
    cluster.kubectl("delete", "service/web", "-n", namespace)

    wait_for(
        "replicas restored to 1",
        lambda: cluster.get("deployment", "web", namespace)["spec"]["replicas"] == 1,
    )  # type: ignore[index]
    wait_for("the deleted Service recreated", lambda: cluster.get("service", "web", namespace))
    cm = wait_for(
        "the label restored",
        lambda: (
            (c := cluster.get("configmap", "web-config", namespace))
            and c["metadata"]["labels"]["gitferry.dev/sync-name"] == "web"
            and c
        ),
    )
    assert cm["metadata"]["annotations"]["team"] == "payments"


def test_crd_and_custom_resource_in_one_commit(
    operator: Operator, namespace: str, repo_factory: RepoFactory, cluster: Cluster
) -> None:
    group = f"{namespace}.example.com"
    repo = repo_factory("crd")
    sha = repo.commit(
        {"crd.json": widget_crd(group), "widget.yaml": widget(group, "w1", size=3)}, "crd + cr"
    )
    repo.push()
    try:
        create_sync(cluster, "widgets", namespace, repo.bare.file_url)
        wait_condition(cluster, "widgets", namespace, revision_sha=sha)
        w = cluster.get(f"widgets.{group}", "w1", namespace)
        assert w is not None and w["spec"]["size"] == 3
    finally:
        cluster.kubectl("delete", "crd", f"widgets.{group}", "--wait=false", check=False)


def test_requested_at_applies_a_new_commit_before_the_interval(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("now")
    sha = repo.commit({"cm.yaml": config_map("c", "1")}, "1")
    repo.push()
    create_sync(cluster, "now", namespace, repo.bare.file_url, interval="1h")
    wait_condition(cluster, "now", namespace, revision_sha=sha)

    sha2 = repo.commit({"cm.yaml": config_map("c", "2")}, "2")
    repo.push()
    stamp = request_reconcile(cluster, "now", namespace)
    sync = wait_condition(cluster, "now", namespace, revision_sha=sha2, timeout=30)
    assert cluster.get("configmap", "c", namespace)["data"]["v"] == "2"  # type: ignore[index]
    wait_for(
        "lastHandledReconcileAt to echo the annotation",
        lambda: (
            cluster.get("grs", "now", namespace)["status"].get("lastHandledReconcileAt") == stamp
        ),  # type: ignore[index]
        10,
    )
    del sync


def test_suspend_stops_changes_until_resumed(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("suspend")
    sha = repo.commit({"cm.yaml": config_map("c", "1")}, "1")
    repo.push()
    create_sync(cluster, "s", namespace, repo.bare.file_url, interval="2s")
    wait_condition(cluster, "s", namespace, revision_sha=sha)

    patch_sync(cluster, "s", namespace, {"spec": {"suspend": True}})
    wait_condition(cluster, "s", namespace, status="False", reason="Suspended")
    sha2 = repo.commit({"cm.yaml": config_map("c", "2")}, "2")
    repo.push()
    time.sleep(5)  # more than two intervals: a running sync would have applied it
    assert cluster.get("configmap", "c", namespace)["data"]["v"] == "1"  # type: ignore[index]

    patch_sync(cluster, "s", namespace, {"spec": {"suspend": False}})
    wait_condition(cluster, "s", namespace, revision_sha=sha2)
    assert cluster.get("configmap", "c", namespace)["data"]["v"] == "2"  # type: ignore[index]
