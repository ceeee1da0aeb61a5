"""One reconcile of one GitRepositorySync, top to bottom:

    dependencies → fetch → render → ownership → apply → prune → health → status

A sync that checks health (spec.wait, spec.healthChecks) and is not healthy
yet ends its reconcile waiting: the next ones (every couple of seconds, on a
free worker, never holding one) only re-check health, until the objects are
healthy, one fails, spec.timeout runs out, or a newer revision, spec or
request supersedes the wait.

Each stage is a function from typed input to typed output in its own module;
this file only strings them together, keeps the status honest at each step and
turns a stage's typed error into a condition (errors.py says which). Nothing
here imports kopf: a test, a benchmark or a CLI can drive it directly.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any

from . import applyset, dependencies, health, healthcheck, inventory, postbuild, status
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
    ANNOTATION_SUBSTITUTE,
    CLAIM_FIELD_MANAGER,
    DISABLED,
    ENABLED,
    FIELD_MANAGER,
    KIND,
    LABEL_SYNC_NAME,
    LABEL_SYNC_NAMESPACE,
    Reason,
)
from .context import Context, Wait
from .deadline import Deadline
from .errors import (
    AuthenticationFailed,
    Deferred,
    DependencyNotReady,
    HealthCheckFailed,
    InternalError,
    InvalidSpec,
    OwnershipConflict,
    PruneFailed,
    PruneRefused,
    ShuttingDown,
    Stage,
    SyncError,
    format_seconds,
    in_stage,
)
from .events import NORMAL, WARNING, change_message, headline
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
from .metrics import ReconcileResult
from .ownership import Decision, Verdict, claim_value, decide
from .prune import Pruner, PruneResult, find_owned
from .render import Manifest, assign_namespaces, render, substitute
from .reports import Phase, SyncReport
from .source import Checkout, GitCredentials, RevisionInfo

log = logging.getLogger("gitferry.reconcile")

# The reason of a reconcile that waits for a busy git source (no condition says it).
WAITING_REASON = "GitSourceBusy"


@dataclass(frozen=True)
class Result:
    ok: bool
    next_in: float  # seconds until the next periodic reconcile
    wake: tuple[SyncKey, ...] = ()  # other syncs to reconcile now (hand-overs)


@dataclass(frozen=True)
class Outcome:
    """How the pipeline ended: done (`again_in` None), or a health check still
    waiting, to be looked at again in `again_in` seconds."""

    summary: str
    again_in: float | None = None


# Shorter Secret values are not scrubbed from messages: "1" would mangle them all.
MIN_SCRUBBED = 4


def _jitter(seconds: float, fraction: float) -> float:
    """`seconds` ± `fraction` (Flux's interval jitter): syncs created together
    drift apart instead of hitting git and the API server in the same second."""
    fraction = min(fraction, 0.5)
    return seconds * (1 + random.uniform(-fraction, fraction))


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
        # Added to the "applying" message: why a health check in progress ended.
        self.note = ""
        # Values read from Secrets for postBuild: kept out of every message.
        self.secrets: set[str] = set()
        self.url = ""  # the spec's git URL, once the spec parsed (for reports)
        # Who changed what in the revision fetched (commit subject, author, paths).
        self.info: RevisionInfo | None = None
        # Ready for this generation when the reconcile began: becoming Ready wakes dependents.
        self.was_ready = status_.ready == "True" and status_.observed_generation == meta.generation
        # This reconcile already wrote "reconciling generation N" (Progressing).
        self.progressing_written = False
        # The revision and spec were applied before: what this apply writes is drift.
        self.drift = False

    def write(
        self, conditions: list[Condition], deadline: Deadline | None = None, **fields: Any
    ) -> None:
        """Write the status with `conditions` and SyncStatus `fields`; a no-op when
        nothing changed. Raises KubeError."""
        fields = {**self.fields, **fields}
        if self.secrets:
            conditions = [dataclasses.replace(c, message=self.scrub(c.message)) for c in conditions]
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
        stored = self.ctx.kube.request("PATCH", sync_path(self.key), deadline=deadline,
                                       body={"metadata": metadata}, content_type=MERGE_PATCH)  # fmt: skip
        self.ctx.syncs.observe(stored)
        for k, kv in metadata.items():
            self.parent.setdefault(k, {}).update(kv)

    def scrub(self, text: str) -> str:
        """`text` with every Secret value of this reconcile's postBuild (4
        characters or more) replaced by `***`: an API server's validation error
        quotes the value it refused."""
        for value in sorted(self.secrets, key=len, reverse=True):
            if len(value) >= MIN_SCRUBBED and value in text:
                text = text.replace(value, "***")
        return text

    def event(self, type_: str, reason: str, message: str) -> None:
        self.ctx.events.post(self.key, self.meta.uid, type_, reason, self.scrub(message))

    def about(self, revision: str) -> RevisionInfo | None:
        """What git says about `revision` (subject, author, paths), when it was read."""
        return self.info if self.info is not None and self.info.revision == revision else None

    def changes_message(self, revision: str, changes: ChangeSet) -> str:
        """The Event text of what `revision` changed: who and why, then each object."""
        if self.drift:  # the commit changed nothing: someone outside git did
            return change_message(f"{revision}: drift corrected", changes)
        info = self.about(revision)
        head = headline(revision, info.subject, info.author) if info else revision
        return change_message(head, changes)

    def report(
        self, phase: Phase, reason: str, message: str, revision: str | None = None,
        changes: ChangeSet | None = None,
    ) -> None:  # fmt: skip
        """Tell the subscribers (chat, commit statuses) where this sync's revision stands."""
        revision = (revision or self.fields.get("last_attempted_revision")
                    or self.status.last_attempted_revision or "")  # fmt: skip
        info = None if self.drift else self.about(revision)
        self.ctx.report(
            SyncReport(
                key=self.key,
                uid=self.meta.uid,
                url=self.url,
                revision=revision,
                phase=phase,
                reason=reason,
                message=self.scrub(message),
                changes=tuple(
                    f"{c.ref} {c.action.value}" for c in (changes.changes if changes else ())
                    if c.action not in (Action.UNCHANGED, Action.SKIPPED)
                ),
                labels=dict(self.meta.labels),
                author=info.author if info else "",
                subject=info.subject if info else "",
                paths=info.paths.lines() if info else (),
                drift=self.drift,
            )
        )  # fmt: skip

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
        body = ctx.sync_body(key, cached=True)
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
        run.url = sync.spec.url
        if sync.spec.suspend:
            with in_stage(Stage.STATUS):
                run.write(status.suspended())
            ctx.succeeded(key)  # no failure streak or wait survives a suspend
            ctx.set_wait(key, None)
            _observe(run, "success", Reason.SUSPENDED, suspended=True)
            return Result(True, _jitter(sync.spec.interval, ctx.settings.interval_jitter))
        outcome = _pipeline(run, sync)
    except Deferred as e:  # nothing asked, nothing written: try again in a moment
        log.info("sync=%s action=reconcile result=deferred why=%s", run.key, e)
        ctx.start_waiting(key)
        _observe(run, "waiting", WAITING_REASON)
        return Result(True, random.uniform(1.0, 3.0))
    except ShuttingDown as e:  # nothing is written: the next start redoes this reconcile
        log.info("sync=%s action=reconcile result=stopped why=%s", run.key, e)
        return Result(True, 3600.0)
    except Exception as e:
        if not isinstance(e, SyncError):  # a bug outside any stage: the log gets the traceback
            log.exception("sync=%s action=reconcile error=internal", run.key)
            e = InternalError(f"internal error: {type(e).__name__}: {e}")
        _fail(run, e)
        _observe(run, "failure", e.reason)
        if isinstance(e, DependencyNotReady):  # not a failure streak: woken when it is Ready
            return Result(False, _jitter(ctx.settings.dependency_requeue, 0.1))
        backoff = ctx.retry_after(key, retry, interval)
        return Result(False, _jitter(backoff, ctx.settings.interval_jitter), tuple(run.wake))
    if outcome.again_in is not None:  # a health check goes on
        return Result(True, outcome.again_in, tuple(run.wake))
    ctx.succeeded(run.key)
    if not run.was_ready:  # it just became Ready: who waited for it goes now
        run.wake.extend(ctx.dependents(run.key))
    log.info("sync=%s action=reconcile result=ok %s duration_ms=%d", run.key, outcome.summary,
             run.ms())  # fmt: skip
    _observe(run, "success", Reason.SUCCEEDED)
    return Result(True, _jitter(sync.spec.interval, ctx.settings.interval_jitter), tuple(run.wake))


