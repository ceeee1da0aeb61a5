"""Stopping the operator (a rollout, SIGTERM) mid-reconcile: no spurious
Stalled condition or Warning Event, nothing written or pruned after the stop
began, and the next operator finishes the job."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from tests.harness.cluster_fixtures import Operator, wait_for
from tests.harness.git_fixtures import RepoFactory
from tests.harness.gitserver import HttpGitServer
from tests.harness.manifests import config_map
from tests.harness.syncs import (
    condition,
    create_git_auth_secret,
    create_sync,
    events_for,
    request_reconcile,
    wait_condition,
)

pytestmark = pytest.mark.e2e


def test_a_stop_during_a_reconcile_writes_nothing_and_prunes_nothing(
    operator_factory: Callable[..., Operator],
    namespace: str,
    repo_factory: RepoFactory,
    http_git_server: HttpGitServer,
) -> None:
    operator = operator_factory(namespace)
    cluster = operator.cluster
    repo = repo_factory("rollout")
    sha1 = repo.commit({"a.yaml": config_map("a", "1"), "b.yaml": config_map("b", "1")}, "a, b")
    repo.push()
    url = http_git_server.url_for(repo.bare)
    create_git_auth_secret(cluster, namespace, http_git_server)
    create_sync(cluster, "web", namespace, url, interval="1h", secretRef={"name": "git-auth"})
    wait_condition(cluster, "web", namespace, revision_sha=sha1)
    before = cluster.get("grs", "web", namespace)
    assert before is not None
    warnings_before = [e for e in events_for(cluster, "web", namespace) if e["type"] == "Warning"]

    # A commit that changes a and removes b; its fetch is held at the git server
    # while the operator is told to stop.
    sha2 = repo.commit({"a.yaml": config_map("a", "2"), "b.yaml": None}, "a changes, b leaves")
    repo.push()
    with http_git_server.hold():
        request_reconcile(cluster, "web", namespace)
        http_git_server.wait_held(1)
        stopper = threading.Thread(target=operator.stop)  # SIGTERM, then waits
        stopper.start()
        time.sleep(2)  # the stop has begun while the reconcile sits in git
    stopper.join(60)
    assert operator.proc is not None and operator.proc.poll() is not None
    log = operator.log()
    assert "Traceback" not in log
    assert "result=stopped" in log, log[-3000:]

    # Nothing of the cut-off reconcile reached the cluster.
    after = cluster.get("grs", "web", namespace)
    assert after is not None
    assert condition(after, "Stalled") is None
    ready = condition(after, "Ready")
    assert ready is not None and ready["status"] == "True", ready
    assert after["status"]["lastAppliedRevision"] == f"main@sha1:{sha1}"
    assert after["status"]["inventory"] == before["status"]["inventory"]
    warnings = [e for e in events_for(cluster, "web", namespace) if e["type"] == "Warning"]
    assert warnings == warnings_before
    assert (cluster.get("configmap", "a", namespace) or {})["data"]["v"] == "1"
    assert cluster.get("configmap", "b", namespace) is not None  # not pruned after the stop

    # The next operator (the rollout's new pod) finishes the job.
    successor = operator_factory(namespace)
    wait_condition(successor.cluster, "web", namespace, revision_sha=sha2, timeout=90)
    wait_for("b to be pruned", lambda: cluster.get("configmap", "b", namespace) is None)
    assert (cluster.get("configmap", "a", namespace) or {})["data"]["v"] == "2"
