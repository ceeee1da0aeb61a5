"""Where the inventory comes from when status has none.

A brand-new sync owns nothing, so it asks the API server for nothing before its
first apply: no cluster-wide LIST by label selector. A sync whose status was lost
(a backup restored without status) rebuilds its inventory from the ownership
labels, listing only the kinds its ApplySet parent names
(`applyset.kubernetes.io/contains-group-kinds`). When one of those kinds cannot be
listed, it fails loudly (PruneFailed) instead of pruning from a partial
inventory, and catches up once it can list again.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.harness import cluster_fixtures
from tests.harness.cluster_fixtures import SA_NAMESPACE, Cluster, Operator, wait_for
from tests.harness.git_fixtures import RepoFactory
from tests.harness.manifests import config_map, service
from tests.harness.syncs import (
    SYNC_NAME,
    annotations_of,
    condition,
    create_sync,
    inventory_ids,
    patch_sync,
    request_reconcile,
    wait_condition,
)

pytestmark = pytest.mark.e2e

GROUP_KINDS = "applyset.kubernetes.io/contains-group-kinds"
REBUILD_FAILED = "could not be rebuilt from labels"


# --- what the API server saw -------------------------------------------------------


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def label_selector_lists(cluster: Cluster, user: str, since: float) -> list[str]:
    """`<resource>` (cluster-wide) or `<resource> in <namespace>` for every LIST that
    `user` sent since `since` looking for one sync's objects (a label selector
    `gitferry.dev/sync-name=<name>`). The drift watches' own LISTs select every
    object that has the label (`gitferry.dev/sync-name`, no value) and are not
    inventory lookups. The audit log records list requests at Metadata level;
    the selector is in the requestURI's query."""
    assert cluster.control_plane is not None
    time.sleep(0.5)  # an audit event is written when its request completes
    found = []
    for ev in cluster.control_plane.audit_events():
        if ev.get("stage") != "ResponseComplete" or ev.get("verb") != "list":
            continue
        who = ev.get("user")
        if not isinstance(who, dict) or who.get("username") != user:
            continue
        if _epoch(str(ev.get("requestReceivedTimestamp", ""))) < since:
            continue
        query = parse_qs(urlsplit(str(ev.get("requestURI", ""))).query)
        if not any(f"{SYNC_NAME}=" in s for s in query.get("labelSelector", [])):
            continue
        ref: dict[str, Any] = ev.get("objectRef") or {}  # type: ignore[assignment]
        where = f" in {ref['namespace']}" if ref.get("namespace") else ""
        found.append(f"{ref.get('resource')}{where}")
    return sorted(found)


def needs_audit_log(cluster: Cluster) -> None:
    if not cluster.has_audit_log():
        if os.environ.get("CI") == "true":  # CI runs on the local control plane: never skip
            pytest.fail("CI=true: no audit log (the local control plane has one)")
        pytest.skip("counts requests in the API server's audit log (the local control plane)")


# --- losing the status --------------------------------------------------------------


def lose_status_while_suspended(cluster: Cluster, name: str, namespace: str) -> None:
    """What a backup restored without status leaves: a sync with no status at all.
    Suspended first, so that no reconcile in flight writes the old status back."""
    patch_sync(cluster, name, namespace, {"spec": {"suspend": True}})
    wait_condition(cluster, name, namespace, status="False", reason="Suspended")
    cluster.kubectl(
        "patch", "grs", name, "-n", namespace, "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": None}),
    )  # fmt: skip
    sync = cluster.get("grs", name, namespace)
    assert sync is not None and not (sync.get("status") or {}).get("inventory")


def reconciled(cluster: Cluster, name: str, namespace: str, sha: str) -> dict[str, Any]:
    """The sync once a reconcile of `sha` has finished, whether it succeeded or not."""

    def done() -> dict[str, Any] | None:
        sync = cluster.get("grs", name, namespace)
        ready = condition(sync, "Ready")
        if not sync or not ready or ready["status"] == "Unknown":
            return None
        if ready.get("observedGeneration") != sync["metadata"]["generation"]:
            return None
        if not str(sync["status"].get("lastAttemptedRevision", "")).endswith(sha):
            return None
        return sync

    return wait_for(f"a reconcile of {sha[:8]} to finish", done)  # type: ignore[no-any-return]


# --- a multi-tenant install -----------------------------------------------------------


