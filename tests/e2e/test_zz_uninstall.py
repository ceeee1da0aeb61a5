"""Uninstalling gitferry (deleting its CRD) orphans what the syncs applied: the
workloads keep running, they are never pruned.

DESTRUCTIVE for the whole session: the CRD is shared by every test. The file is
named to sort last, and it installs gitferry again at the end, the way the
`gitferry_installed` fixture does, so that anything run after it still works.
"""

from __future__ import annotations

import json

import pytest

from tests.harness.cluster_fixtures import SA_NAMESPACE, Cluster, Operator, wait_for
from tests.harness.controlplane import REPO
from tests.harness.git_fixtures import RepoFactory
from tests.harness.manifests import config_map
from tests.harness.syncs import create_sync, wait_condition

pytestmark = pytest.mark.e2e

CRD = "gitrepositorysyncs.gitferry.dev"


def syncs_everywhere(cluster: Cluster) -> list[tuple[str, str]]:
    proc = cluster.kubectl("get", "grs", "-A", "-o", "json", check=False)
    if proc.returncode != 0:
        return []  # the CRD is gone
    return [
        (s["metadata"]["namespace"], s["metadata"]["name"])
        for s in json.loads(proc.stdout)["items"]
    ]


def release_leftover_syncs(cluster: Cluster, keep_namespace: str | None) -> None:
    """Syncs that earlier tests left behind (their namespaces are being deleted, their
    operators are gone) keep their finalizer forever, and would hold the CRD's
    deletion. Nothing will ever reconcile them again: drop their finalizers."""
    for ns, name in syncs_everywhere(cluster):
        if ns == keep_namespace:
            continue
        cluster.kubectl(
            "patch", "grs", name, "-n", ns, "--type=merge",
            "-p", '{"metadata":{"finalizers":null}}',
            check=False,
        )  # fmt: skip


def reinstall(cluster: Cluster) -> None:
    """What the `gitferry_installed` fixture does, once the old CRD is fully gone."""
    crd = cluster.get("crd", CRD)
    if crd is not None and crd["metadata"].get("deletionTimestamp"):
        release_leftover_syncs(cluster, keep_namespace=None)
        wait_for("the old CRD to finish deleting", lambda: cluster.get("crd", CRD) is None, 60)
    cluster.kubectl("apply", "-k", str(REPO / "manifests"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{CRD}")
    cluster.kubectl("scale", "-n", SA_NAMESPACE, "deployment/gitferry", "--replicas=0")


def test_deleting_the_crd_leaves_the_synced_objects_in_place(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("uninstall")
    sha = repo.commit({"a.yaml": config_map("a"), "b.yaml": config_map("b")}, "1")
    repo.push()
    try:
        # prune is true (the default): a plain `kubectl delete grs` would delete a and b.
        create_sync(cluster, "web", namespace, repo.bare.file_url)
        wait_condition(cluster, "web", namespace, revision_sha=sha)
        uids = {
            name: cluster.get("configmap", name, namespace)["metadata"]["uid"]  # type: ignore[index]
            for name in ("a", "b")
        }
        release_leftover_syncs(cluster, keep_namespace=namespace)

        cluster.kubectl("delete", "crd", CRD, "--wait=false")
        try:
            wait_for("the CRD to be gone", lambda: cluster.get("crd", CRD) is None, 60)
        except AssertionError as e:
            left = [n for n in uids if cluster.get("configmap", n, namespace) is not None]
            raise AssertionError(f"{e}\nconfigmaps still there: {left}") from None

        for name, uid in uids.items():
            cm = cluster.get("configmap", name, namespace)
            assert cm is not None, f"uninstalling gitferry deleted configmap/{name}"
            assert cm["metadata"]["uid"] == uid
            assert cm["metadata"].get("deletionTimestamp") is None
    finally:
        reinstall(cluster)
