"""One reconcile of one GitRepositorySync, top to bottom:

    fetch → render → apply → prune → status

Each stage is a function from typed input to typed output in its own module;
this file only strings them together, keeps the status honest at each step and
turns a stage's typed error into a condition (errors.py says which). Nothing
here imports kopf: a test, a benchmark or a CLI can drive it directly.
"""

from __future__ import annotations

import base64
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import applyset, inventory, status
from .api import InventoryEntry, Sync, SyncKey, parse_duration, parse_status, parse_sync
from .apply import Action, Change, ChangeSet, Engine, Item, Options
from .constants import (
    ANNOTATION_ADOPTED,
    ANNOTATION_CLAIM,
    ANNOTATION_FORCE,
    ANNOTATION_RECONCILE,
    CLAIM_FIELD_MANAGER,
    DISABLED,
    ENABLED,
    FIELD_MANAGER,
    GROUP,
    LABEL_SYNC_NAME,
    LABEL_SYNC_NAMESPACE,
    PLURAL,
    VERSION,
)
from .deadline import Deadline
from .errors import (
    AuthenticationFailed,
    InvalidSpec,
    OwnershipConflict,
    PruneFailed,
    PruneRefused,
    SyncError,
)
from .events import NORMAL, WARNING, EventRecorder, SyncRef
from .kube import MERGE_PATCH, Discovery, Kube, KubeError
from .limits import Limits
from .ownership import Decision, Verdict, claim_value, decide
from .prune import Pruner, PruneResult, find_owned
from .refs import ObjRef
from .render import Manifest, assign_namespaces, render
from .settings import Settings
from .source import GitCredentials, GitSource
from .status import StatusWriter

log = logging.getLogger("gitferry.reconcile")