def _observe(run: Run, result: ReconcileResult, reason: str, suspended: bool = False) -> None:
    """The metrics of one reconcile: its duration, result and reason, and the sync's
    state as its status now says (a reconcile cut off by a stop is left out)."""
    m, key = run.ctx.metrics, run.key
    seconds = time.monotonic() - run.started
    m.reconciled(KIND, key.namespace, key.name, seconds=seconds, result=result, reason=reason)
    m.sync_state(key.namespace, key.name, ready=run.status.ready, suspended=suspended)


def _fail(run: Run, error: SyncError) -> None:
    error.message = run.scrub(error.message)  # the log, status, Event and reports alike
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
    run.report(Phase.FAILED, error.reason, error.message)


def _credentials(
    ctx: Context, sync: Sync, deadline: Deadline, max_age: float
) -> GitCredentials | None:
    """spec.secretRef's credentials, read at most every `max_age` seconds (the
    age git's shared cache accepts too: 0 when a person or a failure asks)."""
    if not sync.spec.secret_ref:
        return None
    name = sync.spec.secret_ref
    path = f"/api/v1/namespaces/{sync.key.namespace}/secrets/{name}"

    def read() -> dict[str, str]:
        try:
            # As the identity the sync applies as: a tenant cannot send a Secret it
            # may not read to a URL of its choosing.
            secret = ctx.client_for(sync).request("GET", path, deadline=deadline)
        except KubeError as e:  # the Secret's problem, whatever the API said: not git's
            raise AuthenticationFailed(
                f"spec.secretRef: Secret {sync.key.namespace}/{name}: {e.message}"
            ) from None
        return {
            k: base64.b64decode(v).decode("utf-8", "replace")
            for k, v in (secret.get("data") or {}).items()
        }

    sa = sync.spec.service_account_name or ctx.settings.default_service_account
    data = ctx.credentials(sync.key.namespace, name, sa, max_age, read)
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


