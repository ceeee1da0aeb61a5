"""The GitRepositorySync resource as typed values.

The custom resource body is parsed once, at the edge, into these frozen
dataclasses; nothing below the handlers pokes at the raw dict.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .constants import ANNOTATION_REQUESTED_AT, GROUP, PLURAL, READY, VERSION
from .errors import InvalidSpec
from .source import GitRef

log = logging.getLogger("gitferry.api")

# Go-style durations, as Flux and kubectl write them: "1h30m", "45s", "500ms".
_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

DEFAULT_INTERVAL = "5m"
DEFAULT_TIMEOUT = "2m"
# Bounds on every duration field (the CRD's CEL rules say the same): below a
# second a sync spins a reconcile loop, past 30 days a timer overflows or a
# failure is never retried in practice.
MIN_DURATION_SECONDS = 1.0
MAX_DURATION_SECONDS = 30 * 24 * 3600.0


def parse_duration_text(text: str) -> float:
    """Seconds in a well-formed Go-style duration, unbounded; ValueError otherwise."""
    if not isinstance(text, str) or not _DURATION_RE.match(text) or len(text) > 32:
        raise ValueError(f"{text!r} is not a duration")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


def parse_duration(text: str, field_name: str) -> float:
    """Seconds in a Go-style duration ("1h30m", "45s", "500ms") between 1s and
    720h; InvalidSpec naming the field otherwise."""
    try:
        seconds = parse_duration_text(text)
    except ValueError:
        raise InvalidSpec(
            f"spec.{field_name}: {text!r} is not a duration like 30s, 5m or 1h"
        ) from None
    if not MIN_DURATION_SECONDS <= seconds <= MAX_DURATION_SECONDS:
        raise InvalidSpec(f"spec.{field_name}: {text!r} must be between 1s and 720h")
    return seconds


@dataclass(frozen=True)
class SyncKey:
    """Identifies one GitRepositorySync."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class HealthCheckRef:
    """One entry of spec.healthChecks: an object to wait for, applied or not.
    `namespace` is None when the entry names none: the sync's namespace for a
    namespaced kind, nothing for a cluster-scoped one (decided with discovery)."""

    group: str
    kind: str
    name: str
    namespace: str | None = None


@dataclass(frozen=True)
class SubstituteRef:
    """One entry of spec.postBuild.substituteFrom."""

    kind: str  # "ConfigMap" | "Secret"
    name: str
    optional: bool = False


@dataclass(frozen=True)
class PostBuild:
    """spec.postBuild: variables for ${var} substitution (Flux's postBuild)."""

    substitute: dict[str, str] = field(default_factory=dict)
    substitute_from: tuple[SubstituteRef, ...] = ()


@dataclass(frozen=True)
class SyncSpec:
    url: str
    ref: GitRef = field(default_factory=GitRef)
    path: str = "."
    interval: float = 300.0
    retry_interval: float = 300.0
    timeout: float = 120.0
    secret_ref: str | None = None
    prune: bool = True
    target_namespace: str | None = None
    service_account_name: str | None = None
    force: bool = False
    allow_empty: bool = False
    suspend: bool = False
    wait: bool = False
    health_checks: tuple[HealthCheckRef, ...] = ()
    # Flux's healthCheckExprs entries as written ({apiVersion, kind, current,
    # inProgress, failed}); the health library compiles them.
    health_check_exprs: tuple[dict[str, str], ...] = ()
    depends_on: tuple[SyncKey, ...] = ()
    post_build: PostBuild | None = None

    @property
    def checks_health(self) -> bool:
        """True when the sync becomes Ready only once objects are healthy."""
        return self.wait or bool(self.health_checks)


def sync_path(key: SyncKey) -> str:
    """The API path of one GitRepositorySync."""
    return f"/apis/{GROUP}/{VERSION}/namespaces/{key.namespace}/{PLURAL}/{key.name}"


@dataclass(frozen=True)
class InventoryEntry:
    """`<namespace>_<name>_<group>_<Kind>` (Flux's format) plus the version it was applied as."""

    id: str
    v: str


def _valid_id(value: Any) -> bool:
    """An inventory id gitferry can act on (`ns_name_group_Kind`, at least four
    parts). Another shape (a hand edit, a restore from elsewhere) is left out:
    an object it would name is never deleted on a guess, and the labels still
    find what the sync owns."""
    if not isinstance(value, str) or value.count("_") < 3:
        if value:
            log.warning("action=inventory-entry-ignored id=%r", value)
        return False
    return True


