"""Prune: what leaves git leaves the cluster, and nothing else ever does.

A file removed from git → its object is deleted (in reverse apply order) and the
inventory forgets it. But gitferry never deletes what it must not: objects marked
`gitferry.dev/prune: disabled`, objects relabelled for another sync, objects a
controller owns, a Namespace or CRD that still holds things gitferry did not
create; an empty revision is refused unless the sync allows it; a git server that
is down prunes nothing; a crash between apply and prune leaks nothing.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from itertools import pairwise
from typing import Any

import pytest

from tests.harness.cluster_fixtures import Cluster, Operator, deleted_afterwards, wait_for
from tests.harness.git_fixtures import RepoFactory
from tests.harness.gitrepo import WorkRepo
from tests.harness.gitserver import HttpGitServer
from tests.harness.manifests import (
    config_map,
    deployment,
    namespace_manifest,
    service,
    widget,
    widget_crd,
)
from tests.harness.syncs import (
    PART_OF,
    SYNC_NAME,
    SYNC_NAMESPACE,
    applyset_id,
    condition,
    create_git_auth_secret,
    create_sync,
    events_for,
    inventory_ids,
    patch_sync,
    request_reconcile,
    wait_condition,
    wait_event,
)

pytestmark = pytest.mark.e2e

CRASH_HOOK = "GITFERRY_TEST_CRASH_BEFORE_PRUNE"


# --- what git holds ------------------------------------------------------------


@contextlib.contextmanager
def synced_then_deleted(
    cluster: Cluster,
    namespace: str,
    repo: WorkRepo,
    files: Mapping[str, str | bytes | None],
    kind: str,
    name: str,
) -> Iterator[dict[str, Any]]:
    """Sync `web` applies `files` and a ConfigMap `stays` that no commit removes; yields
    the sync once Ready. `kind/name`, which the files create cluster-wide, is deleted at
    the end."""
    sha = repo.commit({**files, "stays.yaml": config_map("stays")}, f"with {kind}/{name}")
    repo.push()
    with deleted_afterwards(cluster, kind, name):
        create_sync(cluster, "web", namespace, repo.bare.file_url)
        yield wait_condition(cluster, "web", namespace, revision_sha=sha)


# --- what the cluster says -----------------------------------------------------


def read_sync(cluster: Cluster, name: str, namespace: str) -> dict[str, Any]:
    sync = cluster.get("grs", name, namespace)
    assert sync is not None, f"grs/{name} is gone"
    return sync


def wait_gone(cluster: Cluster, kind: str, name: str, namespace: str | None = None) -> None:
    wait_for(f"{kind}/{name} to be gone", lambda: cluster.get(kind, name, namespace) is None, 60)


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def operator_writes(
    cluster: Cluster, operator: Operator, since: float, resource: str, namespace: str
) -> list[dict[str, Any]]:
    """Writes (not dry-run) the operator made to `resource` in `namespace` since `since`."""
    return [
        e
        for e in cluster.audit_writes(operator.user, since)
        if (e.get("objectRef") or {}).get("resource") == resource
        and (e.get("objectRef") or {}).get("namespace") == namespace
    ]


def assert_deleted_in_order(
    cluster: Cluster, operator: Operator, since: float, order: list[tuple[str, str]]
) -> None:
    """Each (resource, name) was deleted by gitferry, and each deletion had finished
    before the next one was sent. Needs the local control plane's audit log."""
    if not cluster.has_audit_log():
        return
    deletes = [
        e
        for e in cluster.audit_writes(operator.user, since)
        if e["verb"] == "delete" and (e.get("responseStatus") or {}).get("code", 500) < 300
    ]

    def find(resource: str, name: str) -> dict[str, Any]:
        for e in deletes:
            ref = e.get("objectRef") or {}
            if ref.get("resource") == resource and ref.get("name") == name:
                return e
        seen = [(e["objectRef"].get("resource"), e["objectRef"].get("name")) for e in deletes]
        raise AssertionError(f"gitferry never deleted {resource}/{name}; it deleted {seen}")

    for (r1, n1), (r2, n2) in pairwise(order):
        first, then = find(r1, n1), find(r2, n2)
        assert _epoch(first["stageTimestamp"]) <= _epoch(then["requestReceivedTimestamp"]), (
            f"{r2}/{n2} was deleted before the deletion of {r1}/{n1} had finished"
        )