def _pipeline(run: Run, sync: Sync) -> Outcome:
    """dependencies → fetch → render → ownership → apply → prune → health → status.

    Each stage runs `in_stage`: what it raises becomes that stage's condition.
    Once the operator is stopping, no further stage starts (ShuttingDown)."""
    timeout = sync.spec.timeout
    deadline = Deadline.after(timeout)
    ctx = run.ctx
    with in_stage(Stage.SPEC):
        exprs = _health_exprs(sync)
    spec_changed = sync.generation != run.status.observed_generation
    # A user asked for a reconcile now (gitferry.dev/requested-at, `flux reconcile`).
    asked = (
        sync.requested_at is not None and sync.requested_at != run.status.last_handled_reconcile_at
    )
    drift = ctx.drift
    drifted = drift is not None and drift.take_dirty(run.key)
    wait = ctx.wait_of(run.key)
    waiting = wait is not None and wait.generation == sync.generation and not asked
    if (
        wait is not None
        and waiting
        and time.monotonic() - wait.fetched_at < sync.spec.interval
        and not ctx.poked(run.key)  # a push webhook: ask git now
        and not drifted  # someone changed what was applied: apply again
    ):
        return _await_health(run, sync, wait, exprs)  # git was asked less than an interval ago
    if drift is not None:
        for warning in drift.warnings(run.key):  # someone keeps taking fields back
            run.event(WARNING, Reason.FIELD_MANAGER_CONFLICT, warning)
    checkout: Checkout | None = None
    # Dependencies first, read from the sync cache: a dependency that stops being
    # ready stops its dependents at their next interval, fast path or not.
    with in_stage(Stage.DEPENDENCIES, timeout):
        _dependencies(run, sync, deadline)
    # Variables read from ConfigMaps and Secrets can change with nothing else, and
    # health can change with nothing applied: such syncs reconcile in full at each
    # interval, as before.
    post_build = sync.spec.post_build
    reads_variables = post_build is not None and bool(post_build.substitute_from)
    if (
        drift is not None
        and not (spec_changed or asked or reads_variables or sync.spec.checks_health)
        and wait is None
        and run.status.ready == "True"
    ):
        # The no-op test: git's answer (shared cache) and the watch cache say nothing
        # changed since the last apply. No request, no write (issue 11).
        ctx.check_running("fetch")
        with in_stage(Stage.FETCH, timeout):
            checkout = _fetch(run, sync, False, deadline)
        if checkout.revision == run.status.last_applied_revision and drift.unchanged(
            run.key, checkout.revision, sync.generation
        ):
            return Outcome(f"revision={checkout.revision} unchanged (watch cache)")
    with in_stage(Stage.STATUS, timeout):
        if spec_changed:
            # kubectl wait right after a spec change must never see the old Ready.
            run.write(status.progressing(f"reconciling generation {sync.generation}"), deadline)
            run.progressing_written = True
    if checkout is None:
        ctx.check_running("fetch")
        with in_stage(Stage.FETCH, timeout):
            checkout = _fetch(run, sync, spec_changed or asked, deadline)
    kept: Wait | None = None  # a wait that goes on after this apply (same revision)
    if wait is not None:
        if waiting and checkout.revision == wait.revision:
            # The interval, or drift, during a wait: apply again (drift is
            # corrected), then keep waiting until the same deadline.
            kept = wait
        else:
            _supersede(run, sync, wait, checkout.revision, spec_changed, asked)
    with in_stage(Stage.RENDER, timeout):
        manifests = _render(run, sync, checkout, deadline)
    with in_stage(Stage.PRUNE, timeout):  # reading what the sync owned is prune's business
        old = _old_inventory(run, sync, manifests, checkout.revision, deadline)
    with in_stage(Stage.OWNERSHIP, timeout):
        plan = _own(run, sync, manifests, deadline)
    ctx.check_running("apply")
    if drift is not None:
        drift.applying(run.key)  # its own writes are no drift
    recorded = False
    try:
        with in_stage(Stage.APPLY, timeout):
            changes = _apply(run, sync, plan, old, checkout.revision, deadline)
        ctx.check_running("prune")  # never prune once shutdown began
        with in_stage(Stage.PRUNE, timeout):
            pruned, final = _prune(run, sync, plan, old, changes, checkout.revision, deadline)
        same = not spec_changed and checkout.revision == run.status.last_applied_revision
        run.drift = same and run.status.ready == "True"  # not a retry after a failure
        _count(run, changes, drift=same)  # the same revision and spec again: writes were drift
        with in_stage(Stage.STATUS, timeout):
            _check_outcome(run, plan, pruned, final, changes, deadline)
        if drift is not None:  # the baseline that watch events are compared with
            drift.record(run.key, checkout.revision, sync.generation, changes.live)
            recorded = True
    finally:
        if drift is not None and not recorded:
            drift.abandon(run.key)
    summary = f"revision={checkout.revision} {_counts(changes)}"
    if sync.spec.checks_health:
        with in_stage(Stage.HEALTH, timeout):
            targets = healthcheck.targets(
                plan.entries, sync.spec.health_checks, ctx.discovery, sync.key.namespace
            )
        run.fields["inventory"] = final
        until = kept.until if kept is not None else run.started + timeout
        wait = Wait(checkout.revision, sync.generation, until, targets,
                    fetched_at=time.monotonic(), changes=changes, info=run.info)  # fmt: skip
        if changes.changed:
            run.event(NORMAL, "Progressing", run.changes_message(checkout.revision, changes))
        # A wait that went on through this apply (kept) lasted: its end is news too.
        return _await_health(run, sync, wait, exprs, summary,
                             changed=changes.changed or kept is not None)  # fmt: skip
    with in_stage(Stage.STATUS, timeout):
        _succeed(run, final, changes, checkout.revision, deadline)
    return Outcome(summary)


