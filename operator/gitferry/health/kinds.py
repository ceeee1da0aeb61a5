"""Health per kind, as data: a table of rules keyed by (group, kind), and the
generic rule that every object goes through first.

The rules are kstatus's (sigs.k8s.io/cli-utils pkg/kstatus/status, core.go and
generic.go), with Flux's rule for Jobs (fluxcd/pkg runtime/statusreaders/job.go:
a running Job is InProgress, only Complete is Current) and three of our own,
each marked where it is: a Pod in phase Failed is Failed, a container waiting
for a reason that does not clear by itself fails its Pod whatever the phase, and
a LoadBalancer Service needs an ingress address (Argo CD's rule; kstatus only
asks for a cluster IP). Messages are our own words around the API's numbers,
or the API's own words where it has some (a condition's message, a kubelet's
waiting reason).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

from .status import (
    Condition,
    Health,
    Status,
    condition,
    conditions,
    count,
    current,
    failed,
    field,
    in_progress,
    integer,
    stale_generation,
    text,
)

Obj = Mapping[str, Any]
Rule = Callable[[Obj], Health]

# The Deployment controller's "no deadline" (kstatus core.go: math.MaxInt32).
_NO_DEADLINE = 2**31 - 1


def group_kind(obj: Obj) -> tuple[str, str]:
    """(group, kind) of an object: `apps/v1` → `apps`, `v1` → `` (core)."""
    api_version = obj.get("apiVersion")
    group = api_version.rpartition("/")[0] if isinstance(api_version, str) else ""
    kind = obj.get("kind")
    return group, kind if isinstance(kind, str) else ""


def judge(obj: Obj) -> Health:
    """kstatus's order (status.go Compute): the generic rule, then the kind's
    row of RULES, then the Ready condition; an object none of them speaks for is
    Current."""
    health = generic(obj)
    if health is not None:
        return health
    rule = RULES.get(group_kind(obj))
    if rule is not None:
        return rule(obj)
    return ready_condition(obj) or current("no conditions to wait for")


def generic(obj: Obj) -> Health | None:
    """What holds for any kind (kstatus generic.go): being deleted, a spec not
    yet observed, and the Stalled and Reconciling conditions.

    kstatus takes whichever of Stalled and Reconciling comes first in the list;
    we let Stalled win, so a stalled object ends a wait as soon as it says so.
    """
    if text(obj, "metadata", "deletionTimestamp"):
        return Health(Status.TERMINATING, "scheduled for deletion")
    stale = stale_generation(obj)
    if stale is not None:
        return stale
    conds = conditions(obj)
    for c in conds:
        if c.type == "Stalled" and c.status == "True":
            return failed(c.words() or "Stalled")
    for c in conds:
        if c.type == "Reconciling" and c.status == "True":
            return in_progress(c.words() or "Reconciling")
    return None


def ready_condition(obj: Obj) -> Health | None:
    """kstatus's checkReadyCondition: Ready True is Current; False or Unknown is
    InProgress (a controller that has given up says Stalled)."""
    c = condition(obj, "Ready")
    if c is None:
        return None
    if c.status == "True":
        return current(c.message or "Ready")
    return in_progress(c.words() or f"Ready is {c.status or 'unset'}")


def _true(c: Condition | None) -> TypeGuard[Condition]:
    return c is not None and c.status == "True"


def deployment(obj: Obj) -> Health:
    """kstatus deploymentConditions; a Ready check comes before the Available
    one so a rollout waiting on its Pods reads `0 of 1 replicas ready`."""
    progressing = condition(obj, "Progressing")
    if progressing is not None and progressing.reason == "ProgressDeadlineExceeded":
        return failed(progressing.message or "progress deadline exceeded")
    want = count(obj, "spec", "replicas", default=1)  # the controller's default
    replicas = count(obj, "status", "replicas")
    updated = count(obj, "status", "updatedReplicas")
    ready = count(obj, "status", "readyReplicas")
    available = count(obj, "status", "availableReplicas")
    if replicas < want:
        return in_progress(f"{replicas} of {want} replicas created")
    if updated < want:
        return in_progress(f"{updated} of {want} replicas updated")
    if replicas > want:
        return in_progress(f"{replicas - want} old replicas pending termination")
    if ready < want:
        return in_progress(f"{ready} of {want} replicas ready")
    if available < updated:
        return in_progress(f"{available} of {updated} updated replicas available")
    # Without a deadline the controller never writes Progressing (kstatus).
    deadline = integer(obj, "spec", "progressDeadlineSeconds", default=_NO_DEADLINE)
    if deadline != _NO_DEADLINE and not (
        _true(progressing) and progressing.reason == "NewReplicaSetAvailable"
    ):
        return in_progress(progressing.message if progressing else "rollout not yet complete")
    available_c = condition(obj, "Available")
    if not _true(available_c):
        return in_progress(available_c.message if available_c else "not yet available")
    return current(f"{ready} of {want} replicas ready")


def statefulset(obj: Obj) -> Health:
    """kstatus stsConditions. StatefulSets write no conditions worth reading."""
    strategy = text(obj, "spec", "updateStrategy", "type")
    if strategy == "OnDelete":
        return current("updateStrategy OnDelete: Pods update when deleted")
    want = count(obj, "spec", "replicas", default=1)
    replicas = count(obj, "status", "replicas")
    ready = count(obj, "status", "readyReplicas")
    at_current = count(obj, "status", "currentReplicas")
    updated = count(obj, "status", "updatedReplicas")
    if replicas < want:
        return in_progress(f"{replicas} of {want} replicas created")
    if ready < want:
        return in_progress(f"{ready} of {want} replicas ready")
    if replicas > want:
        return in_progress(f"{replicas - want} old replicas pending termination")
    partition = integer(obj, "spec", "updateStrategy", "rollingUpdate", "partition")
    if partition is not None:
        # Only the ordinals at or above the partition are updated.
        target = max(want - partition, 0)
        if updated < target:
            return in_progress(f"{updated} of {target} replicas updated")
        if partition > 0:
            return current(
                f"{ready} of {want} replicas ready, {updated} updated (partition {partition})"
            )
        return current(f"{ready} of {want} replicas ready")
    if at_current < want:
        return in_progress(f"{at_current} of {want} replicas at the current revision")
    update_rev = text(obj, "status", "updateRevision")
    current_rev = text(obj, "status", "currentRevision")
    if update_rev != current_rev:
        return in_progress(f"rolling out revision {update_rev} (current {current_rev})")
    return current(f"{ready} of {want} replicas ready")


def daemonset(obj: Obj) -> Health:
    """kstatus daemonsetConditions: unlike the generic rule, a DaemonSet whose
    controller has not yet written observedGeneration is InProgress."""
    if integer(obj, "metadata", "generation") is None or (
        integer(obj, "status", "observedGeneration") is None
    ):
        return in_progress("not yet observed by the DaemonSet controller")
    desired = integer(obj, "status", "desiredNumberScheduled")
    if desired is None:
        return in_progress("desired number of Pods not yet known")
    scheduled = count(obj, "status", "currentNumberScheduled")
    updated = count(obj, "status", "updatedNumberScheduled")
    ready = count(obj, "status", "numberReady")
    available = count(obj, "status", "numberAvailable")
    if scheduled < desired:
        return in_progress(f"{scheduled} of {desired} Pods scheduled")
    if updated < desired:
        return in_progress(f"{updated} of {desired} Pods updated")
    if ready < desired:
        return in_progress(f"{ready} of {desired} Pods ready")
    if available < desired:
        return in_progress(f"{available} of {desired} Pods available")
    return current(f"{ready} of {desired} Pods ready")


def replicaset(obj: Obj) -> Health:
    """kstatus replicasetConditions. ReplicaFailure (a quota, an admission
    webhook) stays InProgress, as kstatus has it: the controller keeps trying."""
    failure = condition(obj, "ReplicaFailure")
    if _true(failure):
        return in_progress(failure.words() or "ReplicaFailure")
    want = count(obj, "spec", "replicas", default=1)
    replicas = count(obj, "status", "replicas")
    labelled = count(obj, "status", "fullyLabeledReplicas")
    ready = count(obj, "status", "readyReplicas")
    available = count(obj, "status", "availableReplicas")
    if labelled < want:
        return in_progress(f"{labelled} of {want} replicas labelled")
    if ready < want:
        return in_progress(f"{ready} of {want} replicas ready")
    if available < want:
        return in_progress(f"{available} of {want} replicas available")
    if replicas > want:
        return in_progress(f"{replicas - want} old replicas pending termination")
    return current(f"{ready} of {want} replicas ready")


def job(obj: Obj) -> Health:
    """Flux's Job rule (fluxcd/pkg runtime/statusreaders/job.go), which differs
    from kstatus in one way: a Job that has started is InProgress until it is
    Complete. FailureTarget, which the Job controller sets before Failed while
    its Pods terminate (Kubernetes ≥ 1.31), fails it as early."""
    if field(obj, "spec", "suspend") is True:
        return current("Job is suspended")
    parallelism = count(obj, "spec", "parallelism", default=1)
    completions = count(obj, "spec", "completions", default=parallelism)
    succeeded = count(obj, "status", "succeeded")
    active = count(obj, "status", "active")
    failures = count(obj, "status", "failed")
    for c in conditions(obj):
        if c.status != "True":
            continue
        if c.type == "Complete":
            return current(f"Job completed: {succeeded} of {completions} succeeded")
        if c.type in ("Failed", "FailureTarget"):
            return failed(c.message or c.reason or "Job failed")
    if not text(obj, "status", "startTime"):
        return in_progress("Job not started")
    return in_progress(
        f"Job running: {active} active, {succeeded} of {completions} succeeded, {failures} failed"
    )


def pvc(obj: Obj) -> Health:
    """kstatus pvcConditions."""
    phase = text(obj, "status", "phase")
    if phase == "Bound":
        return current("PVC is Bound")
    return in_progress(f"PVC is {phase}, not Bound" if phase else "PVC not yet Bound")


# Waiting reasons a kubelet gives a container that will not start without a
# change: pkg/kubelet/images/types.go, pkg/kubelet/container/sync_result.go and
# kuberuntime. ContainerCreating and PodInitializing are the normal ones.
FAILED_WAITING_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "ErrImageNeverPull",
        "ImageInspectError",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "PreCreateHookError",
        "PreStartHookError",
        "PostStartHookError",
        "RunContainerError",
    }
)


def _container_statuses(pod: Obj) -> list[Mapping[str, Any]]:
    """Init containers first, as the kubelet starts them."""
    found: list[Mapping[str, Any]] = []
    for key in ("initContainerStatuses", "containerStatuses"):
        raw = field(pod, "status", key)
        if isinstance(raw, list):
            found.extend(s for s in raw if isinstance(s, Mapping))
    return found


def _waiting(status: Mapping[str, Any]) -> tuple[str, str]:
    """(reason, message) of a container that is waiting, or ("", "")."""
    return text(status, "state", "waiting", "reason"), text(status, "state", "waiting", "message")


def _terminated_words(pod: Obj) -> str:
    """Why a Pod in phase Failed failed: the Pod's own reason (`Evicted`, with
    the kubelet's message), else the first container that exited badly."""
    reason, message = text(pod, "status", "reason"), text(pod, "status", "message")
    if reason or message:
        return ": ".join(part for part in (reason, message) if part)
    for status in _container_statuses(pod):
        exit_code = integer(status, "state", "terminated", "exitCode")
        if exit_code:
            why = text(status, "state", "terminated", "reason") or "terminated"
            return f"container {text(status, 'name')} {why}: exit code {exit_code}"
    return "Pod failed"


