"""One reconcile of one GitRepositorySync, top to bottom:

    fetch → render → ownership → apply → prune → status

Each stage is a function from typed input to typed output in its own module;
this file only strings them together, keeps the status honest at each step and
turns a stage's typed error into a condition (errors.py says which). Nothing
here imports kopf: a test, a benchmark or a CLI can drive it directly.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any

from . import applyset, inventory, status
from .api import (
    Condition,
    InventoryEntry,
    Sync,
    SyncKey,
    SyncMeta,
    SyncStatus,
    parse_meta,
    parse_sync,
    sync_path,
)
from .constants import (
    ANNOTATION_ADOPTED,
    ANNOTATION_CLAIM,
    ANNOTATION_FORCE,
    ANNOTATION_RECONCILE,
    CLAIM_FIELD_MANAGER,
    DISABLED,
    ENABLED,
    FIELD_MANAGER,
    LABEL_SYNC_NAME,
    LABEL_SYNC_NAMESPACE,
)
from .context import Context
from .deadline import Deadline
from .errors import (
    AuthenticationFailed,
    Deferred,
    InternalError,
    InvalidSpec,
    OwnershipConflict,
    PruneFailed,
    PruneRefused,
    ShuttingDown,
    Stage,
    SyncError,
    in_stage,
)
from .events import NORMAL, WARNING
from .kube import (
    MERGE_PATCH,
    Action,
    Change,
    ChangeSet,
    Engine,
    Item,
    Kube,
    KubeError,
    ObjRef,
    Options,
)
from .ownership import Decision, Verdict, claim_value, decide
from .prune import Pruner, PruneResult, find_owned
from .render import Manifest, assign_namespaces, render
from .source import Checkout, GitCredentials

log = logging.getLogger("gitferry.reconcile")


@dataclass(frozen=True)
class Result:
    ok: bool
    next_in: float  # seconds until the next periodic reconcile
    wake: tuple[SyncKey, ...] = ()  # other syncs to reconcile now (hand-overs)


def _jitter(seconds: float, fraction: float) -> float:
    return seconds * (1 + random.uniform(0, fraction))


class Run:
    """The state of one reconcile: the sync's metadata, the status as last
    written, and the parsed sync once its spec parsed."""

    def __init__(self, ctx: Context, meta: SyncMeta, status_: SyncStatus) -> None:
        self.ctx = ctx
        self.meta = meta
        self.key = meta.key
        self.status = status_
        # The ApplySet parent's labels and annotations as the sync carries them now.
        self.parent = {"labels": dict(meta.labels), "annotations": dict(meta.annotations)}
        self.started = time.monotonic()
        self.wake: list[SyncKey] = []
        # Fields every later status write carries (lastAttemptedRevision once fetched).
        self.fields: dict[str, Any] = {}

    def write(
        self, conditions: list[Condition], deadline: Deadline | None = None, **fields: Any
    ) -> None:
        """Write the status with `conditions` and SyncStatus `fields`; a no-op when
        nothing changed. Raises KubeError."""
        fields = {**self.fields, **fields}
        if self.meta.requested_at:
            fields.setdefault("last_handled_reconcile_at", self.meta.requested_at)
        new = status.with_conditions(self.status, conditions, self.meta.generation, **fields)
        self.status = self.ctx.status.write(self.key, self.status, new, deadline)

    def set_parent(self, metadata: dict[str, dict[str, str]], deadline: Deadline) -> None:
        """Write the ApplySet parent labels/annotations on the sync when they differ."""
        if all(
            self.parent.get(k, {}).get(kk) == vv
            for k, kv in metadata.items()
            for kk, vv in kv.items()
        ):
            return
        self.ctx.kube.request("PATCH", sync_path(self.key), deadline=deadline,
                              body={"metadata": metadata}, content_type=MERGE_PATCH)  # fmt: skip
        for k, kv in metadata.items():
            self.parent.setdefault(k, {}).update(kv)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.ctx.events.post(self.key, self.meta.uid, type_, reason, message)

    def ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)


def reconcile(ctx: Context, key: SyncKey) -> Result:
    """Reconcile one sync; never at the same time as its finalizer."""
    with ctx.sync_lock(key):
        return _reconcile(ctx, key)


def _reconcile(ctx: Context, key: SyncKey) -> Result:
    # Read the sync afresh: a watch's copy may not yet show the status (and
    # inventory) that the previous reconcile wrote.
    try:
        body = ctx.sync_body(key)
    except KubeError as e:
        log.warning("sync=%s action=read-failed error=%s", key, e.message)
        return Result(False, 10.0)
    if body is None:
        return Result(True, 3600.0)  # gone, or being deleted: the finalizer handles it
    run = Run(ctx, parse_meta(body), SyncStatus.from_dict(body.get("status")))
    retry, interval = 300.0, 300.0
    try:
        with in_stage(Stage.SPEC):
            sync = parse_sync(body)
        retry, interval = sync.spec.retry_interval, sync.spec.interval
        if sync.spec.suspend:
            with in_stage(Stage.STATUS):
                run.write(status.suspended())
            ctx.succeeded(key)  # no failure streak or wait survives a suspend
            return Result(True, _jitter(sync.spec.interval, ctx.settings.interval_jitter))
        summary = _pipeline(run, sync)
    except Deferred as e:  # nothing asked, nothing written: try again in a moment
        log.info("sync=%s action=reconcile result=deferred why=%s", run.key, e)
        ctx.start_waiting(key)
        return Result(True, random.uniform(1.0, 3.0))
    except ShuttingDown as e:  # nothing is written: the next start redoes this reconcile
        log.info("sync=%s action=reconcile result=stopped why=%s", run.key, e)
        return Result(True, 3600.0)
    except Exception as e:
        if not isinstance(e, SyncError):  # a bug outside any stage: the log gets the traceback
            log.exception("sync=%s action=reconcile error=internal", run.key)
            e = InternalError(f"internal error: {type(e).__name__}: {e}")
        _fail(run, e)
        backoff = ctx.retry_after(key, retry, interval)
        return Result(False, _jitter(backoff, ctx.settings.interval_jitter), tuple(run.wake))
    ctx.succeeded(run.key)
    log.info("sync=%s action=reconcile result=ok %s duration_ms=%d", run.key, summary, run.ms())
    return Result(True, _jitter(sync.spec.interval, ctx.settings.interval_jitter), tuple(run.wake))


def _fail(run: Run, error: SyncError) -> None:
    log.warning(
        "sync=%s action=reconcile reason=%s duration_ms=%d error=%s",
        run.key,
        error.reason,
        run.ms(),
        error.message,
    )
    if run.ctx.stopping.is_set():
        # A failure while the operator stops (its cache going, its connections
        # closing) says nothing about the sync: the next operator decides.
        return
    try:
        run.write(status.failed(error))
    except (KubeError, SyncError) as e:
        log.warning("sync=%s action=status-failed error=%s", run.key, e.message)
    if run.ctx.warn_once(run.key, error.message):
        run.event(WARNING, error.reason, error.message)


def _check_supported(sync: Sync) -> None:
    unsupported = [
        name
        for name, used in (
            ("dependsOn", bool(sync.spec.depends_on)),
            ("postBuild", bool(sync.spec.post_build)),
            ("wait", sync.spec.wait),
        )
        if used
    ]
    if unsupported:
        raise InvalidSpec(
            f"spec.{', spec.'.join(unsupported)}: not implemented yet in this gitferry version; "
            "remove the field(s) so that the sync is not silently treated differently"
        )


def _credentials(ctx: Context, sync: Sync, deadline: Deadline) -> GitCredentials | None:
    if not sync.spec.secret_ref:
        return None
    path = f"/api/v1/namespaces/{sync.key.namespace}/secrets/{sync.spec.secret_ref}"
    try:
        # As the identity the sync applies as: a tenant cannot send a Secret it
        # may not read to a URL of its choosing.
        secret = ctx.client_for(sync).request("GET", path, deadline=deadline)
    except KubeError as e:  # the Secret's problem, whatever the API said: not git's
        raise AuthenticationFailed(
            f"spec.secretRef: Secret {sync.key.namespace}/{sync.spec.secret_ref}: {e.message}"
        ) from None
    data = {
        k: base64.b64decode(v).decode("utf-8", "replace")
        for k, v in (secret.get("data") or {}).items()
    }
    return GitCredentials.from_secret_data(data)


def _items(sync: Sync, manifests: list[Manifest], set_id: str) -> list[Item]:
    items = []
    for m in manifests:
        obj = m.obj
        meta = obj.setdefault("metadata", {})
        labels = meta.get("labels") or {}
        meta["labels"] = labels
        labels[LABEL_SYNC_NAME] = sync.key.name
        labels[LABEL_SYNC_NAMESPACE] = sync.key.namespace
        labels[applyset.LABEL_PART_OF] = set_id
        annotations = meta.get("annotations") or {}
        items.append(
            Item(
                obj=obj,
                source=m.source,
                force=sync.spec.force or annotations.get(ANNOTATION_FORCE) == ENABLED,
                create_only=annotations.get(ANNOTATION_RECONCILE) == DISABLED,
            )
        )
    return items


def _mark_adopted(item: Item) -> None:
    item.obj["metadata"].setdefault("annotations", {})[ANNOTATION_ADOPTED] = "true"


def _pipeline(run: Run, sync: Sync) -> str:
    """fetch → render → ownership → apply → prune → status; returns a log summary.

    Each stage runs `in_stage`: what it raises becomes that stage's condition.
    Once the operator is stopping, no further stage starts (ShuttingDown)."""
    timeout = sync.spec.timeout
    deadline = Deadline.after(timeout)
    ctx = run.ctx
    with in_stage(Stage.SPEC):
        _check_supported(sync)
    with in_stage(Stage.STATUS, timeout):
        spec_changed = sync.generation != run.status.observed_generation
        if spec_changed:
            # kubectl wait right after a spec change must never see the old Ready.
            run.write(status.progressing(f"reconciling generation {sync.generation}"), deadline)
    ctx.check_running("fetch")
    with in_stage(Stage.FETCH, timeout):
        checkout = _fetch(run, sync, spec_changed, deadline)
    with in_stage(Stage.RENDER, timeout):
        manifests = _render(run, sync, checkout, deadline)
    with in_stage(Stage.PRUNE, timeout):  # reading what the sync owned is prune's business
        old = _old_inventory(run, sync, manifests, checkout.revision, deadline)
    with in_stage(Stage.OWNERSHIP, timeout):
        plan = _own(run, sync, manifests, deadline)
    ctx.check_running("apply")
    with in_stage(Stage.APPLY, timeout):
        changes = _apply(run, sync, plan, old, checkout.revision, deadline)
    ctx.check_running("prune")  # never prune once shutdown began
    with in_stage(Stage.PRUNE, timeout):
        pruned, final = _prune(run, sync, plan, old, changes, checkout.revision, deadline)
    with in_stage(Stage.STATUS, timeout):
        return _finish(run, plan, pruned, final, changes, checkout.revision, deadline)


def _fetch(run: Run, sync: Sync, spec_changed: bool, deadline: Deadline) -> Checkout:
    previous = run.status
    # The shared cache answers "what is the branch at?" for up to an interval. A new
    # spec, a user's request to reconcile now, or a retry after a failure (a commit
    # pushed before a Secret was fixed) asks the remote afresh.
    asked = (
        sync.requested_at is not None and sync.requested_at != previous.last_handled_reconcile_at
    )
    failing = run.status.ready != "True"
    poked = run.ctx.poked(sync.key)  # a push webhook named it (receiver.py)
    max_age = 0.0 if spec_changed or asked or failing or poked else sync.spec.interval
    creds = _credentials(run.ctx, sync, deadline)
    fresh = spec_changed or asked  # a person is waiting: ask git, whatever others just heard
    checkout = run.ctx.source.fetch(
        sync.spec.url,
        sync.spec.ref,
        creds,
        deadline,
        max_age=max_age,
        # A sync that waited for a busy repository, or was named by a push, shares
        # an answer the remote gave since instead of asking again.
        shared_since=None if fresh else poked or run.ctx.waiting_since(sync.key),
        reuse_failure=not fresh,
    )
    run.ctx.unpoke(sync.key, poked)
    log.info(
        "sync=%s revision=%s action=fetch duration_ms=%d", sync.key, checkout.revision, run.ms()
    )
    run.fields["last_attempted_revision"] = checkout.revision
    return checkout


def _render(run: Run, sync: Sync, checkout: Checkout, deadline: Deadline) -> list[Manifest]:
    slot = run.ctx.render_slot(deadline)
    try:
        manifests = render(checkout.path, sync.spec.path, run.ctx.settings.limits, deadline)
    finally:
        slot.release()
    run.ctx.remember_sources(sync.key, (m.source for m in manifests))  # for push webhooks
    if any(run.ctx.discovery.is_namespaced(m.group, m.kind) is None for m in manifests):
        run.ctx.discovery.refresh(deadline)  # a CRD installed since the last look
    default_ns = sync.spec.target_namespace or sync.key.namespace
    manifests = assign_namespaces(manifests, run.ctx.discovery.is_namespaced, default_ns)
    log.info(
        "sync=%s revision=%s action=render objects=%d", sync.key, checkout.revision, len(manifests)
    )
    return manifests


def _old_inventory(
    run: Run, sync: Sync, manifests: list[Manifest], revision: str, deadline: Deadline
) -> tuple[InventoryEntry, ...]:
    old = run.status.inventory
    if old is None:  # a new sync, or a status lost in a restore: the labels tell
        notes = run.parent["annotations"]
        kinds = applyset.parse_group_kinds(notes.get(applyset.ANNOTATION_GROUP_KINDS))
        namespaces = applyset.parse_namespaces(notes.get(applyset.ANNOTATION_NAMESPACES))
        client = run.ctx.client_for(sync)  # what the sync may see, not the operator
        old = tuple(find_owned(client, run.ctx.discovery, sync.key, deadline, kinds, namespaces))
    if not manifests and old and not sync.spec.allow_empty:
        raise PruneRefused(
            f"revision {revision} holds no objects under {sync.spec.path!r}: applying it would delete "
            f"all {len(old)} object(s) of this sync; set spec.allowEmpty: true to allow it"
        )
    return old


@dataclass
class Plan:
    """What this reconcile will write, after reading the live objects' owners."""

    engine: Engine
    client: Kube
    items: list[Item]  # the writable ones
    live: dict[ObjRef, dict[str, Any] | None]
    verdicts: dict[ObjRef, Verdict]
    conflicts: list[Verdict]

    @property
    def entries(self) -> tuple[InventoryEntry, ...]:
        return tuple(inventory.entry(it.obj) for it in self.items)