@pytest.fixture
def tenant_operator(
    gitferry_installed: Cluster,
    operator_factory: Callable[..., Operator],
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Operator]:
    """gitferry installed for tenants, as the README describes it: the operator's own
    identity has the `gitferry` ClusterRole but not `gitferry-apply` (so it may list
    no ConfigMaps), and syncs apply as `deployer`, a ServiceAccount of their
    namespace that may manage ConfigMaps there.

    The shared install is left as it is: this operator runs as a second
    ServiceAccount of gitferry-system, bound like the install's one minus
    gitferry-apply (the harness names the operator's account in SA_NAME)."""
    cluster = gitferry_installed
    account = f"gitferry-tenants-{secrets.token_hex(3)}"
    cluster.kubectl("create", "serviceaccount", account, "-n", SA_NAMESPACE)
    try:
        cluster.kubectl(
            "create", "clusterrolebinding", account, "--clusterrole=gitferry",
            f"--serviceaccount={SA_NAMESPACE}:{account}",
        )  # fmt: skip
        cluster.kubectl("create", "serviceaccount", "deployer", "-n", namespace)
        cluster.kubectl(
            "create", "role", "configmaps", "-n", namespace, "--resource=configmaps",
            "--verb=get,list,watch,create,update,patch,delete",
        )  # fmt: skip
        cluster.kubectl(
            "create", "rolebinding", "deployer", "-n", namespace, "--role=configmaps",
            f"--serviceaccount={namespace}:deployer",
        )  # fmt: skip
        with monkeypatch.context() as m:
            m.setattr(cluster_fixtures, "SA_NAME", account)
            op = operator_factory(namespace)
        op.user = f"system:serviceaccount:{SA_NAMESPACE}:{account}"
        yield op
    finally:
        for kind in ("clusterrolebinding", "clusterrole"):
            cluster.kubectl("delete", kind, account, f"{account}-list", check=False)
        cluster.kubectl("delete", "serviceaccount", account, "-n", SA_NAMESPACE, check=False)


def set_deployer_verbs(cluster: Cluster, namespace: str, verbs: list[str]) -> None:
    """The namespace admin changes what `deployer` may do with ConfigMaps."""
    cluster.kubectl(
        "patch", "role", "configmaps", "-n", namespace, "--type=json",
        "-p", json.dumps([{"op": "replace", "path": "/rules/0/verbs", "value": verbs}]),
    )  # fmt: skip
    user = f"system:serviceaccount:{namespace}:deployer"
    want = "yes" if "list" in verbs else "no"
    wait_for(
        f"{user} may list configmaps: {want}",
        lambda: cluster.kubectl(
            "auth", "can-i", "list", "configmaps", "-n", namespace, f"--as={user}", check=False,
        ).stdout.strip() == want,
    )  # fmt: skip


# --- a new sync ---------------------------------------------------------------------