def pod(obj: Obj) -> Health:
    """kstatus podConditions, stricter in two ways (as Argo CD is): a Pod in phase
    Failed is Failed (kstatus calls it Current: it has completed), and a
    container waiting for one of FAILED_WAITING_REASONS fails the Pod in any
    phase (kstatus looks only for CrashLoopBackOff, and only while Running, so
    an image that cannot be pulled would wait out the whole timeout)."""
    phase = text(obj, "status", "phase")
    if phase == "Succeeded":
        return current("Pod succeeded")
    if phase == "Failed":
        return failed(_terminated_words(obj))
    if phase == "Running" and _true(condition(obj, "Ready")):
        return current("Pod is ready")
    statuses = _container_statuses(obj)
    for status in statuses:
        reason, message = _waiting(status)
        if reason in FAILED_WAITING_REASONS:
            words = f"container {text(status, 'name')} {reason}"
            return failed(f"{words}: {message}" if message else words)
    for status in statuses:
        reason, message = _waiting(status)
        if reason:
            words = f"container {text(status, 'name')} {reason}"
            return in_progress(f"{words}: {message}" if message else words)
    scheduled = condition(obj, "PodScheduled")
    if scheduled is not None and scheduled.status == "False":
        # kstatus fails an Unschedulable Pod after 15 s by the clock; a pure
        # function has no clock, and a new Node or a freed quota may yet come.
        return in_progress(scheduled.words() or "not yet scheduled")
    if phase == "Running":
        ready = condition(obj, "Ready")
        return in_progress(ready.words() if ready and ready.words() else "running, not ready")
    return in_progress(f"Pod is {phase}" if phase else "Pod not yet observed by a kubelet")