def _own(run: Run, sync: Sync, manifests: list[Manifest], deadline: Deadline) -> Plan:
    ctx = run.ctx
    items = _items(sync, manifests, applyset.applyset_id(sync.key.name, sync.key.namespace))
    ctx.remember_render(sync.key, {it.ref.id for it in items})
    client = ctx.client_for(sync)
    engine = Engine(client, ctx.discovery, Options(FIELD_MANAGER, ctx.settings.apply_concurrency))
    live = engine.read_live(items, deadline)
    held: dict[SyncKey, frozenset[str] | None] = {}  # one read per other owner

    def holds(owner: SyncKey, ref: ObjRef) -> bool:
        if owner not in held:
            held[owner] = ctx.owner_ids(owner, deadline)
        return ref.id in (held[owner] or ())

    verdicts = {it.ref: decide(sync.key, it.ref, live.get(it.ref), holds) for it in items}
    conflicts = [v for v in verdicts.values() if v.decision == Decision.CONFLICT]
    for v in conflicts:
        if not v.claimed_by_us:
            _set_claim(engine, client, v.ref, claim_value(sync.key), deadline)
    writable = [it for it in items if verdicts[it.ref].writable]
    for i, it in enumerate(writable):
        if verdicts[it.ref].adopted:
            _mark_adopted(it)
        if verdicts[it.ref].decision == Decision.ADOPT:
            # git becomes the whole truth for the fields it sets: take over what
            # kubectl (client-side apply, create, edit) or Helm owned.
            writable[i] = dataclasses.replace(it, take_over=True)
    return Plan(engine, client, writable, live, verdicts, conflicts)