def test_new_sync_lists_nothing_by_label_and_a_rebuild_lists_only_the_applyset_kinds(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    needs_audit_log(cluster)
    repo = repo_factory("new")
    sha = repo.commit(
        {"a.yaml": config_map("a"), "b.yaml": config_map("b"), "svc.yaml": service("web")},
        "a, b and a Service",
    )
    repo.push()

    since = time.time()
    create_sync(cluster, "web", namespace, repo.bare.file_url, interval="1h")
    sync = wait_condition(cluster, "web", namespace, revision_sha=sha)
    # A new sync owns nothing yet: nothing to look for, in no kind, anywhere.
    assert label_selector_lists(cluster, operator.user, since) == []
    assert annotations_of(sync)[GROUP_KINDS] == "ConfigMap,Service"

    # Its status is lost (a restore), and b leaves git meanwhile.
    lose_status_while_suspended(cluster, "web", namespace)
    sha2 = repo.commit({"b.yaml": None}, "b leaves git")
    repo.push()
    since = time.time()
    patch_sync(cluster, "web", namespace, {"spec": {"suspend": False}})
    sync = wait_condition(cluster, "web", namespace, revision_sha=sha2)

    # The rebuild listed the two kinds the ApplySet names, in the sync's namespace
    # (its only one here), once each, as the identity the sync applies as.
    assert label_selector_lists(cluster, operator.user, since) == [
        f"configmaps in {namespace}",
        f"services in {namespace}",
    ]
    wait_for("b to be pruned", lambda: cluster.get("configmap", "b", namespace) is None)
    assert cluster.get("configmap", "a", namespace) is not None
    assert inventory_ids(sync) == {f"{namespace}_a__ConfigMap", f"{namespace}_web__Service"}


def test_new_tenant_sync_applies_although_the_operator_may_list_nothing(
    tenant_operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = tenant_operator.cluster
    repo = repo_factory("tenant")
    sha = repo.commit({"a.yaml": config_map("a")}, "a")
    repo.push()
    create_sync(
        cluster, "web", namespace, repo.bare.file_url, interval="1h",
        serviceAccountName="deployer",
    )  # fmt: skip
    sync = wait_condition(cluster, "web", namespace, revision_sha=sha)
    assert inventory_ids(sync) == {f"{namespace}_a__ConfigMap"}


# --- a lost status that cannot be rebuilt ----------------------------------------------


def test_lost_status_that_cannot_be_rebuilt_fails_loudly_and_deletes_nothing_until_it_can(
    tenant_operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = tenant_operator.cluster
    repo = repo_factory("restore")
    sha = repo.commit({"a.yaml": config_map("a"), "b.yaml": config_map("b")}, "a and b")
    repo.push()
    create_sync(
        cluster, "web", namespace, repo.bare.file_url, interval="1h",
        serviceAccountName="deployer",
    )  # fmt: skip
    wait_condition(cluster, "web", namespace, revision_sha=sha)
    uids = {n: cluster.get("configmap", n, namespace)["metadata"]["uid"] for n in "ab"}  # type: ignore[index]

    lose_status_while_suspended(cluster, "web", namespace)
    # The rebuild lists as the identity the sync applies as: deployer, which may
    # now read and write ConfigMaps but not list them.
    all_verbs = ["get", "list", "watch", "create", "update", "patch", "delete"]
    set_deployer_verbs(cluster, namespace, [v for v in all_verbs if v != "list"])
    sha2 = repo.commit({"b.yaml": None, "c.yaml": config_map("c")}, "b leaves, c arrives")
    repo.push()
    patch_sync(cluster, "web", namespace, {"spec": {"suspend": False}})

    # deployer may not list ConfigMaps: the inventory cannot be rebuilt, and a
    # guess (only what this revision holds) would leave b behind for good.
    sync = wait_condition(cluster, "web", namespace, status="False", reason="PruneFailed")
    message = condition(sync, "Ready")["message"]  # type: ignore[index]
    assert REBUILD_FAILED in message and "ConfigMap" in message, message
    assert "forbidden" in message, message
    for name in "ab":
        live = cluster.get("configmap", name, namespace)
        assert live is not None and live["metadata"]["uid"] == uids[name]
    assert cluster.get("configmap", "c", namespace) is None, "applied with no inventory"
    assert not (sync.get("status") or {}).get("inventory"), "an inventory was made up"

    # The namespace admin lets deployer list ConfigMaps again: the next reconcile
    # rebuilds the inventory from the labels and catches up.
    set_deployer_verbs(cluster, namespace, all_verbs)
    request_reconcile(cluster, "web", namespace)
    sync = wait_condition(cluster, "web", namespace, revision_sha=sha2)
    wait_for("b to be pruned", lambda: cluster.get("configmap", "b", namespace) is None)
    assert cluster.get("configmap", "a", namespace)["metadata"]["uid"] == uids["a"]  # type: ignore[index]
    assert cluster.get("configmap", "c", namespace) is not None
    assert inventory_ids(sync) == {f"{namespace}_a__ConfigMap", f"{namespace}_c__ConfigMap"}


def test_tenant_sync_rebuilds_a_lost_status_with_its_own_service_account(
    tenant_operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = tenant_operator.cluster
    repo = repo_factory("tenant-restore")
    sha = repo.commit({"a.yaml": config_map("a"), "b.yaml": config_map("b")}, "a and b")
    repo.push()
    create_sync(
        cluster, "web", namespace, repo.bare.file_url, interval="1h",
        serviceAccountName="deployer",
    )  # fmt: skip
    wait_condition(cluster, "web", namespace, revision_sha=sha)

    lose_status_while_suspended(cluster, "web", namespace)
    sha2 = repo.commit({"b.yaml": None}, "b leaves git")
    repo.push()
    patch_sync(cluster, "web", namespace, {"spec": {"suspend": False}})

    sync = reconciled(cluster, "web", namespace, sha2)
    ready = condition(sync, "Ready")
    assert ready and ready["status"] == "True", ready
    wait_for("b to be pruned", lambda: cluster.get("configmap", "b", namespace) is None, 10)
