"""The apply engine: server-side apply of a set of objects, validated first.

It knows nothing about GitRepositorySync: objects in, a ChangeSet out.

Per stage (Namespaces and CRDs first, then the rest): every object is dry-run
with server-side apply before any is written; if any fails, nothing of the
stage (nor of later ones) is written and every failure is reported at once.
An object whose dry-run result equals the live object is not written at all.

A write that fails after its dry-run passed (the object changed meanwhile, the
API server's admission) names the objects written before it.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from ..deadline import Deadline
from .client import APPLY_PATCH, JSON_PATCH, Kube
from .discovery import Discovery, Resource
from .errors import ApplyError, KubeError
from .kinds import NEVER_RECREATE, apply_rank, is_first_stage
from .managedfields import applied_fields, takeover_patch
from .refs import ObjRef

# How the API server words "this field cannot change". Older servers reject a
# StatefulSet change as "Forbidden: updates to statefulset spec for fields other
# than 'replicas', ... are forbidden" without the word "immutable".
_IMMUTABLE = re.compile(
    r"immutable|may not change|cannot be changed|can not be changed"
    r"|updates to \w+ spec for fields other than",
    re.I,
)

T = TypeVar("T")
R = TypeVar("R")


class Action(StrEnum):
    CREATED = "created"
    CONFIGURED = "configured"
    RECREATED = "recreated"
    UNCHANGED = "unchanged"
    SKIPPED = "skipped"  # reconcile disabled and already there
    DELETED = "deleted"


_WRITTEN = frozenset({Action.CREATED, Action.CONFIGURED, Action.RECREATED})


@dataclass(frozen=True)
class Item:
    """One object to apply, with where it came from and its per-object policy."""

    obj: dict[str, Any]
    source: str = ""
    force: bool = False  # delete and recreate on an immutable-field change
    create_only: bool = False  # created once, then left alone
    # Adopted: take over the field ownership of people's tools first
    # (managedfields.takeover_patch), so fields git stops setting go away.
    take_over: bool = False

    @property
    def ref(self) -> ObjRef:
        return ObjRef.of(self.obj)

    def where(self) -> str:
        return f"{self.ref.describe()} ({self.source})" if self.source else self.ref.describe()


@dataclass(frozen=True)
class Change:
    ref: ObjRef
    action: Action
    version: str = ""


@dataclass
class ChangeSet:
    changes: list[Change] = field(default_factory=list)
    # Each object as the API server returned it after this apply (the apply's
    # response, or the live object when nothing was written): its managedFields
    # are the baseline that drift detection compares watch events with.
    live: dict[ObjRef, dict[str, Any]] = field(default_factory=dict)

    def count(self, action: Action) -> int:
        return sum(1 for c in self.changes if c.action == action)

    @property
    def changed(self) -> bool:
        return any(c.action not in (Action.UNCHANGED, Action.SKIPPED) for c in self.changes)

    def summary(self) -> str:
        """`created 3, configured 1, unchanged 40` (actions with a zero count left out)."""
        parts = [f"{a.value} {self.count(a)}" for a in Action if self.count(a)]
        return ", ".join(parts) or "no objects"


@dataclass(frozen=True)
class Options:
    field_manager: str
    concurrency: int = 8
    # How long to wait for a new CRD to become Established.
    crd_wait_seconds: float = 30.0


def _parallel(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out.pop("status", None)
    meta = out.get("metadata") or {}
    for k in ("managedFields", "resourceVersion", "generation"):
        meta.pop(k, None)
    return out


def stages(items: Iterable[Item]) -> list[list[Item]]:
    """[first stage, the rest], each sorted by kind order, then by name."""
    first: list[Item] = []
    rest: list[Item] = []
    for it in items:
        (first if is_first_stage(it.ref.group, it.ref.kind) else rest).append(it)
    key: Callable[[Item], tuple[int, ObjRef]] = lambda it: (apply_rank(it.ref.kind), it.ref)  # noqa: E731
    return [sorted(s, key=key) for s in (first, rest) if s]


class Engine:
    def __init__(self, kube: Kube, discovery: Discovery, options: Options) -> None:
        self.kube = kube
        self.discovery = discovery
        self.options = options

    # --- reading ------------------------------------------------------------
    def resource_for(self, obj: dict[str, Any]) -> Resource | None:
        return self.discovery.resource(obj.get("apiVersion", ""), obj.get("kind", ""))

    def get(self, obj: dict[str, Any], deadline: Deadline) -> dict[str, Any] | None:
        """The live object, or None when it (or its kind) does not exist."""
        res = self.resource_for(obj)
        if res is None:
            return None
        ref = ObjRef.of(obj)
        try:
            return self.kube.request("GET", res.path(ref.namespace, ref.name), deadline=deadline)
        except KubeError as e:
            if e.not_found:
                return None
            raise

    def read_live(
        self, items: Sequence[Item], deadline: Deadline
    ) -> dict[ObjRef, dict[str, Any] | None]:
        def one(it: Item) -> tuple[ObjRef, dict[str, Any] | None]:
            try:
                return it.ref, self.get(it.obj, deadline)
            except KubeError as e:
                raise ApplyError(
                    f"{it.where()}: reading the live object failed: {e.message}"
                ) from None

        return dict(_parallel(one, items, self.options.concurrency))

    # --- writing ------------------------------------------------------------
    def _apply(self, it: Item, deadline: Deadline, dry_run: bool) -> dict[str, Any]:
        res = self.resource_for(it.obj)
        if res is None:
            raise KubeError(
                404, "NotFound", f"the API server has no {it.obj.get('apiVersion')} {it.ref.kind}"
            )
        query = {"fieldManager": self.options.field_manager, "force": "true"}
        if dry_run:
            query["dryRun"] = "All"
        return self.kube.request(
            "PATCH",
            res.path(it.ref.namespace, it.ref.name),
            deadline=deadline,
            query=query,
            body=it.obj,
            content_type=APPLY_PATCH,
        )

    def _kind_gone(self, it: Item, deadline: Deadline) -> bool:
        """After a 404 on an apply: is it the kind (a CRD deleted) that is missing?"""
        self.discovery.refresh(deadline)
        return self.resource_for(it.obj) is None

    def _takeover(
        self, it: Item, live: dict[str, Any], dry: dict[str, Any]
    ) -> list[dict[str, Any]] | None:
        """The take-over patch of an adopted object: the fields the dry-run says
        this apply sets, moved from people's tools to the field manager."""
        applying = applied_fields(dry, self.options.field_manager)
        if applying is None:
            return None
        return takeover_patch(
            live, self.options.field_manager, str(it.obj.get("apiVersion")), applying
        )

    def _recreate(self, it: Item, deadline: Deadline) -> dict[str, Any]:
        res = self.resource_for(it.obj)
        assert res is not None
        path = res.path(it.ref.namespace, it.ref.name)
        try:
            self.kube.request(
                "DELETE", path, deadline=deadline, body={"propagationPolicy": "Background"}
            )
        except KubeError as e:
            if not e.not_found:
                raise
        while True:  # wait until it is gone (finalizers), bounded by the deadline
            try:
                self.kube.request("GET", path, deadline=deadline)
            except KubeError as e:
                if e.not_found:
                    break
                raise
            deadline.remaining(f"waiting for {it.ref} to be deleted for recreation")
            time.sleep(0.2)
        return self._apply(it, deadline, dry_run=False)

    def apply(
        self,
        items: Sequence[Item],
        deadline: Deadline,
        live: dict[ObjRef, dict[str, Any] | None] | None = None,
    ) -> ChangeSet:
        """Apply all items, stage by stage; ApplyError lists every object that failed.

        `live`: the objects as read (None: absent), read here when missing."""
        live = dict(live or {})
        result = ChangeSet()
        for stage in stages(items):
            missing = [it for it in stage if it.ref not in live]
            live.update(self.read_live(missing, deadline))
            earlier = [c.ref for c in result.changes if c.action in _WRITTEN]
            changes = self._apply_stage(stage, live, deadline, result.live, earlier)
            result.changes += changes
            # Only CRDs this stage wrote can be new to the API: an unchanged one costs
            # no wait and no discovery refresh.
            written = {c.ref for c in changes if c.action in _WRITTEN}
            crds = [
                it
                for it in stage
                if it.ref.kind == "CustomResourceDefinition" and it.ref in written
            ]
            if crds:
                self._wait_established(crds, deadline)
                self.discovery.refresh(deadline)
        return result

    def _apply_stage(
        self,
        stage: list[Item],
        live: dict[ObjRef, dict[str, Any] | None],
        deadline: Deadline,
        after: dict[ObjRef, dict[str, Any]],
        written: list[ObjRef] | None = None,
    ) -> list[Change]:
        """Dry-run, then write, one stage; `after` receives each object as it now
        is; `written`: what earlier stages wrote (named when a write fails)."""
        dry_runs: dict[ObjRef, dict[str, Any]] = {}  # what each dry-run returned

        # 1. Dry-run everything; collect every failure.
        def plan(it: Item) -> tuple[Item, str, str | None]:
            current = live.get(it.ref)
            if it.create_only and current is not None:
                return it, "skip", None
            try:
                dry = dry_runs[it.ref] = self._apply(it, deadline, dry_run=True)
            except KubeError as e:
                if current is not None and e.invalid and _IMMUTABLE.search(e.message):
                    key = (it.ref.group, it.ref.kind)
                    if key in NEVER_RECREATE:
                        return (
                            it,
                            "error",
                            (
                                f"{it.where()}: {e.message} (a {it.ref.kind} is never deleted to be "
                                "recreated)"
                            ),
                        )
                    if it.force:
                        return it, "recreate", None
                    return (
                        it,
                        "error",
                        (
                            f"{it.where()}: {e.message} (an immutable field changed: set spec.force "
                            "or the annotation gitferry.dev/force: enabled to recreate it)"
                        ),
                    )
                if e.not_found and self._kind_gone(it, deadline):
                    kind = f"{it.obj.get('apiVersion')} {it.ref.kind}"
                    return (
                        it,
                        "error",
                        f"{it.where()}: the API serves no {kind} (is its CRD installed?)",
                    )
                return it, "error", f"{it.where()}: {e.message}"
            if current is None:
                return it, "create", None
            rv = (dry.get("metadata") or {}).get("resourceVersion")
            if rv != (current.get("metadata") or {}).get("resourceVersion"):
                # Another controller wrote it since we read it (a Deployment's
                # revision annotation): compare with what is there now.
                current = self.get(it.obj, deadline) or current
                live[it.ref] = current  # the take-over patch tests this resourceVersion
            if it.take_over and self._takeover(it, current, dry) is not None:
                return it, "configure", None
            if _comparable(dry) == _comparable(current):
                return it, "unchanged", None
            return it, "configure", None

        plans = _parallel(plan, stage, self.options.concurrency)
        errors = [msg for _, _, msg in plans if msg]
        if errors:
            raise ApplyError(
                f"{len(errors)} object(s) failed validation, nothing was applied: "
                + "; ".join(errors)
            )

        # 2. Write, in kind order; objects of one rank in parallel.
        changes: list[Change] = []
        ranks = sorted({apply_rank(it.ref.kind) for it, _, _ in plans})
        for rank in ranks:
            batch = [(it, what) for it, what, _ in plans if apply_rank(it.ref.kind) == rank]

            def write(pair: tuple[Item, str]) -> Change | str:
                it, what = pair
                version = it.obj.get("apiVersion", "").rpartition("/")[2]
                current = live.get(it.ref)
                if what in ("skip", "unchanged"):
                    if current is not None:
                        after[it.ref] = current
                    action = Action.SKIPPED if what == "skip" else Action.UNCHANGED
                    return Change(it.ref, action, version)
                try:
                    if what == "recreate":
                        after[it.ref] = self._recreate(it, deadline)
                        return Change(it.ref, Action.RECREATED, version)
                    patch = (
                        self._takeover(it, current, dry_runs[it.ref])
                        if it.take_over and current and it.ref in dry_runs
                        else None
                    )
                    if patch is not None:
                        res = self.resource_for(it.obj)
                        assert res is not None  # the dry-run found it
                        self.kube.request("PATCH", res.path(it.ref.namespace, it.ref.name),
                                          deadline=deadline, body=patch,
                                          content_type=JSON_PATCH)  # fmt: skip
                    after[it.ref] = self._apply(it, deadline, dry_run=False)
                except KubeError as e:
                    return f"{it.where()}: {e.message}"
                action = Action.CREATED if what == "create" else Action.CONFIGURED
                return Change(it.ref, action, version)

            done = _parallel(write, batch, self.options.concurrency)
            failed = [d for d in done if isinstance(d, str)]
            changes += [d for d in done if not isinstance(d, str)]
            if failed:  # every failure of the rank at once; later ranks are not written
                wrote = (written or []) + [c.ref for c in changes if c.action in _WRITTEN]
                before = (
                    f" ({len(wrote)} object(s) written before it failed: "
                    + ", ".join(str(r) for r in wrote[:10])
                    + (f" and {len(wrote) - 10} more" if len(wrote) > 10 else "")
                    + "; the rest not)"
                    if wrote
                    else " (nothing was written)"
                )
                raise ApplyError("; ".join(failed) + before)
        return changes

    def _wait_established(self, crds: list[Item], deadline: Deadline) -> None:
        end = time.monotonic() + self.options.crd_wait_seconds
        pending = {it.ref.name for it in crds}
        while pending:
            for name in sorted(pending):
                crd = self.kube.request(
                    "GET",
                    f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}",
                    deadline=deadline,
                )
                conds = (crd.get("status") or {}).get("conditions") or []
                if any(c.get("type") == "Established" and c.get("status") == "True" for c in conds):
                    pending.discard(name)
            if not pending:
                return
            if time.monotonic() > end:
                raise ApplyError(
                    "CustomResourceDefinition(s) not Established in time: "
                    + ", ".join(sorted(pending))
                )
            deadline.remaining("waiting for CRDs to become Established")
            time.sleep(0.2)