def _apply(
    run: Run,
    sync: Sync,
    plan: Plan,
    old: tuple[InventoryEntry, ...],
    revision: str,
    deadline: Deadline,
) -> ChangeSet:
    # The inventory and the ApplySet parent grow to old ∪ new before any write.
    grown = inventory.union(old, plan.entries)
    run.set_parent(
        applyset.parent_metadata(sync.key.name, sync.key.namespace, _refs(grown)), deadline
    )
    if revision != run.status.last_applied_revision or grown != (run.status.inventory or ()):
        run.write(
            # After a failure, kstatus readers see that this is a retry.
            status.progressing(f"applying {revision}", retrying=run.status.ready == "False"),
            deadline,
            inventory=grown,
        )
    changes = plan.engine.apply(plan.items, deadline, plan.live)
    for it in plan.items:
        if plan.verdicts[it.ref].claimed_by_us:
            _set_claim(plan.engine, plan.client, it.ref, None, deadline)
    log.info(
        "sync=%s revision=%s action=apply %s duration_ms=%d",
        sync.key,
        revision,
        _counts(changes),
        run.ms(),
    )
    if run.ctx.settings.crash_before_prune:  # test hook: prove the inventory is crash-safe
        os._exit(70)
    return changes


def _prune(
    run: Run,
    sync: Sync,
    plan: Plan,
    old: tuple[InventoryEntry, ...],
    changes: ChangeSet,
    revision: str,
    deadline: Deadline,
) -> tuple[PruneResult, tuple[InventoryEntry, ...]]:
    declared = frozenset(e.id for e in plan.entries)
    pruner = Pruner(plan.client, run.ctx.discovery, sync.key, run.ctx.can_hand_over, declared)
    stale = inventory.stale(old, plan.entries)
    pruned = pruner.prune(stale, deadline) if sync.spec.prune else pruner.release(stale, deadline)
    changes.changes += [Change(ref, Action.DELETED) for ref in pruned.deleted]
    final = inventory.union(pruned.remaining(), plan.entries)
    run.set_parent(
        applyset.parent_metadata(sync.key.name, sync.key.namespace, _refs(final)), deadline
    )
    _report_prune(run, pruned)
    log.info("sync=%s revision=%s action=prune deleted=%d kept=%d failed=%d", sync.key, revision,
             len(pruned.deleted), len(pruned.kept), len(pruned.failed))  # fmt: skip
    return pruned, final


