"""Pods run on the local control plane: kube-scheduler places them on a kwok Node and
kwok reports them as a kubelet would. A Deployment a sync applies gets its replicas
ready, a Job completes, and a Pod can be told to never become ready or to crash
(the annotation `gitferry.dev/test-pod`), so health checks have something to see."""

from __future__ import annotations

import ipaddress
import json
import time
from typing import Any

import pytest

from tests.harness.cluster_fixtures import Cluster, Operator, wait_for
from tests.harness.controlplane import FAKE_POD_ANNOTATION, POD_CIDR
from tests.harness.git_fixtures import RepoFactory
from tests.harness.manifests import IMAGE, deployment, job
from tests.harness.syncs import create_sync, wait_condition

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("kwok_pods")]


def annotated_pod(name: str, namespace: str, behaviour: str) -> dict[str, Any]:
    """A bare Pod whose fake kubelet (kwok) behaves as `behaviour` says."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {FAKE_POD_ANNOTATION: behaviour},
        },
        "spec": {"containers": [{"name": "app", "image": IMAGE}]},
    }


def pods_of(cluster: Cluster, namespace: str, selector: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", "-n", namespace, "-l", selector, "-o", "json").stdout
    return json.loads(out)["items"]  # type: ignore[no-any-return]


def pod_condition(pod: dict[str, Any] | None, type_: str) -> str | None:
    for c in ((pod or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c["status"]  # type: ignore[no-any-return]
    return None


def test_deployment_applied_by_a_sync_gets_all_its_replicas_ready(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("app")
    sha = repo.commit({"deploy/web.yaml": deployment("web", replicas=3)}, "three replicas")
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, path="deploy")
    wait_condition(cluster, "web", namespace, revision_sha=sha)

    def all_ready() -> dict[str, Any] | None:
        d = cluster.get("deployment", "web", namespace)
        return d if ((d or {}).get("status") or {}).get("readyReplicas") == 3 else None

    web = wait_for("3 ready replicas of deployment/web", all_ready, timeout=60)
    assert web["status"]["availableReplicas"] == 3
    available = next(c for c in web["status"]["conditions"] if c["type"] == "Available")
    assert available["status"] == "True"

    pods = pods_of(cluster, namespace, "app=web")
    assert len(pods) == 3
    for pod in pods:
        # Scheduled onto the fake Node, running, with an IP from the Pod range.
        assert pod["spec"]["nodeName"], pod["metadata"]["name"]
        assert pod["status"]["phase"] == "Running"
        assert pod_condition(pod, "Ready") == "True"
        assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(POD_CIDR)
        assert all(s["ready"] for s in pod["status"]["containerStatuses"])


def test_job_applied_by_a_sync_completes(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("jobs")
    sha = repo.commit({"deploy/once.yaml": job("once")}, "a job")
    repo.push()
    create_sync(cluster, "jobs", namespace, repo.bare.file_url, path="deploy")
    wait_condition(cluster, "jobs", namespace, revision_sha=sha)

    def complete() -> dict[str, Any] | None:
        j = cluster.get("job", "once", namespace)
        conditions = ((j or {}).get("status") or {}).get("conditions") or []
        done = any(c["type"] == "Complete" and c["status"] == "True" for c in conditions)
        return j if done else None

    once = wait_for("job/once to complete", complete, timeout=60)
    assert once["status"]["succeeded"] == 1
    assert not once["status"].get("failed")
    (pod,) = pods_of(cluster, namespace, "job-name=once")
    assert pod["status"]["phase"] == "Succeeded"
    (status,) = pod["status"]["containerStatuses"]
    assert status["state"]["terminated"]["reason"] == "Completed"
    assert status["state"]["terminated"]["exitCode"] == 0


def test_pod_annotated_never_ready_runs_but_never_becomes_ready(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply(annotated_pod("slow", namespace, "never-ready"))

    def running() -> bool:
        p = cluster.get("pod", "slow", namespace)
        return ((p or {}).get("status") or {}).get("phase") == "Running"

    wait_for("pod/slow to run", running, timeout=60)
    time.sleep(3)  # it stays so: nothing moves it on
    pod = cluster.get("pod", "slow", namespace)
    assert pod is not None
    assert pod["status"]["phase"] == "Running"
    assert pod_condition(pod, "Ready") == "False"
    assert pod_condition(pod, "ContainersReady") == "False"
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] is False
    assert status["state"]["waiting"]["reason"] == "ContainerCreating"
    assert status["restartCount"] == 0


def test_pod_annotated_crash_is_in_crash_loop_back_off(cluster: Cluster, namespace: str) -> None:
    cluster.apply(annotated_pod("broken", namespace, "crash"))

    def crashing() -> dict[str, Any] | None:
        p = cluster.get("pod", "broken", namespace)
        statuses = ((p or {}).get("status") or {}).get("containerStatuses") or []
        waiting = [s["state"].get("waiting", {}).get("reason") for s in statuses]
        return p if waiting == ["CrashLoopBackOff"] else None

    pod = wait_for("pod/broken in CrashLoopBackOff", crashing, timeout=60)
    assert pod_condition(pod, "Ready") == "False"
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] is False
    assert status["restartCount"] > 0
    assert status["lastState"]["terminated"]["exitCode"] != 0
    # As a kubelet reports it: the Pod runs, its container keeps failing.
    assert pod["status"]["phase"] == "Running"


def test_the_fake_node_keeps_its_lease_and_stays_ready(cluster: Cluster) -> None:
    """kwok renews the Node's Lease as a kubelet does; without it the Node controller
    marks the Node NotReady 40 s after its last heartbeat, and every Pod unready."""
    from tests.harness.controlplane import NODE_NAME

    def renew_time() -> str | None:
        lease = cluster.get("lease", NODE_NAME, "kube-node-lease")
        return ((lease or {}).get("spec") or {}).get("renewTime")

    first = wait_for("the fake Node's Lease", renew_time, timeout=30)
    wait_for("the Lease to be renewed", lambda: renew_time() not in (None, first), timeout=60)
    node = cluster.get("node", NODE_NAME)
    assert pod_condition(node, "Ready") == "True"