def _health_exprs(sync: Sync) -> health.Exprs | None:
    """spec.healthCheckExprs compiled; InvalidSpec naming the entry when one does not."""
    if not sync.spec.health_check_exprs:
        return None
    try:
        return _compile_exprs(tuple(tuple(sorted(e.items())) for e in sync.spec.health_check_exprs))
    except health.ExprError as e:
        raise InvalidSpec(f"spec.{e}") from None


@functools.lru_cache(maxsize=256)
def _compile_exprs(entries: tuple[tuple[tuple[str, str], ...], ...]) -> health.Exprs:
    # Compiling CEL takes milliseconds; a waiting sync looks every two seconds.
    return health.compile_exprs([dict(e) for e in entries])


def _dependencies(run: Run, sync: Sync, deadline: Deadline) -> None:
    """Raise DependencyNotReady (or DependencyCycle, InvalidSpec) unless every
    sync in spec.dependsOn is Ready; remember the edges so that a dependency
    that becomes Ready wakes this sync at once."""
    ctx = run.ctx
    ctx.depends(sync.key, sync.spec.depends_on)  # before reading: no wake-up is lost
    dependencies.check(
        sync.key,
        sync.spec.depends_on,
        lambda key: ctx.sync_body(key, deadline, cached=True),
        allow_cross_namespace=not ctx.settings.no_cross_namespace_refs,
    )


