"""Deleting a sync: prune its whole inventory (every prune guard still holds),
or with prune false release its objects; on an uninstall, orphan them."""

from __future__ import annotations

import logging
from typing import Any

from . import applyset, inventory
from .api import SyncKey, SyncStatus, parse_sync, sync_path
from .context import Context
from .deadline import Deadline
from .errors import SyncError
from .events import WARNING
from .kube import KubeError, ObjRef
from .prune import Pruner, find_owned
from .uninstall import CRD_PATH

log = logging.getLogger("gitferry.finalizer")


def finalize(ctx: Context, key: SyncKey, body: dict[str, Any]) -> None:
    """A sync is being deleted: prune its whole inventory (same guards), or with
    prune false release its objects; on an uninstall, orphan them. Waits for a
    reconcile of the sync that is still running, then reads the sync afresh: that
    reconcile may have grown the inventory."""
    ctx.check_running("the finalizer")  # Kopf retries it after the restart
    with ctx.sync_lock(key):
        ctx.check_running("the finalizer")
        try:
            body = ctx.kube.request("GET", sync_path(key))
        except KubeError as e:
            if not e.not_found:
                raise  # Kopf retries the handler
        _finalize(ctx, key, body)
    ctx.forget(key)


def _finalize(ctx: Context, key: SyncKey, body: dict[str, Any]) -> None:
    raw = body.get("spec") or {}
    try:
        sync = parse_sync(body)
        prune, suspended = sync.spec.prune, sync.spec.suspend
        timeout, client = sync.spec.timeout, ctx.client_for(sync)
    except SyncError:  # an invalid spec: the defaults, as the identity it names
        prune = raw.get("prune", True) is not False
        suspended = raw.get("suspend") is True
        sa = raw.get("serviceAccountName")
        timeout = 120.0
        client = ctx.client_as(key.namespace, sa if isinstance(sa, str) and sa else None)
    deadline = Deadline.after(timeout)
    meta = body.get("metadata") or {}
    uid = str(meta.get("uid", ""))
    why = _uninstalling(ctx, key, deadline)
    if why:
        log.info("sync=%s action=delete orphaned=true why=%s", key, why)
        return
    entries = SyncStatus.from_dict(body.get("status")).inventory
    if entries is None:
        notes = meta.get("annotations") or {}
        kinds = applyset.parse_group_kinds(notes.get(applyset.ANNOTATION_GROUP_KINDS))
        namespaces = applyset.parse_namespaces(notes.get(applyset.ANNOTATION_NAMESPACES))
        entries = tuple(find_owned(client, ctx.discovery, key, deadline, kinds, namespaces))
    pruner = Pruner(client, ctx.discovery, key, ctx.can_hand_over)
    order = inventory.stale(entries, ())
    # Suspend means no changes at all: deleting a suspended sync orphans its
    # objects (only gitferry's labels go), as Flux does.
    delete = prune and not suspended
    ctx.check_running("prune")
    result = pruner.prune(order, deadline) if delete else pruner.release(order, deadline)
    if result.deferred:  # the sync is going: what another sync's git fills is released
        released = pruner.release([e for e, _ in result.deferred], deadline)
        result.failed += released.failed
        result.kept += [
            (ObjRef.from_id(e.id), why)
            for e, why in result.deferred
            if e not in released.remaining()
        ]
    left = pruner.wait_gone(result.deleted, deadline) if delete else []
    ctx.metrics.objects({"deleted": len(result.deleted)})
    if suspended:
        log.info("sync=%s action=delete orphaned=true why=suspended", key)
    for ref, reason in result.kept:
        if suspended:
            reason = "the sync is suspended: its objects are orphaned, not deleted"
        ctx.events.post(
            key, uid, WARNING, "PruneSkipped", f"{ref} was not deleted with the sync: {reason}"
        )
    problems = [msg for _, msg in result.failed] + [f"{r} still exists" for r in left]
    if problems:
        ctx.events.post(key, uid, WARNING, "PruneFailed",
                        "the sync is released, but: " + "; ".join(problems))  # fmt: skip
    log.info("sync=%s action=delete prune=%s deleted=%d kept=%d failed=%d", key, delete,
             len(result.deleted), len(result.kept), len(problems))  # fmt: skip


def _uninstalling(ctx: Context, key: SyncKey, deadline: Deadline) -> str | None:
    """Why the sync's objects must be orphaned: its Namespace or our CRD is going."""
    for path, what in (
        (f"/api/v1/namespaces/{key.namespace}", f"its Namespace {key.namespace} is being deleted"),
        (CRD_PATH, "the GitRepositorySync CRD is being deleted (an uninstall)"),
    ):  # fmt: skip
        try:
            obj = ctx.kube.request("GET", path, deadline=deadline)
        except KubeError as e:
            if e.not_found:
                return what
            raise  # unknown: never prune on a guess; Kopf retries the handler
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            return what
    return None