def _finish(
    run: Run,
    plan: Plan,
    pruned: PruneResult,
    final: tuple[InventoryEntry, ...],
    changes: ChangeSet,
    revision: str,
    deadline: Deadline,
) -> str:
    error: SyncError | None = None
    if plan.conflicts:
        owners = ", ".join(f"{v.ref} is owned by sync {v.owner}" for v in plan.conflicts)
        error = OwnershipConflict(
            f"{len(plan.conflicts)} object(s) left alone: {owners}, whose git still holds them "
            "(remove them from one of the two repositories)"
        )
    elif pruned.failed:
        error = PruneFailed("could not delete: " + "; ".join(msg for _, msg in pruned.failed))
    if error is not None:
        run.write(status.failed(error), deadline, inventory=final)
        if changes.changed:
            run.event(NORMAL, "Progressing", f"{revision}: {changes.summary()}")
        raise error
    run.write(
        status.succeeded(f"Applied revision: {revision}"),
        deadline,
        inventory=final,
        last_applied_revision=revision,
    )
    if changes.changed:
        run.event(NORMAL, "ReconciliationSucceeded", f"{revision}: {changes.summary()}")
    return f"revision={revision} {_counts(changes)}"


def _refs(entries: tuple[InventoryEntry, ...]) -> list[ObjRef]:
    return [ObjRef.from_id(e.id) for e in entries]


