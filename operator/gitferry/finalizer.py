"""Deleting a sync: prune its whole inventory (every prune guard still holds),
or with prune false release its objects; on an uninstall, orphan them."""

from __future__ import annotations

import logging
from typing import Any

from . import inventory
from .api import SyncKey, SyncStatus, parse_sync, sync_path
from .context import Context
from .deadline import Deadline
from .errors import SyncError
from .events import WARNING
from .kube import KubeError
from .prune import Pruner, find_owned
from .uninstall import CRD_PATH

log = logging.getLogger("gitferry.finalizer")


def finalize(ctx: Context, key: SyncKey, body: dict[str, Any]) -> None:
    """A sync is being deleted: prune its whole inventory (same guards), or with
    prune false release its objects; on an uninstall, orphan them. Waits for a
    reconcile of the sync that is still running, then reads the sync afresh: that
    reconcile may have grown the inventory."""
    with ctx.sync_lock(key):
        try:
            body = ctx.kube.request("GET", sync_path(key))
        except KubeError as e:
            if not e.not_found:
                raise  # Kopf retries the handler
        _finalize(ctx, key, body)
    ctx.forget(key)


def _finalize(ctx: Context, key: SyncKey, body: dict[str, Any]) -> None:
    try:
        sync = parse_sync(body)
        prune, timeout, client = sync.spec.prune, sync.spec.timeout, ctx.client_for(sync)
    except SyncError:  # an invalid spec: prune with the defaults, as the operator
        prune, timeout, client = (
            (body.get("spec") or {}).get("prune", True) is not False,
            120.0,
            ctx.kube,
        )
    deadline = Deadline.after(timeout)
    uid = str((body.get("metadata") or {}).get("uid", ""))
    why = _uninstalling(ctx, key, deadline)
    if why:
        log.info("sync=%s action=delete orphaned=true why=%s", key, why)
        return
    entries = SyncStatus.from_dict(body.get("status")).inventory
    if entries is None:
        entries = tuple(find_owned(ctx.kube, ctx.discovery, key, deadline))
    pruner = Pruner(client, ctx.discovery, key, ctx.can_hand_over)
    order = inventory.stale(entries, ())
    result = pruner.prune(order, deadline) if prune else pruner.release(order, deadline)
    left = pruner.wait_gone(result.deleted, deadline) if prune else []
    for ref, reason in result.kept:
        ctx.events.post(
            key, uid, WARNING, "PruneSkipped", f"{ref} was not deleted with the sync: {reason}"
        )
    problems = [msg for _, msg in result.failed] + [f"{r} still exists" for r in left]
    if problems:
        ctx.events.post(key, uid, WARNING, "PruneFailed",
                        "the sync is released, but: " + "; ".join(problems))  # fmt: skip
    log.info("sync=%s action=delete prune=%s deleted=%d kept=%d failed=%d", key, prune,
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