@dataclass
class Context:
    """What every reconcile shares: clients, the git cache, settings."""

    kube: Kube
    discovery: Discovery
    source: GitSource
    settings: Settings
    limits: Limits
    status: StatusWriter
    events: EventRecorder
    # Asks for a reconcile of another sync (the scheduler's entry point).
    request: Callable[[SyncKey], None] = lambda _key: None
    _clients: dict[str | None, Kube] = field(default_factory=dict)
    _last_warning: dict[SyncKey, str] = field(default_factory=dict)
    # What each sync's git held at its last render: decides hand-overs.
    _last_render: dict[SyncKey, frozenset[str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def remember_render(self, key: SyncKey, ids: set[str]) -> None:
        with self._lock:
            self._last_render[key] = frozenset(ids)

    def _sync_body(self, key: SyncKey) -> dict[str, Any] | None:
        try:
            body = self.kube.request("GET", sync_path(key))
        except KubeError as e:
            if e.not_found:
                return None
            raise
        return None if (body.get("metadata") or {}).get("deletionTimestamp") else body

    def holds(self, owner: SyncKey, ref: ObjRef) -> bool:
        """Does sync `owner` exist and does its git still hold `ref`?"""
        body = self._sync_body(owner)
        if body is None:
            return False
        with self._lock:
            rendered = self._last_render.get(owner)
        if rendered is not None:
            return ref.id in rendered
        return any(e.id == ref.id for e in parse_status(body.get("status")).inventory or ())

    def can_hand_over(self, claimant: SyncKey, ref: ObjRef) -> bool:
        """Hand an object over only to a sync whose last render includes it; when
        that render is unknown here (a restart), hand over: it deletes less."""
        if self._sync_body(claimant) is None:
            return False
        with self._lock:
            rendered = self._last_render.get(claimant)
        return rendered is None or ref.id in rendered

    def client_for(self, sync: Sync) -> Kube:
        """Apply and prune as the sync's ServiceAccount (impersonated), else as the
        operator's default one, else as the operator itself."""
        sa = sync.spec.service_account_name or self.settings.default_service_account
        user = f"system:serviceaccount:{sync.key.namespace}:{sa}" if sa else None
        with self._lock:
            if user not in self._clients:
                self._clients[user] = self.kube.as_user(user)
            return self._clients[user]

    def warn_once(self, key: SyncKey, message: str) -> bool:
        """True the first time a failure message is seen for a sync in a row:
        a failure retried every 30s raises one Warning, not one per retry."""
        with self._lock:
            if self._last_warning.get(key) == message:
                return False
            self._last_warning[key] = message
            return True

    def clear_warning(self, key: SyncKey) -> None:
        with self._lock:
            self._last_warning.pop(key, None)


@dataclass(frozen=True)
class Result:
    ok: bool
    next_in: float  # seconds until the next periodic reconcile


def _jitter(seconds: float, fraction: float) -> float:
    return seconds * (1 + random.uniform(0, fraction))


def _key_of(body: dict[str, Any]) -> SyncKey:
    meta = body.get("metadata") or {}
    return SyncKey(meta.get("namespace", ""), meta.get("name", ""))


class Run:
    """The state of one reconcile: the sync, the status as last written."""

    def __init__(self, ctx: Context, body: dict[str, Any]) -> None:
        self.ctx = ctx
        self.key = _key_of(body)
        meta = body.get("metadata") or {}
        self.uid = meta.get("uid", "")
        self.generation = int(meta.get("generation") or 0)
        self.status: dict[str, Any] = dict(body.get("status") or {})
        self.requested_at = (meta.get("annotations") or {}).get("gitferry.dev/requested-at")
        self.meta = {
            "labels": dict(meta.get("labels") or {}),
            "annotations": dict(meta.get("annotations") or {}),
        }
        self.started = time.monotonic()
        # Fields every later status write carries (lastAttemptedRevision once fetched).
        self.fields: dict[str, Any] = {}

    def write(
        self, conditions: list[status.Condition], deadline: Deadline | None = None, **fields: Any
    ) -> None:
        fields = {**self.fields, **fields}
        if self.requested_at:
            fields.setdefault("lastHandledReconcileAt", self.requested_at)
        new = status.with_conditions(self.status, conditions, self.generation, **fields)
        self.status = self.ctx.status.write(self.key, self.status, new, deadline)

    def set_parent(self, metadata: dict[str, dict[str, str]], deadline: Deadline) -> None:
        """Write the ApplySet parent labels/annotations on the sync when they differ."""
        if all(
            self.meta.get(k, {}).get(kk) == vv
            for k, kv in metadata.items()
            for kk, vv in kv.items()
        ):
            return
        self.ctx.kube.request("PATCH", sync_path(self.key), deadline=deadline,
                              body={"metadata": metadata}, content_type=MERGE_PATCH)  # fmt: skip
        for k, kv in metadata.items():
            self.meta.setdefault(k, {}).update(kv)

    def event(self, type_: str, reason: str, message: str) -> None:
        self.ctx.events.post(SyncRef(self.key, self.uid), type_, reason, message)

    def ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)


def sync_path(key: SyncKey) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{key.namespace}/{PLURAL}/{key.name}"


def reconcile(ctx: Context, key: SyncKey) -> Result:
    """Reconcile one sync. It reads the sync afresh: a watch's copy may not yet
    show the status (and inventory) that the previous reconcile wrote."""
    try:
        body = ctx.kube.request("GET", sync_path(key))
    except KubeError as e:
        if e.not_found:
            return Result(True, 3600.0)
        log.warning("sync=%s action=read-failed error=%s", key, e.message)
        return Result(False, 10.0)
    if (body.get("metadata") or {}).get("deletionTimestamp"):
        return Result(True, 3600.0)  # the finalizer handles it
    run = Run(ctx, body)
    retry = 300.0
    try:
        sync = parse_sync(body)
        retry = sync.spec.retry_interval
        if sync.spec.suspend:
            run.write(status.suspended())
            return Result(True, _jitter(sync.spec.interval, ctx.settings.interval_jitter))
        summary = _pipeline(run, sync)
    except SyncError as e:
        _fail(run, e)
        return Result(False, _jitter(retry, ctx.settings.interval_jitter))
    except Exception as e:  # a bug: the log gets the traceback, the status never does
        log.exception("sync=%s action=reconcile error=internal", run.key)
        _fail(run, SyncError(f"internal error: {type(e).__name__}: {e}"))
        return Result(False, _jitter(retry, ctx.settings.interval_jitter))
    ctx.clear_warning(run.key)
    log.info("sync=%s action=reconcile result=ok %s duration_ms=%d", run.key, summary, run.ms())
    return Result(True, _jitter(sync.spec.interval, ctx.settings.interval_jitter))


def _fail(run: Run, error: SyncError) -> None:
    log.warning(
        "sync=%s action=reconcile reason=%s duration_ms=%d error=%s",
        run.key,
        error.reason,
        run.ms(),
        error.message,
    )
    try:
        run.write(status.failed(error))
    except KubeError as e:
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
        secret = ctx.kube.request("GET", path, deadline=deadline)
    except KubeError as e:
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
    ctx = run.ctx
    deadline = Deadline.after(sync.spec.timeout)
    _check_supported(sync)
    previous = parse_status(run.status)
    spec_changed = sync.generation != previous.observed_generation
    if spec_changed:
        # kubectl wait right after a spec change must never see the old Ready.
        run.write(status.progressing(f"reconciling generation {sync.generation}"), deadline)
    # The shared cache answers "what is the branch at?" for up to an interval; a
    # new spec or a user's request to reconcile now asks the remote afresh.
    asked = (
        sync.requested_at is not None and sync.requested_at != previous.last_handled_reconcile_at
    )
    # After a failure too: a commit pushed before a Secret was fixed must not wait
    # a whole interval behind a ref answer cached before the push.
    failing = status.ready_status(run.status) != "True"
    max_age = 0.0 if spec_changed or asked or failing else sync.spec.interval

    # fetch
    creds = _credentials(ctx, sync, deadline)
    checkout = ctx.source.fetch(sync.spec.url, sync.spec.ref, creds, deadline, max_age=max_age)
    revision = checkout.revision
    log.info("sync=%s revision=%s action=fetch duration_ms=%d", sync.key, revision, run.ms())
    run.fields["lastAttemptedRevision"] = revision

    # render
    manifests = render(checkout.path, sync.spec.path, ctx.limits, deadline)
    default_ns = sync.spec.target_namespace or sync.key.namespace
    manifests = assign_namespaces(manifests, ctx.discovery.is_namespaced, default_ns)
    log.info("sync=%s revision=%s action=render objects=%d", sync.key, revision, len(manifests))

    client = ctx.client_for(sync)
    pruner = Pruner(client, ctx.discovery, sync.key, ctx.can_hand_over)
    old_inventory = previous.inventory
    if old_inventory is None:  # new, or a status lost in a restore: the labels tell
        old_inventory = tuple(find_owned(ctx.kube, ctx.discovery, sync.key, deadline))
    if not manifests and old_inventory and not sync.spec.allow_empty:
        raise PruneRefused(
            f"revision {revision} holds no objects under {sync.spec.path!r}: applying it would delete "
            f"all {len(old_inventory)} object(s) of this sync; set spec.allowEmpty: true to allow it"
        )

    # ownership: read what is live, decide per object before anything is written
    set_id = applyset.applyset_id(sync.key.name, sync.key.namespace)
    items = _items(sync, manifests, set_id)
    ctx.remember_render(sync.key, {it.ref.id for it in items})
    engine = Engine(client, ctx.discovery, Options(FIELD_MANAGER, ctx.settings.apply_concurrency))
    live = engine.read_live(items, deadline)
    verdicts = {it.ref: decide(sync.key, it.ref, live.get(it.ref), ctx.holds) for it in items}
    conflicts = [v for v in verdicts.values() if v.decision == Decision.CONFLICT]
    for v in conflicts:
        if not v.claimed_by_us:
            _claim(engine, client, v, sync.key, deadline)
    items = [it for it in items if verdicts[it.ref].writable]
    for it in items:
        if verdicts[it.ref].adopted:
            _mark_adopted(it)

    # apply: the inventory and the ApplySet parent first grow to old ∪ new
    new_entries = tuple(inventory.entry(it.obj) for it in items)
    grown = inventory.union(old_inventory, new_entries)
    run.set_parent(
        applyset.parent_metadata(sync.key.name, sync.key.namespace, _refs(grown)), deadline
    )
    if revision != run.status.get("lastAppliedRevision") or grown != (previous.inventory or ()):
        run.write(
            status.progressing(f"applying {revision}"),
            deadline,
            inventory=inventory.to_status(grown),
        )
    changes = engine.apply(items, deadline, live)
    for it in items:
        if verdicts[it.ref].claimed_by_us:
            _unclaim(engine, client, it, deadline)
    log.info(
        "sync=%s revision=%s action=apply %s duration_ms=%d",
        sync.key,
        revision,
        _counts(changes),
        run.ms(),
    )
    if ctx.settings.crash_before_prune:  # test hook: prove the inventory is crash-safe
        os._exit(70)

    # prune
    stale = inventory.stale(old_inventory, new_entries)
    pruned = pruner.prune(stale, deadline) if sync.spec.prune else pruner.release(stale, deadline)
    for ref in pruned.deleted:
        changes.changes.append(Change(ref, Action.DELETED))
    final = inventory.union(pruned.remaining(), new_entries)
    run.set_parent(
        applyset.parent_metadata(sync.key.name, sync.key.namespace, _refs(final)), deadline
    )
    _report_prune(run, pruned)
    log.info("sync=%s revision=%s action=prune deleted=%d kept=%d failed=%d", sync.key, revision,
             len(pruned.deleted), len(pruned.kept), len(pruned.failed))  # fmt: skip

    # status
    if conflicts:
        owners = ", ".join(f"{v.ref} is owned by sync {v.owner}" for v in conflicts)
        error: SyncError | None = OwnershipConflict(
            f"{len(conflicts)} object(s) left alone: {owners}, whose git still holds them "
            "(remove them from one of the two repositories)"
        )
    elif pruned.failed:
        error = PruneFailed("could not delete: " + "; ".join(msg for _, msg in pruned.failed))
    else:
        error = None
    if error is not None:
        run.write(status.failed(error), deadline, inventory=inventory.to_status(final))
        if changes.changed:
            run.event(NORMAL, "Progressing", f"{revision}: {changes.summary()}")
        raise error
    run.write(
        status.succeeded(f"Applied revision: {revision}"),
        deadline,
        inventory=inventory.to_status(final),
        lastAppliedRevision=revision,
    )
    if changes.changed:
        run.event(NORMAL, "ReconciliationSucceeded", f"{revision}: {changes.summary()}")
    return f"revision={revision} {_counts(changes)}"


def _refs(entries: tuple[InventoryEntry, ...]) -> list[ObjRef]:
    return [ObjRef.from_id(e.id) for e in entries]


def _claim(engine: Engine, client: Kube, v: Verdict, me: SyncKey, deadline: Deadline) -> None:
    """Record that this sync's git holds an object another sync owns, so that the
    owner hands it over instead of deleting it when it leaves the owner's git.
    A targeted merge patch under its own field manager: never a partial apply."""
    res = engine.discovery.for_group_kind(v.ref.group, v.ref.kind)
    if res is None:
        return
    patch = {"metadata": {"annotations": {ANNOTATION_CLAIM: claim_value(me)}}}
    try:
        client.request("PATCH", res.path(v.ref.namespace, v.ref.name), deadline=deadline, body=patch,
                       content_type=MERGE_PATCH, query={"fieldManager": CLAIM_FIELD_MANAGER})  # fmt: skip
    except KubeError as e:
        log.warning("sync=%s action=claim object=%s error=%s", me, v.ref, e.message)


def _unclaim(engine: Engine, client: Kube, it: Item, deadline: Deadline) -> None:
    res = engine.resource_for(it.obj)
    if res is None:
        return
    patch = {"metadata": {"annotations": {ANNOTATION_CLAIM: None}}}
    try:
        client.request("PATCH", res.path(it.ref.namespace, it.ref.name), deadline=deadline, body=patch,
                       content_type=MERGE_PATCH, query={"fieldManager": CLAIM_FIELD_MANAGER})  # fmt: skip
    except KubeError as e:
        log.warning("action=unclaim object=%s error=%s", it.ref, e.message)


def _report_prune(run: Run, pruned: PruneResult) -> None:
    for ref, why in pruned.kept:
        run.event(WARNING, "PruneSkipped", f"{ref} left git but was not deleted: {why}")
    for ref, to in pruned.handed_over:
        run.event(
            NORMAL,
            "HandedOver",
            f"{ref} left git and was handed over to sync {to}, whose git holds it",
        )
        run.ctx.request(to)


def _counts(changes: ChangeSet) -> str:
    return " ".join(f"{a.value}={changes.count(a)}" for a in Action)


def finalize(ctx: Context, key: SyncKey, body: dict[str, Any]) -> None:
    """A sync is being deleted: prune its whole inventory (same guards), or with
    prune false release its objects; on an uninstall, orphan them."""
    spec = body.get("spec") or {}
    prune = spec.get("prune", True) is not False
    try:
        timeout = parse_duration(spec.get("timeout") or "2m", "timeout")
    except SyncError:
        timeout = 120.0
    deadline = Deadline.after(timeout)
    sync_ref = SyncRef(key, (body.get("metadata") or {}).get("uid", ""))
    why = _uninstalling(ctx, key, deadline)
    if why:
        log.info("sync=%s action=delete orphaned=true why=%s", key, why)
        return
    entries = parse_status(body.get("status")).inventory
    if entries is None:
        entries = tuple(find_owned(ctx.kube, ctx.discovery, key, deadline))
    try:
        sync = parse_sync(body)
        client = ctx.client_for(sync)
    except SyncError:
        client = ctx.kube
    pruner = Pruner(client, ctx.discovery, key, ctx.can_hand_over)
    order = inventory.stale(entries, ())
    result = pruner.prune(order, deadline) if prune else pruner.release(order, deadline)
    left = pruner.wait_gone(result.deleted, deadline) if prune else []
    for ref, reason in result.kept:
        ctx.events.post(
            sync_ref, WARNING, "PruneSkipped", f"{ref} was not deleted with the sync: {reason}"
        )
    problems = [msg for _, msg in result.failed] + [f"{r} still exists" for r in left]
    if problems:
        ctx.events.post(sync_ref, WARNING, "PruneFailed",
                        "the sync is released, but: " + "; ".join(problems))  # fmt: skip
    log.info("sync=%s action=delete prune=%s deleted=%d kept=%d failed=%d", key, prune,
             len(result.deleted), len(result.kept), len(problems))  # fmt: skip


def _uninstalling(ctx: Context, key: SyncKey, deadline: Deadline) -> str | None:
    """Why the sync's objects must be orphaned: its Namespace or our CRD is going."""
    for path, what in (
        (f"/api/v1/namespaces/{key.namespace}", f"its Namespace {key.namespace} is being deleted"),
        (f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{PLURAL}.{GROUP}",
         "the GitRepositorySync CRD is being deleted (an uninstall)"),
    ):  # fmt: skip
        try:
            obj = ctx.kube.request("GET", path, deadline=deadline)
        except KubeError as e:
            if e.not_found:
                return what
            continue
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            return what
    return None