def _set_claim(
    plan_engine: Engine, client: Kube, ref: ObjRef, value: str | None, deadline: Deadline
) -> None:
    """Record (or, once the object is ours, remove) this sync's claim on an object
    another sync owns, so that the owner hands it over instead of deleting it when
    it leaves the owner's git. A targeted merge patch under its own field manager:
    never a partial apply, which would strip gitferry's fields."""
    res = plan_engine.discovery.for_group_kind(ref.group, ref.kind)
    if res is None:
        return
    patch = {"metadata": {"annotations": {ANNOTATION_CLAIM: value}}}
    try:
        client.request("PATCH", res.path(ref.namespace, ref.name), deadline=deadline, body=patch,
                       content_type=MERGE_PATCH, query={"fieldManager": CLAIM_FIELD_MANAGER})  # fmt: skip
    except KubeError as e:
        log.warning("action=claim object=%s value=%s error=%s", ref, value, e.message)


def _report_prune(run: Run, pruned: PruneResult) -> None:
    for ref, why in pruned.kept:
        run.event(WARNING, "PruneSkipped", f"{ref} left git but was not deleted: {why}")
    for entry, why in run.ctx.new_deferrals(run.key, pruned.deferred):
        run.event(
            WARNING,
            "PruneSkipped",
            f"{ObjRef.from_id(entry.id)} left git but was not deleted: {why}; it stays in the "
            "inventory and is pruned once nothing declared remains inside",
        )
    for ref, to in pruned.handed_over:
        run.event(
            NORMAL,
            "HandedOver",
            f"{ref} left git and was handed over to sync {to}, whose git holds it",
        )
        run.wake.append(to)


def _counts(changes: ChangeSet) -> str:
    return " ".join(f"{a.value}={changes.count(a)}" for a in Action)
