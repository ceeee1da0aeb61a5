"""spec.wait, spec.healthChecks and spec.healthCheckExprs on a control plane whose
Pods become Ready (kube-scheduler and kwok): a sync is Ready only once what it
applied is healthy; a failed object ends the wait early, a timeout names each
object that is not healthy and why, and a new commit supersedes a wait at once."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.harness.cluster_fixtures import Cluster, Operator, wait_for
from tests.harness.git_fixtures import RepoFactory
from tests.harness.gitserver import descendants, is_running
from tests.harness.manifests import config_map, deployment, job, widget, widget_crd
from tests.harness.syncs import (
    condition,
    create_sync,
    events_for,
    request_reconcile,
    wait_condition,
    wait_event,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("kwok_pods")]


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def message(sync: dict[str, Any] | None, type_: str = "Ready") -> str:
    c = condition(sync, type_)
    return c["message"] if c else ""


def wait_waiting(
    cluster: Cluster, name: str, namespace: str, says: str = "waiting for", timeout: float = 30
) -> dict[str, Any]:
    """The sync once its Reconciling message (what the health check waits for) says `says`."""

    def check() -> dict[str, Any] | None:
        sync = cluster.get("grs", name, namespace)
        return sync if says in message(sync, "Reconciling") else None

    try:
        return wait_for(f"grs/{name} Reconciling: {says!r}", check, timeout)  # type: ignore[no-any-return]
    except AssertionError as e:
        status = (cluster.get("grs", name, namespace) or {}).get("status")
        raise AssertionError(f"{e}\nstatus: {json.dumps(status, indent=1)}") from None


def test_deployment_sync_is_ready_after_its_pods_not_before(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("web")
    sha = repo.commit({"web.yaml": deployment("web", replicas=3)}, "three replicas")
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, wait=True, timeout="2m")
    # The wait is the documented way to wait for a rollout: kubectl wait on the sync.
    cluster.kubectl("wait", "--for=condition=Ready", "grs/web", "-n", namespace, "--timeout=90s")
    web = cluster.get("deployment", "web", namespace)
    assert web is not None and web["status"].get("readyReplicas") == 3
    sync = wait_condition(cluster, "web", namespace, revision_sha=sha)
    assert "1 object(s) healthy" in message(sync)
    wait_event(cluster, "web", namespace, r"health check passed", "Normal")


def test_never_ready_pod_times_out_naming_the_deployment_and_the_pods_reason(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("slow")
    repo.commit(
        {"slow.yaml": deployment("slow", behaviour="never-ready"), "cm.yaml": config_map("c", "1")},
        "a Deployment that never becomes ready",
    )
    repo.push()
    create_sync(cluster, "slow", namespace, repo.bare.file_url, wait=True, timeout="25s",
                interval="1h", retryInterval="1h")  # fmt: skip
    # While it waits, the status says for what, in the API's words.
    waiting = wait_waiting(cluster, "slow", namespace, "waiting for 1 of 2 object(s)")
    assert f"Deployment/{namespace}/slow:" in message(waiting, "Reconciling")
    ready = condition(waiting, "Ready")
    assert ready is not None and ready["status"] == "Unknown"

    sync = wait_condition(cluster, "slow", namespace, status="False", reason="HealthCheckFailed",
                          timeout=60)  # fmt: skip
    text = message(sync)
    assert "timed out after 25s" in text
    assert f"Deployment/{namespace}/slow:" in text
    assert "ContainerCreating" in text  # the Pod's own waiting reason
    assert "ConfigMap" not in text  # healthy objects are not listed
    assert condition(sync, "Stalled") is None  # a retry may succeed
    assert cluster.get("configmap", "c", namespace) is not None  # applied all the same
    wait_event(cluster, "slow", namespace, r"ContainerCreating", "Warning")


def test_crash_looping_pod_fails_the_wait_early(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("crash")
    repo.commit({"crash.yaml": deployment("crash", behaviour="crash")}, "a crashing app")
    repo.push()
    started = time.monotonic()
    create_sync(cluster, "crash", namespace, repo.bare.file_url, wait=True, timeout="10m",
                retryInterval="1h")  # fmt: skip
    sync = wait_condition(cluster, "crash", namespace, status="False", reason="HealthCheckFailed",
                          timeout=60)  # fmt: skip
    assert time.monotonic() - started < 60  # not the 10-minute timeout
    text = message(sync)
    assert f"Deployment/{namespace}/crash" in text and "failed" in text
    assert "CrashLoopBackOff" in text
    assert "timed out" not in text


def test_job_that_completes_and_job_that_fails(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    good, bad = repo_factory("good"), repo_factory("bad")
    sha = good.commit({"once.yaml": job("once")}, "a job that completes")
    good.push()
    bad.commit({"oops.yaml": job("oops", behaviour="fail")}, "a job that fails")
    bad.push()
    create_sync(cluster, "good", namespace, good.bare.file_url, wait=True, timeout="2m")
    create_sync(cluster, "bad", namespace, bad.bare.file_url, wait=True, timeout="10m",
                retryInterval="1h")  # fmt: skip
    wait_condition(cluster, "good", namespace, revision_sha=sha, timeout=90)
    once = cluster.get("job", "once", namespace)
    assert once is not None and once["status"].get("succeeded") == 1

    sync = wait_condition(cluster, "bad", namespace, status="False", reason="HealthCheckFailed",
                          timeout=90)  # fmt: skip
    text = message(sync)
    assert f"Job/{namespace}/oops" in text
    assert "backoff limit" in text  # the Job controller's own words


def test_custom_resource_ready_condition_and_cel_expression(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    group = f"{namespace}.health.test"
    cluster.apply(widget_crd_with_status(group))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/widgets.{group}")
    try:
        # A Widget another controller made, which reports Ready=False for now (kstatus
        # calls a resource with no conditions at all healthy).
        cluster.apply(json.loads(widget(group, "by-condition", namespace=namespace)))
        set_status(cluster, group, "widgets", "by-condition", namespace, {
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "False", "reason": "Provisioning",
                            "message": "provisioning", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        })  # fmt: skip
        repo = repo_factory("widgets")
        sha = repo.commit({"cel.yaml": gadget(group, "by-cel")}, "a gadget")
        repo.push()
        create_sync(
            cluster, "widgets", namespace, repo.bare.file_url, wait=True, timeout="5m",
            retryInterval="1h",
            healthChecks=[{"apiVersion": f"{group}/v1", "kind": "Widget", "name": "by-condition"}],
            healthCheckExprs=[{
                "apiVersion": f"{group}/v1", "kind": "Gadget",
                "current": "status.phase == 'Done'",
                "failed": "status.phase == 'Broken'",
            }],
        )  # fmt: skip
        waiting = wait_waiting(cluster, "widgets", namespace, "waiting for 2 of 2 object(s)")
        assert f"Widget/{namespace}/by-condition: Provisioning: provisioning" in message(
            waiting, "Reconciling"
        )

        # A controller (this test) reports the Widget Ready: one left.
        set_status(cluster, group, "widgets", "by-condition", namespace, {
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Done", "message": "ok",
                            "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        })  # fmt: skip
        wait_for(
            "only the Gadget awaited",
            lambda: (
                "waiting for 1 of 2"
                in message(cluster.get("grs", "widgets", namespace), "Reconciling")
            ),  # fmt: skip
            30,
        )
        set_status(cluster, group, "gadgets", "by-cel", namespace, {"phase": "Done"})
        wait_condition(cluster, "widgets", namespace, revision_sha=sha, timeout=30)

        # The CEL `failed` expression ends a later wait early.
        set_status(cluster, group, "gadgets", "by-cel", namespace, {"phase": "Pending"})
        sha2 = repo.commit({"cel.yaml": gadget(group, "by-cel", size=2)}, "a new gadget spec")
        repo.push()
        request_reconcile(cluster, "widgets", namespace)
        wait_for(
            "the sync to wait for the Gadget again",
            lambda: str(
                (cluster.get("grs", "widgets", namespace) or {}).get("status", {})
                .get("lastAttemptedRevision", "")
            ).endswith(sha2),
            30,
        )  # fmt: skip
        set_status(cluster, group, "gadgets", "by-cel", namespace, {"phase": "Broken"})
        sync = wait_condition(cluster, "widgets", namespace, status="False",
                              reason="HealthCheckFailed", timeout=30)  # fmt: skip
        assert f"Gadget/{namespace}/by-cel" in message(sync)

        # The expressions ran in a CEL worker process below the operator; a
        # graceful stop ends it and leaves nothing running.
        assert operator.proc is not None
        workers = [p for p in descendants(operator.proc.pid) if "celworker" in cmdline(p.pid)]
        assert workers, "no CEL worker below the operator"
        operator.stop()
        assert operator.proc.returncode == 0, operator.log()[-2000:]
        assert not [w for w in workers if is_running(w)]
    finally:
        cluster.kubectl("delete", "crd", f"widgets.{group}", f"gadgets.{group}",
                        "--wait=false", check=False)  # fmt: skip


def test_health_checks_wait_for_an_object_outside_the_sync(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("app")
    sha = repo.commit({"cm.yaml": config_map("c", "1")}, "an app that needs a database")
    repo.push()
    create_sync(
        cluster, "app", namespace, repo.bare.file_url, timeout="5m",
        healthChecks=[{"apiVersion": "apps/v1", "kind": "Deployment", "name": "db"}],
    )  # fmt: skip
    wait_waiting(cluster, "app", namespace, f"Deployment/{namespace}/db: not found")
    cluster.apply(
        json.loads(deployment("db")) | {"metadata": {"name": "db", "namespace": namespace}}
    )
    wait_condition(cluster, "app", namespace, revision_sha=sha, timeout=60)
    db = cluster.get("deployment", "db", namespace)
    assert db is not None and db["status"].get("readyReplicas") == 1


def test_new_commit_supersedes_a_long_wait_within_seconds(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("fix")
    broken = repo.commit({"web.yaml": deployment("web", behaviour="never-ready")}, "broken")
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, wait=True, timeout="10m")
    wait_waiting(cluster, "web", namespace, broken[:12])

    fixed = repo.commit({"web.yaml": deployment("web")}, "fixed")
    repo.push()
    pushed = time.monotonic()
    # The sync's 5 s interval is when it asks git again: the wait of the broken
    # revision (ten minutes) ends then, and the fixed one becomes Ready.
    wait_condition(cluster, "web", namespace, revision_sha=fixed, timeout=60)
    assert time.monotonic() - pushed < 30
    wait_event(cluster, "web", namespace, rf"health check of .*{broken[:12]}.* was superseded")
    assert not [e for e in events_for(cluster, "web", namespace) if e["type"] == "Warning"]


def test_requested_reconcile_supersedes_a_wait_at_once(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("req")
    repo.commit({"web.yaml": deployment("web", behaviour="never-ready")}, "broken")
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, wait=True, timeout="10m",
                interval="1h")  # fmt: skip
    wait_waiting(cluster, "web", namespace)
    fixed = repo.commit({"web.yaml": deployment("web")}, "fixed")
    repo.push()
    asked = time.monotonic()
    request_reconcile(cluster, "web", namespace)  # what `flux reconcile` does
    wait_condition(cluster, "web", namespace, revision_sha=fixed, timeout=30)
    assert time.monotonic() - asked < 15


def widget_crd_with_status(group: str) -> dict[str, Any]:
    """Widgets (Ready condition) and Gadgets (judged by CEL), each with a status
    subresource that the test writes as a controller would."""
    docs = []
    for kind in ("Widget", "Gadget"):
        crd = json.loads(widget_crd(group))
        plural = kind.lower() + "s"
        crd["metadata"]["name"] = f"{plural}.{group}"
        crd["spec"]["names"] = {"plural": plural, "singular": kind.lower(), "kind": kind}
        version = crd["spec"]["versions"][0]
        version["subresources"] = {"status": {}}
        version["schema"]["openAPIV3Schema"]["properties"]["status"] = {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
        }
        docs.append(crd)
    return {"apiVersion": "v1", "kind": "List", "items": docs}


def gadget(group: str, name: str, size: int = 1) -> str:
    obj = json.loads(widget(group, name, size))
    obj["kind"] = "Gadget"
    return json.dumps(obj)


def set_status(
    cluster: Cluster, group: str, plural: str, name: str, namespace: str, status: dict[str, Any]
) -> None:
    cluster.kubectl(
        "patch", f"{plural}.{group}", name, "-n", namespace, "--subresource=status",
        "--type=merge", "-p", json.dumps({"status": status}),
    )  # fmt: skip


def test_the_fix_of_a_crash_looping_deployment_is_not_failed_by_the_old_pods(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("fixit")
    repo.commit({"web.yaml": deployment("web", behaviour="crash")}, "a crashing image")
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, wait=True, timeout="2m",
                interval="1h", retryInterval="1h")  # fmt: skip
    wait_condition(cluster, "web", namespace, status="False", reason="HealthCheckFailed",
                   timeout=60)  # fmt: skip
    fixed = repo.commit({"web.yaml": deployment("web")}, "the fix")
    repo.push()
    request_reconcile(cluster, "web", namespace)
    wait_condition(cluster, "web", namespace, revision_sha=fixed, timeout=60)
    # No failure was reported for the fix, though old Pods crash-looped during its rollout.
    failed_fix = [
        e for e in events_for(cluster, "web", namespace)
        if e["type"] == "Warning" and fixed in e["message"]
    ]  # fmt: skip
    assert failed_fix == []