def _supersede(
    run: Run, sync: Sync, wait: Wait, revision: str, spec_changed: bool, asked: bool
) -> None:
    """End the health check in progress: a newer revision, spec or request came."""
    run.ctx.set_wait(run.key, None)
    if revision != wait.revision:
        why = f"revision {revision}"
    elif spec_changed or wait.generation != sync.generation:
        why = f"generation {sync.generation}"
    else:
        why = "a requested reconcile"
    run.note = f" (the health check of {wait.revision} was superseded by {why})"
    log.info(
        "sync=%s action=health result=superseded revision=%s by=%r", run.key, wait.revision, why
    )
    run.event(NORMAL, Reason.HEALTH_CHECK_CANCELED,
              f"the health check of {wait.revision} was superseded by {why}")  # fmt: skip


def _await_health(
    run: Run,
    sync: Sync,
    wait: Wait,
    exprs: health.Exprs | None,
    summary: str = "",
    changed: bool = False,
) -> Outcome:
    """One look at the objects a health check waits for. Ready when all are
    healthy; HealthCheckFailed at once when one failed, or once spec.timeout
    ran out; otherwise the status says what is awaited, and the reconcile ends
    so that its worker serves other syncs until the next look."""
    ctx = run.ctx
    timeout = sync.spec.timeout
    deadline = Deadline.after(min(timeout, 30.0))
    if run.about(wait.revision) is None:  # a later look fetched nothing
        run.info = wait.info
    with in_stage(Stage.HEALTH, timeout):
        todo = [ref for ref in wait.targets if ref not in wait.healthy]
        client = ctx.client_for(sync)
        report = healthcheck.check(client, ctx.discovery, todo, exprs, deadline)
        wait.healthy = wait.healthy | report.current
        if report.done and len(todo) < len(wait.targets):
            # kstatus: healthy means every object Current at once. Those seen
            # Current earlier may have broken (or gone) since: one look at all.
            report = healthcheck.check(client, ctx.discovery, wait.targets, exprs, deadline)
            wait.healthy = report.current
        total = len(wait.targets)
        if report.failed:
            ctx.set_wait(run.key, None)
            raise HealthCheckFailed(
                f"{wait.revision}: {len(report.failed)} of {total} object(s) failed: "
                + healthcheck.describe(report.failed)
            )
        if not report.done and time.monotonic() >= wait.until:
            ctx.set_wait(run.key, None)
            raise HealthCheckFailed(
                f"{wait.revision}: timed out after {format_seconds(timeout)} (spec.timeout) waiting "
                f"for {len(report.pending)} of {total} object(s) to become healthy: "
                + healthcheck.describe(report.pending)
            )
    with in_stage(Stage.STATUS, timeout):
        if report.done:
            ctx.set_wait(run.key, None)
            waited = time.monotonic() - (wait.until - timeout)
            run.write(
                status.succeeded(f"Applied revision: {wait.revision}; {total} object(s) healthy"),
                deadline,
                last_applied_revision=wait.revision,
            )
            if changed or summary == "":  # something changed, or the wait lasted
                run.event(NORMAL, "ReconciliationSucceeded",
                          f"{wait.revision}: health check passed in {format_seconds(waited)}")  # fmt: skip
            log.info("sync=%s revision=%s action=health result=healthy objects=%d", run.key,
                     wait.revision, total)  # fmt: skip
            run.report(Phase.SUCCEEDED, Reason.SUCCEEDED,
                       f"Applied revision: {wait.revision}; {total} object(s) healthy",
                       wait.revision, wait.changes)  # fmt: skip
            return Outcome(summary or f"revision={wait.revision} healthy={total}")
        ctx.set_wait(run.key, wait)
        run.write(
            status.progressing(
                f"{wait.revision} applied; waiting for {len(report.pending)} of {total} object(s) "
                "to become healthy: " + healthcheck.describe(report.pending)
            ),
            deadline,
        )
    left = max(0.1, wait.until - time.monotonic())
    return Outcome(summary or f"revision={wait.revision} waiting",
                   again_in=min(ctx.settings.health_poll_interval, left))  # fmt: skip


