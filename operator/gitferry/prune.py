"""The prune stage: delete what this sync created and git no longer holds — and
nothing else, ever.

Every candidate is read live first and skipped when its labels no longer name
this sync, when another controller owns it, when it is adopted or marked
`gitferry.dev/prune: disabled`, or (a Namespace or CRD) when it still holds
objects gitferry did not create. Deletes carry the uid and resourceVersion that
were read, so an object recreated in between is never hit. A failed delete
stays in the inventory and is retried on the next reconcile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .api import InventoryEntry, SyncKey
from .applyset import LABEL_PART_OF
from .constants import (
    ANNOTATION_ADOPTED,
    ANNOTATION_CLAIM,
    ANNOTATION_PRUNE,
    DISABLED,
    LABEL_SYNC_NAME,
    LABEL_SYNC_NAMESPACE,
)
from .deadline import Deadline
from .errors import PruneFailed
from .kube import MERGE_PATCH, Discovery, Kube, KubeError, ObjRef, Resource
from .ownership import claim_of, controller_owner, is_adopted, owner_of

log = logging.getLogger("gitferry.prune")

# Attempts at one prune when the object changes between the read and the delete.
_CONFLICT_RETRIES = 3
# Objects the cluster itself puts in every namespace: they never keep one alive.
_NAMESPACE_DEFAULTS = {("", "ServiceAccount", "default"), ("", "ConfigMap", "kube-root-ca.crt")}
# Kinds that are records or controller output, not things someone created there.
_NOT_CONTENT = {("", "Event"), ("events.k8s.io", "Event"), ("", "Endpoints")}


@dataclass
class PruneResult:
    deleted: list[ObjRef] = field(default_factory=list)
    # Left in place and released from this sync, with the reason why.
    kept: list[tuple[ObjRef, str]] = field(default_factory=list)
    handed_over: list[tuple[ObjRef, SyncKey]] = field(default_factory=list)
    # Still ours: stay in the inventory, retried next time.
    failed: list[tuple[InventoryEntry, str]] = field(default_factory=list)
    # A Namespace or CRD that left git while git (this sync's or another's) still
    # declares objects inside it: not deleted, stays in the inventory, retried.
    deferred: list[tuple[InventoryEntry, str]] = field(default_factory=list)

    def remaining(self) -> list[InventoryEntry]:
        return [e for e, _ in self.failed] + [e for e, _ in self.deferred]


def release_patch(
    rv: str | None, keep_claim: bool = True, keep_adopted: bool = False
) -> dict[str, Any]:
    """A targeted merge patch that removes gitferry's ownership marks only (an
    empty server-side apply would strip every field gitferry manages). A hand-over
    keeps the adopted mark: the object existed before gitferry, whoever owns it."""
    meta: dict[str, Any] = {
        "labels": {LABEL_SYNC_NAME: None, LABEL_SYNC_NAMESPACE: None, LABEL_PART_OF: None},
        "annotations": {} if keep_adopted else {ANNOTATION_ADOPTED: None},
    }
    if not keep_claim:
        meta["annotations"][ANNOTATION_CLAIM] = None
    if rv:
        meta["resourceVersion"] = rv  # precondition: fails if it changed since read
    return {"metadata": meta}


class Pruner:
    def __init__(
        self,
        kube: Kube,
        discovery: Discovery,
        me: SyncKey,
        can_hand_over: Callable[[SyncKey, ObjRef], bool] = lambda _s, _r: False,
        declared: frozenset[str] = frozenset(),
    ) -> None:
        """`declared`: inventory ids this sync's git holds now (they keep their
        Namespace or CRD); `can_hand_over(sync, ref)`: may `ref` go to `sync`."""
        self.kube = kube
        self.discovery = discovery
        self.me = me
        self.can_hand_over = can_hand_over
        self.declared = declared

    def prune(self, stale: Sequence[InventoryEntry], deadline: Deadline) -> PruneResult:
        """Delete `stale` (already in prune order) where every rule allows it."""
        result = PruneResult()
        for entry in stale:
            ref = ObjRef.from_id(entry.id)
            try:
                self._one(entry, ref, result, deadline)
            except KubeError as e:
                result.failed.append((entry, f"{ref}: {e.message}"))
        return result

    def release(self, entries: Sequence[InventoryEntry], deadline: Deadline) -> PruneResult:
        """Leave the objects in place and remove this sync's ownership marks (prune:
        false): gitferry no longer manages them."""
        result = PruneResult()
        for entry in entries:
            ref = ObjRef.from_id(entry.id)
            res = self._resource(ref, entry.v, deadline)
            if res is None:
                continue  # its kind is gone: so is the object
            path = res.path(ref.namespace, ref.name)
            try:
                live = self.kube.request("GET", path, deadline=deadline)
                if owner_of(live) == self.me:
                    self._patch(path, release_patch(None, keep_claim=False), deadline)
                    result.kept.append((ref, "spec.prune is false: released, not deleted"))
            except KubeError as e:
                if not e.not_found:
                    result.failed.append((entry, f"{ref}: {e.message}"))
        return result

    def _one(
        self, entry: InventoryEntry, ref: ObjRef, result: PruneResult, deadline: Deadline
    ) -> None:
        res = self._resource(ref, entry.v, deadline)
        if res is None:
            result.deleted.append(ref)  # its kind is gone (CRD deleted): so is the object
            return
        path = res.path(ref.namespace, ref.name)
        # A controller that writes status between the read and the delete moves the
        # resourceVersion: read again and re-check every guard, a few times, rather
        # than report PruneFailed. The uid precondition alone would not catch labels
        # changed by hand in between.
        for attempt in range(_CONFLICT_RETRIES):
            try:
                self._guarded_delete(entry, ref, path, result, deadline)
                return
            except KubeError as e:
                if e.status != 409 or attempt == _CONFLICT_RETRIES - 1:
                    raise

    def _guarded_delete(
        self,
        entry: InventoryEntry,
        ref: ObjRef,
        path: str,
        result: PruneResult,
        deadline: Deadline,
    ) -> None:
        """Read the object, check every rule, then delete it with its uid and
        resourceVersion as preconditions (or release, keep, hand over). Raises
        KubeError 409 when it changed since the read."""
        try:
            live = self.kube.request("GET", path, deadline=deadline)
        except KubeError as e:
            if e.not_found:
                return  # already gone
            raise
        meta = live.get("metadata") or {}
        rv = meta.get("resourceVersion")
        if owner_of(live) != self.me:
            result.kept.append((ref, "its labels name another owner"))
            return
        if owner := controller_owner(live):
            result.kept.append((ref, f"it is owned by {owner}"))
            return
        claimant = claim_of(live)
        if claimant and claimant != self.me and self.can_hand_over(claimant, ref):
            self._patch(path, release_patch(rv, keep_adopted=True), deadline)
            result.handed_over.append((ref, claimant))
            return
        if (meta.get("annotations") or {}).get(ANNOTATION_PRUNE) == DISABLED:
            self._patch(path, release_patch(rv), deadline)
            result.kept.append((ref, "it is annotated gitferry.dev/prune: disabled"))
            return
        if is_adopted(live):
            self._patch(path, release_patch(rv), deadline)
            result.kept.append((ref, "it existed before gitferry adopted it"))
            return
        declared, foreign = self._contents(ref, deadline)
        if declared:
            result.deferred.append(
                (entry, f"git still declares objects inside it: {', '.join(declared)}")
            )
            return
        if foreign:
            self._patch(path, release_patch(rv), deadline)
            result.kept.append(
                (ref, f"it still holds objects gitferry did not create: {', '.join(foreign)}")
            )
            return
        body = {
            "propagationPolicy": "Background",
            "preconditions": {"uid": meta.get("uid"), "resourceVersion": rv},
        }
        try:
            self.kube.request("DELETE", path, deadline=deadline, body=body)
        except KubeError as e:
            if not e.not_found:
                raise
        result.deleted.append(ref)

    def _resource(self, ref: ObjRef, version: str, deadline: Deadline) -> Resource | None:
        """The kind's resource; discovery is refreshed once before a kind counts as gone."""
        res = self.discovery.for_group_kind(ref.group, ref.kind, version)
        if res is None:
            self.discovery.refresh(deadline)
            res = self.discovery.for_group_kind(ref.group, ref.kind, version)
        return res

    def _patch(self, path: str, patch: dict[str, Any], deadline: Deadline) -> None:
        self.kube.request("PATCH", path, deadline=deadline, body=patch, content_type=MERGE_PATCH)

    # --- what keeps a Namespace or a CRD ------------------------------------
    def _contents(
        self, ref: ObjRef, deadline: Deadline, limit: int = 5
    ) -> tuple[list[str], list[str]]:
        """What keeps a Namespace or a CRD, up to `limit` of each: objects inside it
        that git still declares (this sync's new revision, or another sync's), and
        objects gitferry did not create. When they cannot be listed, the container
        is kept (deletes less)."""
        if ref.group == "" and ref.kind == "Namespace":
            resources = [
                r
                for r in self.discovery.listable(namespaced=True)
                if (r.group, r.kind) not in _NOT_CONTENT
            ]
            return self._scan(resources, ref.name, deadline, limit)
        if ref.group == "apiextensions.k8s.io" and ref.kind == "CustomResourceDefinition":
            crd = self.kube.request(
                "GET",
                f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{ref.name}",
                deadline=deadline,
            )
            spec = crd.get("spec") or {}
            kind = (spec.get("names") or {}).get("kind", "")
            res = self.discovery.for_group_kind(spec.get("group", ""), kind)
            if res is None:  # cannot list its objects: keep the CRD (deletes less)
                return [], [f"{kind}.{spec.get('group', '')} objects that could not be listed"]
            return self._scan([res], None, deadline, limit)
        return [], []

    def _scan(
        self, resources: list[Resource], namespace: str | None, deadline: Deadline, limit: int
    ) -> tuple[list[str], list[str]]:
        declared: list[str] = []
        found: list[str] = []
        for r in resources:
            try:
                items = (
                    self.kube.request("GET", r.path(namespace), deadline=deadline).get("items")
                    or []
                )
            except KubeError as e:
                if e.not_found:
                    continue
                return declared, [f"{r.kind} objects that could not be listed ({e.message})"]
            for obj in items:
                meta = obj.get("metadata") or {}
                ns = meta.get("namespace") or ""
                o = ObjRef(r.group, r.kind, ns, meta.get("name", ""))
                if (r.group, r.kind, o.name) in _NAMESPACE_DEFAULTS:
                    continue
                if meta.get("ownerReferences") or meta.get("deletionTimestamp"):
                    continue  # dependents go with their owners; deleting ones are leaving
                owner = owner_of(obj)
                if owner == self.me and o.id in self.declared:
                    declared.append(o.describe())  # this sync's git still holds it
                elif owner is not None and owner != self.me:
                    declared.append(f"{o.describe()} (sync {owner})")
                elif owner == self.me and not is_adopted(obj):
                    continue  # ours, being pruned; an adopted one still keeps it
                else:
                    found.append(o.describe())
                if len(found) + len(declared) >= limit:
                    return declared, found
        return declared, found

    # --- waiting -------------------------------------------------------------
    def wait_gone(self, refs: Sequence[ObjRef], deadline: Deadline) -> list[ObjRef]:
        """Wait (within the deadline) until `refs` are gone; returns those still there."""
        pending = list(refs)
        while pending:
            still = []
            for ref in pending:
                res = self.discovery.for_group_kind(ref.group, ref.kind)
                if res is None:
                    continue
                try:
                    self.kube.request("GET", res.path(ref.namespace, ref.name), deadline=deadline)
                    still.append(ref)
                except KubeError as e:
                    if not e.not_found:
                        still.append(ref)
            pending = still
            if not pending:
                break
            if deadline.at - time.monotonic() < 0.5:
                break
            time.sleep(0.25)
        return pending


