"""The health stage: are the objects a revision applied, and those named in
spec.healthChecks, healthy?

One check reads each object not yet known to be healthy and judges it with
the health library (kstatus's rules as a table, the sync's CEL expressions
for custom kinds). A workload that is not healthy yet also has its Pods
listed, so that a crash-looping Pod fails the wait at once (instead of at the
timeout) and a timeout names the Pod's own reason. Flux polls every object
every 2 s until all are Current; this stage is called by the pipeline at the
same cadence but re-reads only what is not healthy yet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import health
from .api import HealthCheckRef, InventoryEntry
from .deadline import Deadline
from .kube import Discovery, Kube, KubeError, ObjRef

log = logging.getLogger("gitferry.healthcheck")

# Pods listed per workload: enough to find a failing one, bounded for a 1000-replica set.
MAX_PODS = 50
# Objects named in a message; the rest are counted.
MAX_LISTED = 10
# What the Deployment controller writes to tell a Deployment's ReplicaSets apart.
REVISION = "deployment.kubernetes.io/revision"
POD_TEMPLATE_HASH = "pod-template-hash"


@dataclass(frozen=True)
class Report:
    """The outcome of one check: which objects are healthy, still in progress
    (with why), or failed (with why)."""

    current: frozenset[ObjRef]
    pending: tuple[tuple[ObjRef, health.Health], ...]
    failed: tuple[tuple[ObjRef, health.Health], ...]

    @property
    def done(self) -> bool:
        """Every object checked is healthy."""
        return not self.pending and not self.failed


def targets(
    entries: Iterable[InventoryEntry],
    checks: Sequence[HealthCheckRef],
    discovery: Discovery,
    default_namespace: str,
) -> tuple[ObjRef, ...]:
    """The objects to wait for: `entries` (what the revision applied) and
    spec.healthChecks, whose namespace defaults to the sync's for a namespaced
    kind and is dropped for a cluster-scoped one. Sorted, without duplicates."""
    refs = {ObjRef.from_id(e.id) for e in entries}
    for c in checks:
        namespaced = discovery.is_namespaced(c.group, c.kind)
        namespace = (c.namespace or default_namespace) if namespaced is not False else ""
        refs.add(ObjRef(c.group, c.kind, namespace, c.name))
    return tuple(sorted(refs))


def check(
    client: Kube,
    discovery: Discovery,
    refs: Iterable[ObjRef],
    exprs: health.Exprs | None,
    deadline: Deadline,
) -> Report:
    """Judge each object in `refs` as it is now. A kind the API server does not
    serve, or an object not found, is in progress (it may yet appear: a CRD
    being established, a Job created by a CronJob). Raises KubeError for an
    API error other than NotFound, DeadlineExceeded when time runs out."""
    current: set[ObjRef] = set()
    pending: list[tuple[ObjRef, health.Health]] = []
    failed: list[tuple[ObjRef, health.Health]] = []
    refreshed = [False]  # discovery is refreshed at most once per look
    for ref in refs:
        verdict = _judge(client, discovery, ref, exprs, deadline, refreshed)
        if verdict.status == health.Status.CURRENT:
            current.add(ref)
        elif verdict.status == health.Status.FAILED:
            failed.append((ref, verdict))
        else:
            pending.append((ref, verdict))
    return Report(frozenset(current), tuple(pending), tuple(failed))


def _judge(
    client: Kube,
    discovery: Discovery,
    ref: ObjRef,
    exprs: health.Exprs | None,
    deadline: Deadline,
    refreshed: list[bool],
) -> health.Health:
    res = discovery.for_group_kind(ref.group, ref.kind)
    if res is None and not refreshed[0]:
        refreshed[0] = True
        discovery.refresh(deadline)  # a CRD established since the last look
        res = discovery.for_group_kind(ref.group, ref.kind)
    if res is None:
        return health.Health(health.Status.NOT_FOUND, "the API server does not serve this kind")
    try:
        obj = client.request("GET", res.path(ref.namespace or None, ref.name), deadline=deadline)
    except KubeError as e:
        if e.not_found:
            return health.Health(health.Status.NOT_FOUND, "not found")
        raise
    verdict = health.assess(obj, exprs)
    if verdict.status == health.Status.CURRENT:
        return verdict
    selector = health.pod_selector(obj)
    if selector is None or not ref.namespace:
        return verdict
    try:
        if (ref.group, ref.kind) == ("apps", "Deployment"):
            selector = _newest_pods(client, ref, obj, selector, deadline)
            if selector is None:
                return verdict
        pods = client.request(
            "GET",
            f"/api/v1/namespaces/{ref.namespace}/pods",
            deadline=deadline,
            query={"labelSelector": selector, "limit": str(MAX_PODS)},
        )
    except KubeError as e:  # an identity that may not list Pods still gets the object's verdict
        log.info("action=health-pods object=%s error=%s", ref, e.message)
        return verdict
    return health.with_pods(verdict, pods.get("items") or [])


def _newest_pods(
    client: Kube, ref: ObjRef, obj: dict[str, Any], selector: str, deadline: Deadline
) -> str | None:
    """The selector of a Deployment's current Pods: those of its newest
    ReplicaSet (the one whose `deployment.kubernetes.io/revision` is the
    Deployment's), so that a crash-looping Pod of the revision being replaced
    never fails the rollout of its fix. None while the controller has not
    observed the Deployment's generation yet (its ReplicaSet may not exist)."""
    meta = obj.get("metadata") or {}
    observed = (obj.get("status") or {}).get("observedGeneration")
    if observed != meta.get("generation"):
        return None
    revision = (meta.get("annotations") or {}).get(REVISION)
    if not revision:
        return None
    sets = client.request(
        "GET",
        f"/apis/apps/v1/namespaces/{ref.namespace}/replicasets",
        deadline=deadline,
        query={"labelSelector": selector},
    )
    for rs in sets.get("items") or []:
        rs_meta = rs.get("metadata") or {}
        owned = any(o.get("uid") == meta.get("uid") for o in rs_meta.get("ownerReferences") or [])
        if owned and (rs_meta.get("annotations") or {}).get(REVISION) == revision:
            template_hash = (rs_meta.get("labels") or {}).get(POD_TEMPLATE_HASH)
            return f"{selector},{POD_TEMPLATE_HASH}={template_hash}" if template_hash else None
    return None


def describe(items: Sequence[tuple[ObjRef, health.Health]]) -> str:
    """`Deployment/apps/web: 1 of 3 replicas ready; Job/apps/migrate: …`, the
    first MAX_LISTED, then how many more."""
    lines = [f"{ref}: {h.message}" if h.message else str(ref) for ref, h in items[:MAX_LISTED]]
    if len(items) > MAX_LISTED:
        lines.append(f"and {len(items) - MAX_LISTED} more")
    return "; ".join(lines)