def _fetch(run: Run, sync: Sync, fresh: bool, deadline: Deadline) -> Checkout:
    """`fresh`: a new spec or a user's request (a person is waiting): ask git,
    whatever other syncs just heard."""
    # The shared cache answers "what is the branch at?" for up to an interval. A new
    # spec, a user's request to reconcile now, or a retry after a failure (a commit
    # pushed before a Secret was fixed) asks the remote afresh.
    failing = run.status.ready != "True"
    poked = run.ctx.poked(sync.key)  # a push webhook named it (receiver.py)
    max_age = 0.0 if fresh or failing or poked else sync.spec.interval
    creds = _credentials(run.ctx, sync, deadline, max_age)
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
    _describe(run, checkout, deadline)
    return checkout


def _describe(run: Run, checkout: Checkout, deadline: Deadline) -> None:
    """Read who changed what since the revision applied last (offline, bounded,
    never failing: what cannot be read is unknown, and the log says why)."""
    since = run.status.last_applied_revision
    run.info = info = run.ctx.source.describe(checkout, since, deadline)
    if checkout.revision != since:
        why = info.unknown or info.paths.unknown
        log.info("sync=%s revision=%s action=history paths=%s%s", run.key, checkout.revision,
                 info.paths.describe(), f" why={why!r}" if why else "")  # fmt: skip


def _render(run: Run, sync: Sync, checkout: Checkout, deadline: Deadline) -> list[Manifest]:
    ctx = run.ctx
    variables = None
    if sync.spec.post_build is not None:  # read before taking a render slot: cluster I/O
        client = ctx.client_for(sync)  # a tenant reads only what it may read
        variables = postbuild.variables(
            client, sync.key.namespace, sync.spec.post_build, deadline, run.secrets
        )
    slot = ctx.render_slot(deadline)
    try:
        manifests = render(checkout.path, sync.spec.path, ctx.settings.limits, deadline)
        if variables is not None:
            # Before namespaces are assigned: a name, namespace or kind may be a ${var}.
            manifests = substitute(
                manifests,
                variables,
                strict=ctx.settings.strict_substitutions,
                max_bytes=ctx.settings.limits.max_total_bytes,
                disabled_annotation=ANNOTATION_SUBSTITUTE,
                disabled_value=DISABLED,
                always=False,
                deadline=deadline,
            )
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
    if revision != run.status.last_applied_revision:
        run.report(Phase.PENDING, Reason.PROGRESSING, f"applying {revision}", revision)
    # The inventory grows before any write (a crash leaves nothing unknown). A
    # sync with no inventory yet needs no write for that: its ApplySet parent,
    # just written, names the kinds and namespaces, and its objects' labels do
    # the rest (_old_inventory). When the status already says "reconciling" this
    # generation, that write is left out (one request of a new sync's few).
    new_sync = run.status.inventory is None and run.progressing_written
    if not new_sync and (
        revision != run.status.last_applied_revision or grown != (run.status.inventory or ())
    ):
        run.write(
            # After a failure, kstatus readers see that this is a retry.
            status.progressing(
                f"applying {revision}{run.note}", retrying=run.status.ready == "False"
            ),
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


def _check_outcome(
    run: Run,
    plan: Plan,
    pruned: PruneResult,
    final: tuple[InventoryEntry, ...],
    changes: ChangeSet,
    deadline: Deadline,
) -> None:
    """Raise (after writing the inventory) when objects were left alone for
    another sync or could not be pruned."""
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
            revision = run.fields.get("last_attempted_revision", "")
            run.event(NORMAL, "Progressing", run.changes_message(revision, changes))
        raise error


def _succeed(
    run: Run,
    final: tuple[InventoryEntry, ...],
    changes: ChangeSet,
    revision: str,
    deadline: Deadline,
) -> None:
    run.write(
        status.succeeded(f"Applied revision: {revision}"),
        deadline,
        inventory=final,
        last_applied_revision=revision,
    )
    if changes.changed:
        run.event(NORMAL, "ReconciliationSucceeded", run.changes_message(revision, changes))
    run.report(Phase.SUCCEEDED, Reason.SUCCEEDED, f"Applied revision: {revision}", revision,
               changes)  # fmt: skip


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


def _count(run: Run, changes: ChangeSet, drift: bool) -> None:
    """Objects by action in the metrics; with `drift`, the written ones as drift corrected."""
    run.ctx.metrics.objects({a.value: changes.count(a) for a in Action})
    if drift:
        written = sum(
            changes.count(a) for a in (Action.CREATED, Action.CONFIGURED, Action.RECREATED)
        )
        if written:
            run.ctx.metrics.drift_corrected(run.key.namespace, run.key.name, written)


def _counts(changes: ChangeSet) -> str:
    return " ".join(f"{a.value}={changes.count(a)}" for a in Action)