# --- prune ---------------------------------------------------------------------


def test_removing_a_file_from_git_deletes_its_object_and_its_inventory_entry(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("prune")
    sha = repo.commit(
        {"a.yaml": config_map("a"), "b.yaml": config_map("b"), "c.yaml": config_map("c")}, "abc"
    )
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url)
    sync = wait_condition(cluster, "web", namespace, revision_sha=sha)
    entries = sync["status"]["inventory"]["entries"]
    assert {"id": f"{namespace}_b__ConfigMap", "v": "v1"} in entries
    assert inventory_ids(sync) == {f"{namespace}_{n}__ConfigMap" for n in "abc"}
    for name in "abc":
        labels = cluster.get("configmap", name, namespace)["metadata"]["labels"]  # type: ignore[index]
        assert labels[SYNC_NAME] == "web" and labels[SYNC_NAMESPACE] == namespace
        assert labels[PART_OF] == applyset_id("web", namespace)

    # Push a commit that removes b.yaml → b is gone and the inventory no longer lists it.
    since = time.time()
    sha2 = repo.commit({"b.yaml": None}, "remove b")
    repo.push()
    sync = wait_condition(cluster, "web", namespace, revision_sha=sha2)
    assert cluster.get("configmap", "b", namespace) is None
    assert inventory_ids(sync) == {f"{namespace}_a__ConfigMap", f"{namespace}_c__ConfigMap"}
    assert cluster.get("configmap", "a", namespace) is not None
    assert cluster.get("configmap", "c", namespace) is not None
    event = wait_event(cluster, "web", namespace, r"\bdeleted 1\b", "Normal")
    assert sha2 in event["message"]
    if cluster.has_audit_log():
        deleted = [
            e["objectRef"].get("name")
            for e in operator_writes(cluster, operator, since, "configmaps", namespace)
            if e["verb"] == "delete"
        ]
        assert deleted == ["b"], f"gitferry deleted {deleted}, expected only b"


def test_objects_removed_together_are_deleted_in_reverse_apply_order(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("order")
    sha = repo.commit(
        {
            "settings.yaml": config_map("settings"),
            "service.yaml": service("web"),
            "deployment.yaml": deployment("web"),
            "stays.yaml": config_map("stays"),
        },
        "app",
    )
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url)
    wait_condition(cluster, "web", namespace, revision_sha=sha)

    since = time.time()
    sha2 = repo.commit(
        {"settings.yaml": None, "service.yaml": None, "deployment.yaml": None}, "retire web"
    )
    repo.push()
    sync = wait_condition(cluster, "web", namespace, revision_sha=sha2)
    for kind, name in [("deployment", "web"), ("service", "web"), ("configmap", "settings")]:
        assert cluster.get(kind, name, namespace) is None, f"{kind}/{name} still exists"
    assert inventory_ids(sync) == {f"{namespace}_stays__ConfigMap"}
    wait_event(cluster, "web", namespace, r"\bdeleted 3\b", "Normal")
    # Applied ConfigMap → Service → Deployment, so pruned the other way round.
    assert_deleted_in_order(
        cluster,
        operator,
        since,
        [("deployments", "web"), ("services", "web"), ("configmaps", "settings")],
    )


# --- what is never deleted -------------------------------------------------------


def test_object_annotated_prune_disabled_stays_when_removed_from_git(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("keep")
    sha = repo.commit(
        {
            "keep.yaml": config_map("keep", annotations={"gitferry.dev/prune": "disabled"}),
            "other.yaml": config_map("other"),
        },
        "keep",
    )
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url)
    wait_condition(cluster, "web", namespace, revision_sha=sha)
    uid = cluster.get("configmap", "keep", namespace)["metadata"]["uid"]  # type: ignore[index]

    sha2 = repo.commit({"keep.yaml": None}, "remove keep from git")
    repo.push()
    wait_condition(cluster, "web", namespace, revision_sha=sha2)
    kept = cluster.get("configmap", "keep", namespace)
    assert kept is not None and kept["metadata"]["uid"] == uid
    assert kept["metadata"].get("deletionTimestamp") is None


