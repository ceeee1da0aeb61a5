"""Health per kind, from objects shaped as the API server returns them: a rollout
in progress, done and past its deadline; a Job running, complete and out of
retries; Pods crash-looping, pulling, created and done; a CR that says Ready,
Reconciling or Stalled; and a workload that waits on its Pods."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gitferry.health import Health, Status, assess, pod_selector, with_pods
from gitferry.health.kinds import RULES

IN_PROGRESS, FAILED, CURRENT = Status.IN_PROGRESS, Status.FAILED, Status.CURRENT


def cond(type_: str, status: str, reason: str = "", message: str = "") -> dict[str, str]:
    c = {"type": type_, "status": status, "lastTransitionTime": "2026-03-02T10:00:00Z"}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def obj(api_version: str, kind: str, name: str = "web", **fields: Any) -> dict[str, Any]:
    meta = {
        "name": name,
        "namespace": "apps",
        "uid": "0b6a4d1e-8f3c-4c1a-9d2e-5b7f1a2c3d4e",
        "resourceVersion": "4711",
        "creationTimestamp": "2026-03-02T10:00:00Z",
        **fields.pop("metadata", {}),
    }
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **fields}


def deployment(status: dict[str, Any], replicas: int = 3, generation: int = 2) -> dict[str, Any]:
    return obj(
        "apps/v1",
        "Deployment",
        metadata={"generation": generation},
        spec={
            "replicas": replicas,
            "progressDeadlineSeconds": 600,
            "revisionHistoryLimit": 10,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
            },
        },
        status=status,
    )


ROLLING_OUT = deployment(
    {
        "observedGeneration": 2,
        "replicas": 4,
        "updatedReplicas": 2,
        "readyReplicas": 3,
        "availableReplicas": 3,
        "unavailableReplicas": 1,
        "conditions": [
            cond(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            ),
            cond(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                'ReplicaSet "web-7c9d8b5f4" is progressing.',
            ),
        ],
    }
)
COMPLETE = deployment(
    {
        "observedGeneration": 2,
        "replicas": 3,
        "updatedReplicas": 3,
        "readyReplicas": 3,
        "availableReplicas": 3,
        "conditions": [
            cond(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            ),
            cond(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                'ReplicaSet "web-7c9d8b5f4" has successfully progressed.',
            ),
        ],
    }
)
DEADLINE_EXCEEDED = deployment(
    {
        "observedGeneration": 3,
        "replicas": 4,
        "updatedReplicas": 1,
        "readyReplicas": 3,
        "availableReplicas": 3,
        "unavailableReplicas": 1,
        "conditions": [
            cond(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            ),
            cond(
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                'ReplicaSet "web-5d9c7f6b8d" has timed out progressing.',
            ),
        ],
    },
    generation=3,
)
# Just created, one replica, its Pod still being created.
FRESH = deployment(
    {
        "observedGeneration": 1,
        "replicas": 1,
        "updatedReplicas": 1,
        "unavailableReplicas": 1,
        "conditions": [
            cond(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            ),
            cond(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                'ReplicaSet "web-5d9c7f6b8d" is progressing.',
            ),
        ],
    },
    replicas=1,
    generation=1,
)


def job(status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return obj(
        "batch/v1",
        "Job",
        name="migrate",
        metadata={"generation": 1, "labels": {"batch.kubernetes.io/job-name": "migrate"}},
        spec={
            "backoffLimit": 6,
            "completions": 1,
            "parallelism": 1,
            "completionMode": "NonIndexed",
            "suspend": False,
            "selector": {
                "matchLabels": {
                    "batch.kubernetes.io/controller-uid": "0b6a4d1e-8f3c-4c1a-9d2e-5b7f1a2c3d4e"
                }
            },
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m"}]}},
            **spec,
        },
        status=status,
    )


BACKOFF = "Job has reached the specified backoff limit"
JOB_RUNNING = job(
    {
        "startTime": "2026-03-02T10:00:01Z",
        "active": 1,
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    }
)
JOB_COMPLETE = job(
    {
        "startTime": "2026-03-02T10:00:01Z",
        "completionTime": "2026-03-02T10:00:09Z",
        "succeeded": 1,
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
        "conditions": [
            cond(
                "SuccessCriteriaMet",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ),
            cond(
                "Complete",
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ),
        ],
    }
)
JOB_FAILED = job(
    {
        "startTime": "2026-03-02T10:00:01Z",
        "failed": 7,
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
        "conditions": [
            cond("FailureTarget", "True", "BackoffLimitExceeded", BACKOFF),
            cond("Failed", "True", "BackoffLimitExceeded", BACKOFF),
        ],
    }
)
# Kubernetes ≥ 1.31 sets FailureTarget first, and Failed once the Pods are gone.
JOB_FAILING = job(
    {
        "startTime": "2026-03-02T10:00:01Z",
        "failed": 7,
        "terminating": 1,
        "uncountedTerminatedPods": {},
        "conditions": [cond("FailureTarget", "True", "BackoffLimitExceeded", BACKOFF)],
    }
)


def pod(name: str, phase: str, *statuses: dict[str, Any], **status: Any) -> dict[str, Any]:
    return obj(
        "v1",
        "Pod",
        name=name,
        metadata={
            "labels": {"app": "web", "pod-template-hash": "5d9c7f6b8d"},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d9c7f6b8d"}
            ],
        },
        spec={"restartPolicy": "Always", "containers": [{"name": "web", "image": "nginx:1.27"}]},
        status={"phase": phase, "containerStatuses": list(statuses), **status},
    )


def container(state: dict[str, Any], name: str = "web", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": "nginx:1.27",
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        "started": False,
        "state": state,
        **extra,
    }


NOT_READY = [
    cond("PodReadyToStartContainers", "True"),
    cond("Initialized", "True"),
    cond("Ready", "False", "ContainersNotReady", "containers with unready status: [web]"),
    cond("ContainersReady", "False", "ContainersNotReady", "containers with unready status: [web]"),
    cond("PodScheduled", "True"),
]
BACK_OFF = "back-off 1m20s restarting failed container=web pod=web-5d9c7f6b8d-x2x7q_apps(1b4c)"
CRASHLOOP = pod(
    "web-5d9c7f6b8d-x2x7q",
    "Running",
    container(
        {"waiting": {"reason": "CrashLoopBackOff", "message": BACK_OFF}},
        restartCount=4,
        lastState={"terminated": {"exitCode": 1, "reason": "Error"}},
    ),
    conditions=NOT_READY,
)
IMAGE_PULL = pod(
    "web-5d9c7f6b8d-x2x7q",
    "Pending",
    container(
        {
            "waiting": {
                "reason": "ImagePullBackOff",
                "message": 'Back-off pulling image "nginx:does-not-exist"',
            }
        }
    ),
    conditions=NOT_READY,
)
CREATING = pod(
    "web-5d9c7f6b8d-x2x7q",
    "Pending",
    container({"waiting": {"reason": "ContainerCreating"}}),
    conditions=NOT_READY,
)
RUNNING_READY = pod(
    "web-5d9c7f6b8d-a1b2c",
    "Running",
    container({"running": {"startedAt": "2026-03-02T10:00:05Z"}}, ready=True, started=True),
    conditions=[
        cond("Ready", "True"),
        cond("ContainersReady", "True"),
        cond("PodScheduled", "True"),
    ],
)
SUCCEEDED = pod(
    "migrate-7xk2p",
    "Succeeded",
    container({"terminated": {"exitCode": 0, "reason": "Completed"}}),
)
EVICTED = pod(
    "web-5d9c7f6b8d-old01",
    "Failed",
    reason="Evicted",
    message="The node was low on resource: memory. Threshold quantity: 100Mi, available: 91Mi.",
)
UNSCHEDULABLE = pod(
    "web-5d9c7f6b8d-x2x7q",
    "Pending",
    conditions=[
        cond(
            "PodScheduled",
            "False",
            "Unschedulable",
            "0/1 nodes are available: 1 Insufficient cpu.",
        )
    ],
)


def pvc(phase: str) -> dict[str, Any]:
    return obj(
        "v1",
        "PersistentVolumeClaim",
        name="data",
        spec={"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        status={"phase": phase},
    )


def crd(*conditions: dict[str, str]) -> dict[str, Any]:
    return obj(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        name="widgets.example.com",
        metadata={"generation": 1, "namespace": None},
        spec={"group": "example.com", "names": {"kind": "Widget", "plural": "widgets"}},
        status={"conditions": list(conditions), "storedVersions": ["v1"]},
    )


def widget(generation: int = 2, observed: int = 2, *conditions: dict[str, str]) -> dict[str, Any]:
    return obj(
        "example.com/v1",
        "Widget",
        metadata={"generation": generation},
        spec={"size": 3},
        status={"observedGeneration": observed, "conditions": list(conditions)},
    )


def service(type_: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return obj(
        "v1",
        "Service",
        spec={"type": type_, "clusterIP": "10.96.12.7", "ports": [{"port": 80}]},
        status=status or {"loadBalancer": {}},
    )


CASES = [
    # Deployments, as kstatus judges them.
    ("deployment rolling out", ROLLING_OUT, IN_PROGRESS, "2 of 3 replicas updated"),
    ("deployment complete", COMPLETE, CURRENT, "3 of 3 replicas ready"),
    (
        "deployment past its deadline",
        DEADLINE_EXCEEDED,
        FAILED,
        'ReplicaSet "web-5d9c7f6b8d" has timed out progressing.',
    ),
    ("deployment waiting on its Pod", FRESH, IN_PROGRESS, "0 of 1 replicas ready"),
    (
        "deployment not yet observed",
        deployment(COMPLETE["status"], generation=3),
        IN_PROGRESS,
        "generation 3 not yet observed (observed 2)",
    ),
    (
        "deployment scaled down, old Pods going",
        deployment({**COMPLETE["status"], "replicas": 5}),
        IN_PROGRESS,
        "2 old replicas pending termination",
    ),
    # Jobs, as Flux judges them.
    ("job running", JOB_RUNNING, IN_PROGRESS, "Job running: 1 active, 0 of 1 succeeded, 0 failed"),
    ("job complete", JOB_COMPLETE, CURRENT, "Job completed: 1 of 1 succeeded"),
    ("job out of retries", JOB_FAILED, FAILED, BACKOFF),
    ("job failing, Pods terminating", JOB_FAILING, FAILED, BACKOFF),
    ("job not started", job({}), IN_PROGRESS, "Job not started"),
    ("job suspended", job({}, suspend=True), CURRENT, "Job is suspended"),
    # Pods.
    ("pod crash-looping", CRASHLOOP, FAILED, f"container web CrashLoopBackOff: {BACK_OFF}"),
    (
        "pod whose image cannot be pulled",
        IMAGE_PULL,
        FAILED,
        'container web ImagePullBackOff: Back-off pulling image "nginx:does-not-exist"',
    ),
    ("pod being created", CREATING, IN_PROGRESS, "container web ContainerCreating"),
    ("pod ready", RUNNING_READY, CURRENT, "Pod is ready"),
    ("pod succeeded", SUCCEEDED, CURRENT, "Pod succeeded"),
    (
        "pod evicted",
        EVICTED,
        FAILED,
        "Evicted: The node was low on resource: memory. Threshold quantity: 100Mi, available: 91Mi.",
    ),
    (
        "pod unschedulable",
        UNSCHEDULABLE,
        IN_PROGRESS,
        "Unschedulable: 0/1 nodes are available: 1 Insufficient cpu.",
    ),
    (
        "pod running, not ready",
        pod(
            "web-1",
            "Running",
            container({"running": {}}),
            conditions=NOT_READY,
        ),
        IN_PROGRESS,
        "ContainersNotReady: containers with unready status: [web]",
    ),
    # PersistentVolumeClaims.
    ("pvc pending", pvc("Pending"), IN_PROGRESS, "PVC is Pending, not Bound"),
    ("pvc bound", pvc("Bound"), CURRENT, "PVC is Bound"),
    # CustomResourceDefinitions.
    (
        "crd established",
        crd(
            cond("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
            cond(
                "Established",
                "True",
                "InitialNamesAccepted",
                "the initial names have been accepted",
            ),
        ),
        CURRENT,
        "CRD is established",
    ),
    (
        "crd installing",
        crd(
            cond("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
            cond("Established", "False", "Installing", "the initial names have been accepted"),
        ),
        IN_PROGRESS,
        "Installing: the initial names have been accepted",
    ),
    (
        "crd whose names conflict",
        crd(
            cond("NamesAccepted", "False", "PluralConflict", '"widgets" is already in use'),
            cond("Established", "False", "NotAccepted", "not all names are accepted"),
        ),
        FAILED,
        'PluralConflict: "widgets" is already in use',
    ),
    # Custom resources, by the generic rule.
    (
        "cr ready",
        widget(2, 2, cond("Ready", "True", "Succeeded", "Widget is serving")),
        CURRENT,
        "Widget is serving",
    ),
    (
        "cr not ready is in progress",
        widget(2, 2, cond("Ready", "False", "Provisioning", "waiting for the volume")),
        IN_PROGRESS,
        "Provisioning: waiting for the volume",
    ),
    (
        "cr reconciling",
        widget(
            2,
            2,
            cond("Ready", "Unknown", "Progressing", "Reconciliation in progress"),
            cond("Reconciling", "True", "Progressing", "Reconciliation in progress"),
        ),
        IN_PROGRESS,
        "Progressing: Reconciliation in progress",
    ),
    (
        "cr stalled",
        widget(
            2,
            2,
            cond("Reconciling", "True", "ProgressingWithRetry", "retrying"),
            cond("Stalled", "True", "InvalidSpec", "spec.size must be odd"),
            cond("Ready", "False", "InvalidSpec", "spec.size must be odd"),
        ),
        FAILED,
        "InvalidSpec: spec.size must be odd",
    ),
    (
        "cr with a stale observedGeneration",
        widget(3, 2, cond("Ready", "True", "Succeeded", "Widget is serving")),
        IN_PROGRESS,
        "generation 3 not yet observed (observed 2)",
    ),
    (
        "cr being deleted",
        {**widget(), "metadata": {"name": "w", "deletionTimestamp": "2026-03-02T11:00:00Z"}},
        Status.TERMINATING,
        "scheduled for deletion",
    ),
    ("configmap", obj("v1", "ConfigMap", data={"k": "v"}), CURRENT, "no conditions to wait for"),
    # Services.
    ("clusterip service", service("ClusterIP"), CURRENT, "ClusterIP Service"),
    (
        "load balancer without an address",
        service("LoadBalancer"),
        IN_PROGRESS,
        "waiting for the load balancer's ingress address",
    ),
    (
        "load balancer with an address",
        service("LoadBalancer", {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}),
        CURRENT,
        "load balancer at 203.0.113.7",
    ),
]


@pytest.mark.parametrize(("what", "subject", "status", "message"), CASES, ids=[c[0] for c in CASES])
def test_health_of(what: str, subject: dict[str, Any], status: Status, message: str) -> None:
    assert assess(subject) == Health(status, message)


def workload(kind: str, status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    group = "batch/v1" if kind == "Job" else "apps/v1"
    return obj(group, kind, metadata={"generation": 1}, spec=spec, status=status)


SET_CASES = [
    (
        "statefulset creating",
        workload(
            "StatefulSet",
            {"observedGeneration": 1, "replicas": 1, "readyReplicas": 0},
            replicas=3,
            updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
        ),
        IN_PROGRESS,
        "1 of 3 replicas created",
    ),
    (
        "statefulset rolled out",
        workload(
            "StatefulSet",
            {
                "observedGeneration": 1,
                "replicas": 3,
                "readyReplicas": 3,
                "currentReplicas": 3,
                "updatedReplicas": 3,
                "currentRevision": "db-6c4d5",
                "updateRevision": "db-6c4d5",
            },
            replicas=3,
            updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
        ),
        CURRENT,
        "3 of 3 replicas ready",
    ),
    (
        "statefulset canary behind a partition",
        workload(
            "StatefulSet",
            {
                "observedGeneration": 1,
                "replicas": 3,
                "readyReplicas": 3,
                "currentReplicas": 2,
                "updatedReplicas": 1,
                "currentRevision": "db-6c4d5",
                "updateRevision": "db-7f9a1",
            },
            replicas=3,
            updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
        ),
        CURRENT,
        "3 of 3 replicas ready, 1 updated (partition 2)",
    ),
    (
        "statefulset updating",
        workload(
            "StatefulSet",
            {
                "observedGeneration": 1,
                "replicas": 3,
                "readyReplicas": 3,
                "currentReplicas": 2,
                "updatedReplicas": 1,
            },
            replicas=3,
            updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
        ),
        IN_PROGRESS,
        "1 of 3 replicas updated",
    ),
    (
        "daemonset rolling out",
        workload(
            "DaemonSet",
            {
                "observedGeneration": 1,
                "desiredNumberScheduled": 2,
                "currentNumberScheduled": 2,
                "updatedNumberScheduled": 2,
                "numberReady": 1,
                "numberAvailable": 1,
            },
        ),
        IN_PROGRESS,
        "1 of 2 Pods ready",
    ),
    (
        "daemonset not yet seen by its controller",
        workload("DaemonSet", {}),
        IN_PROGRESS,
        "not yet observed by the DaemonSet controller",
    ),
    (
        "replicaset over quota",
        workload(
            "ReplicaSet",
            {
                "observedGeneration": 1,
                "replicas": 0,
                "conditions": [
                    cond(
                        "ReplicaFailure",
                        "True",
                        "FailedCreate",
                        'pods "web-5d9c7f6b8d-x2x7q" is forbidden: exceeded quota: pods',
                    )
                ],
            },
            replicas=1,
        ),
        IN_PROGRESS,
        'FailedCreate: pods "web-5d9c7f6b8d-x2x7q" is forbidden: exceeded quota: pods',
    ),
]


@pytest.mark.parametrize(
    ("what", "subject", "status", "message"), SET_CASES, ids=[c[0] for c in SET_CASES]
)
def test_health_of_sets(what: str, subject: dict[str, Any], status: Status, message: str) -> None:
    assert assess(subject) == Health(status, message)


def test_every_kind_in_the_table_survives_an_object_without_status() -> None:
    for group, kind in RULES:
        bare = obj(f"{group}/v1" if group else "v1", kind)
        assert assess(bare).status in (IN_PROGRESS, CURRENT), kind


@pytest.mark.parametrize(
    "status",
    [
        {"conditions": "Ready"},
        {"conditions": [None, 3, {"type": 7}, {"status": "True"}]},
        {"replicas": "three", "readyReplicas": True, "observedGeneration": "2"},
        {"containerStatuses": [None, {"state": "waiting"}], "phase": 4},
        [],
    ],
)
def test_a_malformed_status_is_judged_not_raised(status: Any) -> None:
    for kind in ("Deployment", "Pod", "Widget"):
        subject = {
            "apiVersion": "v1",
            "kind": kind,
            "metadata": {"generation": 2},
            "status": status,
        }
        assert isinstance(assess(subject), Health)


def test_a_long_message_is_one_short_line() -> None:
    noisy = copy.deepcopy(IMAGE_PULL)
    noisy["status"]["containerStatuses"][0]["state"]["waiting"]["message"] = "rpc error:\n" * 200
    message = assess(noisy).message
    assert "\n" not in message
    assert len(message) <= 300
    assert message.endswith("…")


# A workload and its Pods.


def test_a_crash_looping_pod_fails_its_deployment_early() -> None:
    health = with_pods(assess(FRESH), [CRASHLOOP])
    assert health == Health(
        FAILED, f"pod web-5d9c7f6b8d-x2x7q: container web CrashLoopBackOff: {BACK_OFF}"
    )


def test_a_waiting_pod_says_why_the_deployment_waits() -> None:
    health = with_pods(assess(FRESH), [CREATING])
    assert health == Health(
        IN_PROGRESS,
        "0 of 1 replicas ready; pod web-5d9c7f6b8d-x2x7q: container web ContainerCreating",
    )


def test_an_unschedulable_pod_names_the_scheduler_reason() -> None:
    health = with_pods(assess(FRESH), [UNSCHEDULABLE])
    assert health.status is IN_PROGRESS
    assert health.message.endswith("Unschedulable: 0/1 nodes are available: 1 Insufficient cpu.")


def test_a_failed_pod_of_a_failed_job_keeps_the_jobs_words() -> None:
    assert with_pods(assess(JOB_FAILED), [CRASHLOOP]) == Health(FAILED, BACKOFF)


def test_a_current_workload_is_not_judged_by_its_pods() -> None:
    assert with_pods(assess(COMPLETE), [CRASHLOOP]).status is CURRENT


def test_finished_and_deleted_pods_do_not_count() -> None:
    """An evicted Pod lingers in phase Failed after its ReplicaSet replaced it;
    a Job counts a failed Pod against its backoffLimit."""
    going = copy.deepcopy(CRASHLOOP)
    going["metadata"]["deletionTimestamp"] = "2026-03-02T11:00:00Z"
    assert with_pods(assess(ROLLING_OUT), [EVICTED, going, SUCCEEDED]) == assess(ROLLING_OUT)
    assert with_pods(assess(JOB_RUNNING), [EVICTED]).status is IN_PROGRESS


def test_pods_are_taken_in_name_order() -> None:
    later = copy.deepcopy(IMAGE_PULL)
    later["metadata"]["name"] = "web-5d9c7f6b8d-zzzzz"
    health = with_pods(assess(ROLLING_OUT), [later, RUNNING_READY, CRASHLOOP])
    assert health.message.startswith("pod web-5d9c7f6b8d-x2x7q: container web CrashLoopBackOff")


def test_the_pod_selector_is_written_as_kubectl_writes_it() -> None:
    subject = copy.deepcopy(COMPLETE)
    subject["spec"]["selector"] = {
        "matchLabels": {"app": "web", "app.kubernetes.io/part-of": "shop"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front", "back"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "zone", "operator": "NotIn", "values": ["b"]},
            {"key": "managed", "operator": "Exists"},
        ],
    }
    assert pod_selector(subject) == (
        "app=web,app.kubernetes.io/part-of=shop,!canary,managed,tier in (back,front),zone notin (b)"
    )
    assert pod_selector(JOB_RUNNING) == (
        "batch.kubernetes.io/controller-uid=0b6a4d1e-8f3c-4c1a-9d2e-5b7f1a2c3d4e"
    )


@pytest.mark.parametrize(
    "selector",
    [
        None,
        {},
        {"matchLabels": {}},
        {"matchLabels": {"app": "web,evil=1"}},
        {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "x", "operator": "Gt"}]},
        {"matchExpressions": [{"key": "x", "operator": "In", "values": []}]},
    ],
)
def test_no_pod_selector_rather_than_a_wrong_one(selector: Any) -> None:
    subject = copy.deepcopy(COMPLETE)
    subject["spec"]["selector"] = selector
    assert pod_selector(subject) is None


def test_only_workloads_have_pods_to_list() -> None:
    assert pod_selector(service("ClusterIP")) is None
    assert pod_selector(CRASHLOOP) is None