def service(obj: Obj) -> Health:
    """Current, except a LoadBalancer without an ingress address yet."""
    type_ = text(obj, "spec", "type") or "ClusterIP"
    if type_ != "LoadBalancer":
        return current(f"{type_} Service")
    ingress = field(obj, "status", "loadBalancer", "ingress")
    for entry in ingress if isinstance(ingress, list) else []:
        if isinstance(entry, Mapping):
            address = text(entry, "ip") or text(entry, "hostname")
            if address:
                return current(f"load balancer at {address}")
    return in_progress("waiting for the load balancer's ingress address")


def crd(obj: Obj) -> Health:
    """kstatus CRDConditions: names in conflict, or not Established for any
    reason but Installing, is Failed."""
    names = condition(obj, "NamesAccepted")
    if names is not None and names.status == "False":
        return failed(names.words() or "names not accepted")
    established = condition(obj, "Established")
    if established is not None and established.status == "True":
        return current("CRD is established")
    if (
        established is not None
        and established.status == "False"
        and established.reason != "Installing"
    ):
        return failed(established.words() or "not established")
    words = established.words() if established is not None else ""
    return in_progress(words or "CRD not yet established")


# One row per kind with a rule of its own; every other kind (ConfigMap, Secret,
# custom resources…) goes by the generic rule and its Ready condition.
RULES: Mapping[tuple[str, str], Rule] = {
    ("apps", "Deployment"): deployment,
    ("apps", "StatefulSet"): statefulset,
    ("apps", "DaemonSet"): daemonset,
    ("apps", "ReplicaSet"): replicaset,
    ("batch", "Job"): job,
    ("", "Pod"): pod,
    ("", "PersistentVolumeClaim"): pvc,
    ("", "Service"): service,
    ("apiextensions.k8s.io", "CustomResourceDefinition"): crd,
}
