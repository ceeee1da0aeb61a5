"""Drift is corrected in seconds, whatever the interval; a reconcile that would change
nothing asks the API server nothing; someone who keeps taking a field back is met
with backoff and one Warning naming them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time

import pytest

from tests.harness.cluster_fixtures import Cluster, Operator, wait_for
from tests.harness.git_fixtures import RepoFactory
from tests.harness.manifests import config_map, deployment
from tests.harness.syncs import create_sync, events_for, wait_condition, wait_event

pytestmark = pytest.mark.e2e


def replicas(cluster: Cluster, namespace: str, name: str = "web") -> int | None:
    d = cluster.get("deployment", name, namespace)
    return None if d is None else int(d["spec"]["replicas"])


def reconciles(operator: Operator, namespace: str, name: str) -> int:
    pattern = re.compile(rf"sync={re.escape(namespace)}/{re.escape(name)} action=reconcile result=")
    return len(pattern.findall(operator.log()))


def test_hand_edits_and_deletions_are_put_back_within_seconds(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("drift")
    sha = repo.commit({"web.yaml": deployment("web"), "cm.yaml": config_map("settings", "git")},
                      "a Deployment and a ConfigMap")  # fmt: skip
    repo.push()
    create_sync(cluster, "drift", namespace, repo.bare.file_url, interval="1h")
    wait_condition(cluster, "drift", namespace, revision_sha=sha)

    # A merge patch (what kubectl edit sends) of a field gitferry manages.
    latencies = []
    for value in ("by-hand", "again"):
        edited = time.monotonic()
        cluster.kubectl("patch", "configmap", "settings", "-n", namespace, "--type=merge",
                        "-p", json.dumps({"data": {"v": value}}))  # fmt: skip
        wait_for(
            "the ConfigMap put back",
            lambda: (
                (cluster.get("configmap", "settings", namespace) or {}).get("data") == {"v": "git"}
            ),
            10,
        )
        latencies.append(time.monotonic() - edited)
    cluster.kubectl("scale", "deployment", "web", "-n", namespace, "--replicas=4")
    wait_for("replicas put back", lambda: replicas(cluster, namespace) == 1, 10)

    # A deleted object is created again.
    deleted = time.monotonic()
    cluster.kubectl("delete", "configmap", "settings", "-n", namespace, "--wait=false")
    wait_for(
        "the ConfigMap recreated",
        lambda: (cluster.get("configmap", "settings", namespace) or {}).get("data") == {"v": "git"},
        10,
    )
    latencies.append(time.monotonic() - deleted)
    print(f"drift corrected after {', '.join(f'{s:.2f}s' for s in latencies)}")
    assert max(latencies) < 10


def test_a_hand_annotation_stays_and_starts_no_reconcile(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("annotated")
    sha = repo.commit({"cm.yaml": config_map("settings", "git")}, "a ConfigMap")
    repo.push()
    create_sync(cluster, "annotated", namespace, repo.bare.file_url, interval="1h")
    wait_condition(cluster, "annotated", namespace, revision_sha=sha)
    time.sleep(2)
    before = reconciles(operator, namespace, "annotated")
    for i in range(5):
        cluster.kubectl("annotate", "configmap", "settings", "-n", namespace,
                        f"team.example.com/note={i}", "--overwrite")  # fmt: skip
        cluster.kubectl("label", "configmap", "settings", "-n", namespace,
                        f"extra={i}", "--overwrite")  # fmt: skip
    time.sleep(4)
    cm = cluster.get("configmap", "settings", namespace)
    assert cm is not None
    assert cm["metadata"]["annotations"]["team.example.com/note"] == "4"
    assert cm["metadata"]["labels"]["extra"] == "4"
    assert reconciles(operator, namespace, "annotated") == before  # no storm: none at all


def test_a_no_op_reconcile_of_100_objects_asks_the_api_server_nothing(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    if not cluster.has_audit_log():
        if os.environ.get("CI") == "true":  # CI runs on the local control plane: never skip
            pytest.fail("CI=true: the audit log exists only on the local control plane")
        pytest.skip("the audit log exists only on the local control plane")
    repo = repo_factory("hundred")
    files = {f"cm/{i:03}.yaml": config_map(f"c{i:03}", str(i)) for i in range(100)}
    sha = repo.commit(files, "100 ConfigMaps")
    repo.push()
    create_sync(cluster, "hundred", namespace, repo.bare.file_url, interval="2s")
    wait_condition(cluster, "hundred", namespace, revision_sha=sha)
    time.sleep(3)  # the first no-op verifies in full, then trusts the watch cache
    since = time.time()
    start = reconciles(operator, namespace, "hundred")
    time.sleep(8)
    ran = reconciles(operator, namespace, "hundred") - start
    assert ran >= 2, "the 2s interval should have run reconciles"
    asked = [
        (e["verb"], e["requestURI"]) for e in cluster.audit_requests(operator.user, since)
        if f"/namespaces/{namespace}/" in e["requestURI"]
    ]  # fmt: skip
    assert asked == [], f"{ran} no-op reconciles asked: {asked[:10]}"

    # After a hand edit, exactly the edited object is written.
    since = time.time()
    cluster.kubectl("patch", "configmap", "c042", "-n", namespace, "--type=merge",
                    "-p", '{"data": {"v": "by hand"}}')  # fmt: skip
    wait_for(
        "c042 put back",
        lambda: (cluster.get("configmap", "c042", namespace) or {})["data"] == {"v": "42"},
        10,
    )
    time.sleep(1)
    written = {
        e["objectRef"].get("resource") + "/" + e["objectRef"].get("name", "")
        for e in cluster.audit_writes(operator.user, since)
        if e["objectRef"].get("resource") not in ("events", "gitrepositorysyncs")
    }
    assert written == {"configmaps/c042"}


def test_a_fighting_field_manager_is_backed_off_and_named(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("fight")
    sha = repo.commit({"web.yaml": deployment("web")}, "one replica")
    repo.push()
    create_sync(cluster, "fight", namespace, repo.bare.file_url, interval="1h")
    wait_condition(cluster, "fight", namespace, revision_sha=sha)

    stop = threading.Event()
    fights = 0

    def autoscaler() -> None:  # a controller that wants 3 replicas, every second
        nonlocal fights
        while not stop.is_set():
            subprocess.run(
                ["kubectl", f"--kubeconfig={cluster.kubeconfig}", "patch", "deployment", "web",
                 "-n", namespace, "--type=merge", "--field-manager=fake-autoscaler",
                 "-p", '{"spec": {"replicas": 3}}'],
                capture_output=True, check=False, timeout=10,
            )  # fmt: skip
            fights += 1
            stop.wait(1.0)

    since = time.time()
    thread = threading.Thread(target=autoscaler, daemon=True)
    thread.start()
    try:
        warning = wait_event(cluster, "fight", namespace, r"fake-autoscaler", "Warning")
        time.sleep(10)
    finally:
        stop.set()
        thread.join(15)
    assert warning["reason"] == "FieldManagerConflict"
    assert "spec.replicas" in warning["message"] and "Deployment" in warning["message"]
    corrections = [
        e for e in cluster.audit_writes(operator.user, since)
        if e["objectRef"].get("resource") == "deployments"
    ]  # fmt: skip
    print(f"the autoscaler wrote {fights} times, gitferry {len(corrections)} times")
    # Backoff, not a hot loop: three quick corrections, then 4 s, 8 s, 16 s… apart,
    # however often the other side writes (a hot loop would match it write for write).
    assert len(corrections) <= 8
    conflicts = [e for e in events_for(cluster, "fight", namespace)
                 if e["reason"] == "FieldManagerConflict"]  # fmt: skip
    assert len(conflicts) == 1 and conflicts[0].get("count", 1) == 1


def test_watches_recover_after_the_api_server_restarts(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    if cluster.control_plane is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true: restarting the API server needs the local control plane")
        pytest.skip("restarting the API server needs the local control plane")
    repo = repo_factory("restart")
    sha = repo.commit({"cm.yaml": config_map("settings", "git")}, "a ConfigMap")
    repo.push()
    create_sync(cluster, "restart", namespace, repo.bare.file_url, interval="1h")
    wait_condition(cluster, "restart", namespace, revision_sha=sha)
    cluster.control_plane.stop_apiserver()
    try:
        time.sleep(3)  # the watches see the connection go
    finally:
        cluster.control_plane.start_apiserver()
    # Drift made as soon as it is back, before the watches have reconnected.
    cluster.kubectl("patch", "configmap", "settings", "-n", namespace, "--type=merge",
                    "-p", '{"data": {"v": "while reconnecting"}}')  # fmt: skip
    wait_for(
        "the ConfigMap put back after the restart",
        lambda: (cluster.get("configmap", "settings", namespace) or {}).get("data") == {"v": "git"},
        90,  # the watches reconnect with backoff (at most 30 s apart)
    )