def find_owned(
    kube: Kube,
    discovery: Discovery,
    me: SyncKey,
    deadline: Deadline,
    group_kinds: frozenset[tuple[str, str]],
    namespaces: frozenset[str] = frozenset(),
) -> list[InventoryEntry]:
    """Rebuild an inventory from the ownership labels (a status lost to a backup
    restore), listing only the kinds the ApplySet parent says the set holds
    (`applyset.kubernetes.io/contains-group-kinds`, KEP-3659): a sync that never
    applied anything lists nothing. Namespaced kinds are listed in the sync's own
    namespace and the ApplySet's additional-namespaces, cluster-scoped ones
    cluster-wide — as kubectl's ApplySet pruning lists, and as `kube` (the
    identity the sync applies as) may. Objects a controller owns copied the
    labels from a template: skipped.

    Raises PruneFailed when a kind cannot be listed (403, 5xx, a timeout): a
    partial inventory would leave the missed objects unpruned forever. A kind
    the API no longer serves holds nothing."""
    if not group_kinds:
        return []
    if any(discovery.for_group_kind(g, k) is None for g, k in group_kinds):
        discovery.refresh(deadline)
    selector = f"{LABEL_SYNC_NAME}={me.name},{LABEL_SYNC_NAMESPACE}={me.namespace}"
    found: list[InventoryEntry] = []
    for group, kind in sorted(group_kinds):
        r = discovery.for_group_kind(group, kind)
        if r is None or (r.group, r.kind) in _NOT_CONTENT:
            continue  # its kind is gone: so are its objects
        scopes = sorted({me.namespace, *namespaces}) if r.namespaced else [None]
        for namespace in scopes:
            found += _owned_in(kube, r, namespace, selector, deadline)
    return sorted(found, key=lambda e: e.id)


def _owned_in(
    kube: Kube, r: Resource, namespace: str | None, selector: str, deadline: Deadline
) -> list[InventoryEntry]:
    try:
        items = kube.request(
            "GET", r.path(namespace), deadline=deadline, query={"labelSelector": selector}
        )
    except KubeError as e:
        if e.not_found:
            return []
        raise PruneFailed(
            f"the inventory is missing from status and could not be rebuilt from labels: "
            f"listing {r.kind}{'.' + r.group if r.group else ''} failed: {e.message}"
        ) from None
    found: list[InventoryEntry] = []
    for obj in items.get("items") or []:
        if controller_owner(obj):
            continue
        meta = obj.get("metadata") or {}
        ref = ObjRef(r.group, r.kind, meta.get("namespace") or "", meta.get("name", ""))
        found.append(InventoryEntry(ref.id, r.version))
    return found