def test_object_relabelled_by_hand_for_another_sync_is_not_pruned(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("relabel")
    sha = repo.commit({"mine.yaml": config_map("mine"), "other.yaml": config_map("other")}, "1")
    repo.push()
    # A long interval: only our requests reconcile, so the label is not put back
    # before the commit that removes the file is seen.
    create_sync(cluster, "web", namespace, repo.bare.file_url, interval="1h")
    wait_condition(cluster, "web", namespace, revision_sha=sha)

    cluster.kubectl(
        "label", "configmap/mine", "-n", namespace, f"{SYNC_NAME}=someone-else", "--overwrite"
    )
    sha2 = repo.commit({"mine.yaml": None}, "remove mine")
    repo.push()
    request_reconcile(cluster, "web", namespace)
    wait_condition(cluster, "web", namespace, revision_sha=sha2)
    mine = cluster.get("configmap", "mine", namespace)
    assert mine is not None, "gitferry deleted an object whose labels name another sync"
    assert mine["metadata"]["labels"][SYNC_NAME] == "someone-else"


def test_object_with_a_controller_owner_is_not_pruned(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("owned")
    sha = repo.commit({"owned.yaml": config_map("owned"), "other.yaml": config_map("other")}, "1")
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url)
    wait_condition(cluster, "web", namespace, revision_sha=sha)

    # Some controller takes the object over: it becomes the controller owner.
    cluster.kubectl("create", "configmap", "owner", "-n", namespace, "--from-literal=x=1")
    owner_uid = cluster.get("configmap", "owner", namespace)["metadata"]["uid"]  # type: ignore[index]
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner_uid}
    cluster.kubectl(
        "patch", "configmap", "owned", "-n", namespace, "--type=merge",
        "-p", json.dumps({"metadata": {"ownerReferences": [{**ref, "controller": True}]}}),
    )  # fmt: skip

    sha2 = repo.commit({"owned.yaml": None}, "remove owned")
    repo.push()
    wait_condition(cluster, "web", namespace, revision_sha=sha2)
    owned = cluster.get("configmap", "owned", namespace)
    assert owned is not None, "gitferry deleted an object that a controller owns"
    assert owned["metadata"].get("deletionTimestamp") is None


def test_replicaset_that_copies_the_gitferry_labels_is_never_touched_by_prune(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    """The Deployment's pod template copies the sync's labels (as kustomize's
    commonLabels does), so its ReplicaSet and Pods carry them too: they still
    belong to the Deployment controller, never to gitferry."""
    cluster = operator.cluster
    copied = {
        SYNC_NAME: "web",
        SYNC_NAMESPACE: namespace,
        PART_OF: applyset_id("web", namespace),
    }
    repo = repo_factory("rs")
    sha = repo.commit(
        {"deployment.yaml": deployment("web", copied), "extra.yaml": config_map("extra")}, "1"
    )
    since = time.time()
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url)
    wait_condition(cluster, "web", namespace, revision_sha=sha)
    rs = wait_for(
        "the Deployment's ReplicaSet",
        lambda: json.loads(
            cluster.kubectl(
                "get", "replicasets", "-n", namespace, "-l", f"{SYNC_NAME}=web", "-o", "json"
            ).stdout
        )["items"],
    )[0]
    assert rs["metadata"]["labels"][PART_OF] == applyset_id("web", namespace)

    # A commit that makes prune run.
    sha2 = repo.commit({"extra.yaml": None}, "remove extra")
    repo.push()
    wait_condition(cluster, "web", namespace, revision_sha=sha2)
    assert cluster.get("configmap", "extra", namespace) is None
    live = cluster.get("replicaset", rs["metadata"]["name"], namespace)
    assert live is not None and live["metadata"]["uid"] == rs["metadata"]["uid"]
    assert live["metadata"].get("deletionTimestamp") is None
    if cluster.has_audit_log():
        for resource in ("replicasets", "pods"):
            writes = operator_writes(cluster, operator, since, resource, namespace)
            assert not writes, f"gitferry wrote {resource}: {[w['verb'] for w in writes]}"


