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
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from . import inventory, status
from .api import InventoryEntry, Sync, SyncKey, parse_status, parse_sync
from .apply import Action, ChangeSet, Engine, Item, Options
from .constants import (
    ANNOTATION_FORCE,
    ANNOTATION_RECONCILE,
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
from .errors import AuthenticationFailed, InvalidSpec, PruneRefused, SyncError
from .events import NORMAL, WARNING, EventRecorder, SyncRef
from .kube import Discovery, Kube, KubeError
from .limits import Limits
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
    _clients: dict[str | None, Kube] = field(default_factory=dict)
    _last_warning: dict[SyncKey, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

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


def _items(sync: Sync, manifests: list[Manifest]) -> list[Item]:
    items = []
    for m in manifests:
        obj = m.obj
        meta = obj.setdefault("metadata", {})
        labels = meta.setdefault("labels", {}) or {}
        meta["labels"] = labels
        labels[LABEL_SYNC_NAME] = sync.key.name
        labels[LABEL_SYNC_NAMESPACE] = sync.key.namespace
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
    max_age = 0.0 if spec_changed or asked else sync.spec.interval

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

    old_inventory = parse_status(run.status).inventory or ()
    if not manifests and old_inventory and not sync.spec.allow_empty:
        raise PruneRefused(
            f"revision {revision} holds no objects under {sync.spec.path!r}: applying it would delete "
            f"all {len(old_inventory)} object(s) of this sync; set spec.allowEmpty: true to allow it"
        )

    # apply
    items = _items(sync, manifests)
    new_entries = tuple(inventory.entry(it.obj) for it in items)
    grown = inventory.union(old_inventory, new_entries)
    if revision != run.status.get("lastAppliedRevision") or grown != old_inventory:
        run.write(
            status.progressing(f"applying {revision}"),
            deadline,
            inventory=inventory.to_status(grown),
        )
    engine = Engine(
        ctx.client_for(sync), ctx.discovery, Options(FIELD_MANAGER, ctx.settings.apply_concurrency)
    )
    changes = engine.apply(items, deadline)
    log.info(
        "sync=%s revision=%s action=apply %s duration_ms=%d",
        sync.key,
        revision,
        _counts(changes),
        run.ms(),
    )

    # prune: stale objects are handled in prune.py (issue: prune safely); until
    # then the inventory keeps them so nothing leaks out of it.
    kept: list[InventoryEntry] = list(inventory.stale(old_inventory, new_entries))
    final_inventory = inventory.union(kept, new_entries)

    # status
    run.write(
        status.succeeded(f"Applied revision: {revision}"),
        deadline,
        inventory=inventory.to_status(final_inventory),
        lastAppliedRevision=revision,
    )
    if changes.changed:
        run.event(NORMAL, "ReconciliationSucceeded", f"{revision}: {changes.summary()}")
    return f"revision={revision} {_counts(changes)}"


def _counts(changes: ChangeSet) -> str:
    return " ".join(f"{a.value}={changes.count(a)}" for a in Action)