def now() -> str:
    """The current time as the API writes it (RFC 3339, seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Condition:
    """One entry of status.conditions (metav1.Condition's fields)."""

    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str
    observed_generation: int = 0
    last_transition_time: str = ""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Condition:
        return cls(
            type=str(raw.get("type", "")),
            status=str(raw.get("status", "Unknown")),
            reason=str(raw.get("reason", "")),
            message=str(raw.get("message", "")),
            observed_generation=int(raw.get("observedGeneration") or 0),
            last_transition_time=str(raw.get("lastTransitionTime", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": self.status,
            "observedGeneration": self.observed_generation,
            "lastTransitionTime": self.last_transition_time,
            "reason": self.reason,
            "message": self.message,
        }


@dataclass(frozen=True)
class SyncStatus:
    """status of a GitRepositorySync, read and written through this one model.

    `inventory` is None when the status holds none (a new sync, or a status lost
    in a backup restore), and () when the sync owns nothing."""

    observed_generation: int | None = None
    conditions: tuple[Condition, ...] = ()
    last_attempted_revision: str | None = None
    last_applied_revision: str | None = None
    last_handled_reconcile_at: str | None = None
    inventory: tuple[InventoryEntry, ...] | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> SyncStatus:
        raw = raw if isinstance(raw, dict) else {}
        inv_raw = raw.get("inventory")
        inventory: tuple[InventoryEntry, ...] | None = None
        if isinstance(inv_raw, dict):
            inventory = tuple(
                InventoryEntry(id=str(e["id"]), v=str(e.get("v", "")))
                for e in inv_raw.get("entries") or []
                if isinstance(e, dict) and _valid_id(e.get("id"))
            )
        generation = raw.get("observedGeneration")
        return cls(
            observed_generation=int(generation) if isinstance(generation, int) else None,
            conditions=tuple(
                Condition.from_dict(c) for c in raw.get("conditions") or [] if isinstance(c, dict)
            ),
            last_attempted_revision=_opt_str(raw.get("lastAttemptedRevision")),
            last_applied_revision=_opt_str(raw.get("lastAppliedRevision")),
            last_handled_reconcile_at=_opt_str(raw.get("lastHandledReconcileAt")),
            inventory=inventory,
        )

    def to_dict(self) -> dict[str, Any]:
        """The status as the API stores it; absent fields are left out."""
        out: dict[str, Any] = {}
        if self.observed_generation is not None:
            out["observedGeneration"] = self.observed_generation
        if self.conditions:
            out["conditions"] = [c.to_dict() for c in self.conditions]
        for key, value in (
            ("lastAttemptedRevision", self.last_attempted_revision),
            ("lastAppliedRevision", self.last_applied_revision),
            ("lastHandledReconcileAt", self.last_handled_reconcile_at),
        ):
            if value is not None:
                out[key] = value
        if self.inventory is not None:
            out["inventory"] = {"entries": [{"id": e.id, "v": e.v} for e in self.inventory]}
        return out

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    @property
    def ready(self) -> str | None:
        """The Ready condition's status ("True", "False", "Unknown"), or None."""
        c = self.condition(READY)
        return c.status if c else None


@dataclass(frozen=True)
class SyncMeta:
    """What a sync's metadata says; parsing it never fails."""

    key: SyncKey
    uid: str = ""
    generation: int = 0
    requested_at: str | None = None  # gitferry.dev/requested-at
    deleting: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Sync:
    """One GitRepositorySync, parsed once at the edge: metadata, spec, status."""

    meta: SyncMeta
    spec: SyncSpec
    status: SyncStatus

    @property
    def key(self) -> SyncKey:
        return self.meta.key

    @property
    def uid(self) -> str:
        return self.meta.uid

    @property
    def generation(self) -> int:
        return self.meta.generation

    @property
    def requested_at(self) -> str | None:
        return self.meta.requested_at


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def parse_spec(raw: dict[str, Any], namespace: str = "") -> SyncSpec:
    """SyncSpec from the CR's spec; the CRD schema already rejected most bad input,
    this re-checks what a schema cannot say (and what a cluster without our CRD
    version might let through). `namespace` is the sync's own: the default for
    dependsOn entries that name none. Raises InvalidSpec naming the field."""
    url = raw.get("url")
    if not isinstance(url, str) or not url.strip():
        raise InvalidSpec("spec.url: must be a non-empty git URL")
    ref_raw = raw.get("ref") or {}
    ref = GitRef(
        branch=_opt_str(ref_raw.get("branch")),
        tag=_opt_str(ref_raw.get("tag")),
        semver=_opt_str(ref_raw.get("semver")),
        commit=_opt_str(ref_raw.get("commit")),
    )
    chosen = [k for k in ("branch", "tag", "semver", "commit") if getattr(ref, k)]
    if len(chosen) > 1 and set(chosen) != {"branch", "commit"}:
        raise InvalidSpec(
            f"spec.ref: set at most one of branch, tag, semver, commit (branch with commit "
            f"is allowed); got {', '.join(chosen)}"
        )
    path = raw.get("path") or "."
    interval = parse_duration(raw.get("interval") or DEFAULT_INTERVAL, "interval")
    retry = raw.get("retryInterval")
    timeout = parse_duration(raw.get("timeout") or DEFAULT_TIMEOUT, "timeout")
    secret = raw.get("secretRef") or {}
    depends = tuple(
        SyncKey(namespace=_opt_str(d.get("namespace")) or namespace, name=str(d["name"]))
        for d in raw.get("dependsOn") or []
        if isinstance(d, dict) and d.get("name")
    )
    return SyncSpec(
        health_checks=_health_checks(raw.get("healthChecks")),
        health_check_exprs=_health_check_exprs(raw.get("healthCheckExprs")),
        post_build=_post_build(raw.get("postBuild")),
        url=url.strip(),
        ref=ref,
        path=path,
        interval=interval,
        retry_interval=parse_duration(retry, "retryInterval") if retry else interval,
        timeout=timeout,
        secret_ref=_opt_str(secret.get("name")),
        prune=bool(raw.get("prune", True)),
        target_namespace=_opt_str(raw.get("targetNamespace")),
        service_account_name=_opt_str(raw.get("serviceAccountName")),
        force=bool(raw.get("force", False)),
        allow_empty=bool(raw.get("allowEmpty", False)),
        suspend=bool(raw.get("suspend", False)),
        wait=bool(raw.get("wait", False)),
        depends_on=depends,
    )


def _list(raw: Any, field_name: str) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
        raise InvalidSpec(f"spec.{field_name}: must be a list of objects")
    return raw


def _str(entry: dict[str, Any], key: str, where: str, required: bool = True) -> str:
    value = entry.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value:
        raise InvalidSpec(f"spec.{where}.{key}: must be a non-empty string")
    return value


def _health_checks(raw: Any) -> tuple[HealthCheckRef, ...]:
    out = []
    for i, e in enumerate(_list(raw, "healthChecks")):
        where = f"healthChecks[{i}]"
        group, _, _version = _str(e, "apiVersion", where).rpartition("/")
        out.append(
            HealthCheckRef(
                group=group,
                kind=_str(e, "kind", where),
                name=_str(e, "name", where),
                namespace=_str(e, "namespace", where, required=False) or None,
            )
        )
    return tuple(out)


def _health_check_exprs(raw: Any) -> tuple[dict[str, str], ...]:
    out = []
    for i, e in enumerate(_list(raw, "healthCheckExprs")):
        where = f"healthCheckExprs[{i}]"
        entry = {k: _str(e, k, where) for k in ("apiVersion", "kind", "current")}
        for k in ("inProgress", "failed"):
            if e.get(k) is not None:
                entry[k] = _str(e, k, where)
        out.append(entry)
    return tuple(out)


def _post_build(raw: Any) -> PostBuild | None:
    if not raw:
        return None
    if not isinstance(raw, dict):
        raise InvalidSpec("spec.postBuild: must be an object")
    substitute = raw.get("substitute") or {}
    if not isinstance(substitute, dict) or not all(isinstance(v, str) for v in substitute.values()):
        raise InvalidSpec("spec.postBuild.substitute: must map names to strings")
    refs = []
    for i, e in enumerate(_list(raw.get("substituteFrom"), "postBuild.substituteFrom")):
        where = f"postBuild.substituteFrom[{i}]"
        kind = _str(e, "kind", where)
        if kind not in ("ConfigMap", "Secret"):
            raise InvalidSpec(f"spec.{where}.kind: must be ConfigMap or Secret, not {kind!r}")
        optional = e.get("optional", False)
        if not isinstance(optional, bool):
            raise InvalidSpec(f"spec.{where}.optional: must be true or false")
        refs.append(SubstituteRef(kind, _str(e, "name", where), optional))
    return PostBuild(substitute=dict(substitute), substitute_from=tuple(refs))


def parse_meta(body: dict[str, Any]) -> SyncMeta:
    """SyncMeta from a whole CR body; never raises."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels")
    labels = labels if isinstance(labels, dict) else {}
    annotations = meta.get("annotations")
    annotations = annotations if isinstance(annotations, dict) else {}
    return SyncMeta(
        key=SyncKey(namespace=str(meta.get("namespace", "")), name=str(meta.get("name", ""))),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        requested_at=_opt_str(annotations.get(ANNOTATION_REQUESTED_AT)),
        deleting=bool(meta.get("deletionTimestamp")),
        labels={str(k): str(v) for k, v in labels.items()},
        annotations={str(k): str(v) for k, v in annotations.items()},
    )


def parse_sync(body: dict[str, Any]) -> Sync:
    """A Sync from a whole CR body. Spec errors raise InvalidSpec naming the field."""
    meta = parse_meta(body)
    return Sync(
        meta=meta,
        spec=parse_spec(body.get("spec") or {}, meta.key.namespace),
        status=SyncStatus.from_dict(body.get("status")),
    )