# --- Namespaces and CRDs ---------------------------------------------------------


def test_namespace_holding_a_hand_made_secret_is_kept_with_a_warning(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    app_ns = f"{namespace}-app"
    repo = repo_factory("nskept")
    files = {
        "ns.yaml": namespace_manifest(app_ns),
        "cfg.yaml": config_map("cfg", namespace=app_ns),
    }
    with synced_then_deleted(cluster, namespace, repo, files, "namespace", app_ns) as sync:
        assert {f"_{app_ns}__Namespace", f"{app_ns}_cfg__ConfigMap"} <= inventory_ids(sync)

        # Someone keeps a Secret of their own in that namespace.
        cluster.kubectl(
            "create", "secret", "generic", "hand-made", "-n", app_ns, "--from-literal=k=v"
        )
        repo.commit({"ns.yaml": None, "cfg.yaml": None}, "retire the app namespace")
        repo.push()

        wait_event(cluster, "web", namespace, re.escape(f"Secret/{app_ns}/hand-made"), "Warning")
        wait_gone(cluster, "configmap", "cfg", app_ns)
        ns = cluster.get("namespace", app_ns)
        assert ns is not None, "the Namespace was deleted with a hand-made Secret in it"
        assert ns["metadata"].get("deletionTimestamp") is None
        assert ns["status"]["phase"] == "Active"
        assert cluster.get("secret", "hand-made", app_ns) is not None


def test_removed_namespace_is_emptied_then_deleted(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    app_ns = f"{namespace}-app"
    repo = repo_factory("nsgone")
    files = {
        "ns.yaml": namespace_manifest(app_ns),
        "cfg.yaml": config_map("cfg", namespace=app_ns),
        "svc.yaml": service("web", app_ns),
    }
    with synced_then_deleted(cluster, namespace, repo, files, "namespace", app_ns) as sync:
        assert f"_{app_ns}__Namespace" in inventory_ids(sync)

        since = time.time()
        sha2 = repo.commit({"ns.yaml": None, "cfg.yaml": None, "svc.yaml": None}, "retire")
        repo.push()
        sync = wait_condition(cluster, "web", namespace, revision_sha=sha2)
        assert inventory_ids(sync) == {f"{namespace}_stays__ConfigMap"}
        wait_gone(cluster, "namespace", app_ns)  # kube-controller-manager finishes it
        wait_event(cluster, "web", namespace, r"\bdeleted 3\b", "Normal")
        assert_deleted_in_order(
            cluster, operator, since, [("configmaps", "cfg"), ("namespaces", app_ns)]
        )
        assert_deleted_in_order(
            cluster, operator, since, [("services", "web"), ("namespaces", app_ns)]
        )


def test_crd_and_its_custom_resources_removed_together_resources_first(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    group = f"{namespace}.example.com"
    crd_name = f"widgets.{group}"
    repo = repo_factory("crdgone")
    files = {"crd.yaml": widget_crd(group), "w1.yaml": widget(group, "w1")}
    with synced_then_deleted(cluster, namespace, repo, files, "crd", crd_name) as sync:
        assert {f"_{crd_name}_apiextensions.k8s.io_CustomResourceDefinition"} <= inventory_ids(sync)
        assert f"{namespace}_w1_{group}_Widget" in inventory_ids(sync)

        since = time.time()
        sha2 = repo.commit({"crd.yaml": None, "w1.yaml": None}, "no more widgets")
        repo.push()
        sync = wait_condition(cluster, "web", namespace, revision_sha=sha2)
        assert condition(sync, "Ready")["reason"] == "ReconciliationSucceeded"  # type: ignore[index]
        assert inventory_ids(sync) == {f"{namespace}_stays__ConfigMap"}
        wait_gone(cluster, "crd", crd_name)
        wait_event(cluster, "web", namespace, r"\bdeleted 2\b", "Normal")
        assert_deleted_in_order(
            cluster, operator, since, [("widgets", "w1"), ("customresourcedefinitions", crd_name)]
        )
        # And it stays Ready on the next reconciles, with the CRD gone from discovery.
        time.sleep(6)  # more than the 5s interval
        sync = wait_condition(cluster, "web", namespace, revision_sha=sha2, timeout=1)
        warnings = [
            e["message"] for e in events_for(cluster, "web", namespace) if e["type"] == "Warning"
        ]
        assert not warnings, warnings


def test_crd_holding_a_hand_made_custom_resource_is_kept_with_a_warning(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    group = f"{namespace}.example.com"
    crd_name = f"widgets.{group}"
    repo = repo_factory("crdkept")
    files = {"crd.yaml": widget_crd(group), "w1.yaml": widget(group, "w1")}
    with synced_then_deleted(cluster, namespace, repo, files, "crd", crd_name):
        cluster.apply(widget(group, "hand-made", namespace=namespace))  # not from git

        repo.commit({"crd.yaml": None, "w1.yaml": None}, "no more widgets")
        repo.push()
        wait_event(cluster, "web", namespace, re.escape(f"Widget/{namespace}/hand-made"), "Warning")
        wait_gone(cluster, f"widgets.{group}", "w1", namespace)
        crd = cluster.get("crd", crd_name)
        assert crd is not None, "the CRD was deleted with a hand-made Widget in it"
        assert crd["metadata"].get("deletionTimestamp") is None
        assert cluster.get(f"widgets.{group}", "hand-made", namespace) is not None


# --- revisions that must not prune ----------------------------------------------


def test_commit_that_empties_the_path_is_refused_until_allow_empty(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("empty")
    sha = repo.commit(
        {
            "deploy/README.md": "the manifests of web\n",
            "deploy/a.yaml": config_map("a"),
            "deploy/b.yaml": config_map("b"),
        },
        "two objects",
    )
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, path="deploy")
    wait_condition(cluster, "web", namespace, revision_sha=sha)

    # A commit that removes every manifest (the directory stays: it has a README).
    sha2 = repo.commit({"deploy/a.yaml": None, "deploy/b.yaml": None}, "oops")
    repo.push()
    sync = wait_condition(cluster, "web", namespace, status="False", reason="PruneRefused")
    message = condition(sync, "Ready")["message"]  # type: ignore[index]
    assert re.search(r"\b2\b", message) and "delete" in message, message
    assert cluster.get("configmap", "a", namespace) is not None
    assert cluster.get("configmap", "b", namespace) is not None
    assert sync["status"]["lastAppliedRevision"].endswith(sha)
    assert len(inventory_ids(sync)) == 2

    # The user means it.
    patch_sync(cluster, "web", namespace, {"spec": {"allowEmpty": True}})
    sync = wait_condition(cluster, "web", namespace, revision_sha=sha2)
    assert cluster.get("configmap", "a", namespace) is None
    assert cluster.get("configmap", "b", namespace) is None
    assert inventory_ids(sync) == set()


def test_git_server_down_keeps_every_object_and_the_sync_recovers(
    operator: Operator,
    namespace: str,
    repo_factory: RepoFactory,
    http_git_server: HttpGitServer,
) -> None:
    cluster = operator.cluster
    repo = repo_factory("down")
    sha = repo.commit({"a.yaml": config_map("a"), "b.yaml": config_map("b")}, "ab")
    repo.push()
    create_git_auth_secret(cluster, namespace, http_git_server)
    create_sync(
        cluster, "web", namespace, http_git_server.url_for(repo.bare),
        secretRef={"name": "git-auth"}, interval="2s", retryInterval="2s",
    )  # fmt: skip
    sync = wait_condition(cluster, "web", namespace, revision_sha=sha)
    before = inventory_ids(sync)

    http_git_server.down()
    sync = wait_condition(cluster, "web", namespace, status="False", reason="GitFetchFailed")
    assert cluster.get("configmap", "a", namespace) is not None
    assert cluster.get("configmap", "b", namespace) is not None
    assert inventory_ids(sync) == before

    # Back up, with a commit waiting: the sync catches up and prunes as usual.
    sha2 = repo.commit({"b.yaml": None}, "remove b")
    repo.push()
    http_git_server.up()
    sync = wait_condition(cluster, "web", namespace, revision_sha=sha2)
    assert cluster.get("configmap", "a", namespace) is not None
    assert cluster.get("configmap", "b", namespace) is None


# --- crash safety ------------------------------------------------------------------


def start_and_wait_for_crash(factory: Callable[..., Operator], namespace: str) -> None:
    """Start gitferry with the test hook that makes it exit right after apply,
    before prune; return once it has exited."""
    try:
        op = factory(namespace, **{CRASH_HOOK: "1"})
    except AssertionError as e:
        if "gitferry exited" in str(e):
            return  # it got to the hook before start() saw it running
        raise
    wait_for(
        f"the operator started with {CRASH_HOOK}=1 to exit after apply",
        lambda: op.proc is not None and op.proc.poll() is not None,
        60,
    )


def test_crash_between_apply_and_prune_leaks_nothing(
    operator_factory: Callable[..., Operator], namespace: str, repo_factory: RepoFactory
) -> None:
    repo = repo_factory("crash")
    sha = repo.commit({"a.yaml": config_map("a"), "b.yaml": config_map("b")}, "ab")
    repo.push()
    first = operator_factory(namespace)
    cluster = first.cluster
    create_sync(cluster, "web", namespace, repo.bare.file_url)
    wait_condition(cluster, "web", namespace, revision_sha=sha)
    first.stop()

    sha2 = repo.commit({"b.yaml": None, "c.yaml": config_map("c")}, "replace b by c")
    repo.push()
    start_and_wait_for_crash(operator_factory, namespace)

    # Applied, not pruned: c exists, b too, and the inventory holds all three.
    assert cluster.get("configmap", "c", namespace) is not None, "the crashed run never applied c"
    assert cluster.get("configmap", "b", namespace) is not None
    assert inventory_ids(read_sync(cluster, "web", namespace)) == {
        f"{namespace}_{n}__ConfigMap" for n in "abc"
    }

    operator_factory(namespace)
    sync = wait_condition(cluster, "web", namespace, revision_sha=sha2)
    wait_gone(cluster, "configmap", "b", namespace)
    assert cluster.get("configmap", "a", namespace) is not None
    assert cluster.get("configmap", "c", namespace) is not None
    assert inventory_ids(sync) == {f"{namespace}_a__ConfigMap", f"{namespace}_c__ConfigMap"}


def test_crash_in_a_new_syncs_first_apply_leaks_nothing(
    operator_factory: Callable[..., Operator],
    cluster: Cluster,
    namespace: str,
    repo_factory: RepoFactory,
) -> None:
    """A new sync writes no inventory before its first apply (one request less):
    its ApplySet parent names the kinds, and the objects' labels say whose they
    are, so what a crashed first apply created is still pruned."""
    repo = repo_factory("crash-new")
    repo.commit({"a.yaml": config_map("a"), "b.yaml": config_map("b")}, "ab")
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url)
    start_and_wait_for_crash(operator_factory, namespace)
    assert cluster.get("configmap", "b", namespace) is not None, "the crashed run never applied b"
    assert (read_sync(cluster, "web", namespace).get("status") or {}).get("inventory") is None

    sha2 = repo.commit({"b.yaml": None}, "drop b")
    repo.push()
    operator_factory(namespace)
    sync = wait_condition(cluster, "web", namespace, revision_sha=sha2)
    wait_gone(cluster, "configmap", "b", namespace)
    assert cluster.get("configmap", "a", namespace) is not None
    assert inventory_ids(sync) == {f"{namespace}_a__ConfigMap"}
