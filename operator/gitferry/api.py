"""The GitRepositorySync resource as typed values.

The custom resource body is parsed once, at the edge, into these frozen
dataclasses; nothing below the handlers pokes at the raw dict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .constants import ANNOTATION_REQUESTED_AT, GROUP, PLURAL, VERSION
from .errors import InvalidSpec

# Go-style durations, as Flux and kubectl write them: "1h30m", "45s", "500ms".
_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

DEFAULT_INTERVAL = "5m"
DEFAULT_TIMEOUT = "2m"


def parse_duration(text: str, field_name: str) -> float:
    """Seconds in a Go-style duration; InvalidSpec naming the field otherwise."""
    if not isinstance(text, str) or not _DURATION_RE.match(text):
        raise InvalidSpec(f"spec.{field_name}: {text!r} is not a duration like 30s, 5m or 1h")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))


@dataclass(frozen=True)
class GitRef:
    branch: str | None = None
    tag: str | None = None
    semver: str | None = None
    commit: str | None = None


@dataclass(frozen=True)
class ObjectRef:
    name: str
    namespace: str | None = None


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
    depends_on: tuple[ObjectRef, ...] = ()
    post_build: dict[str, Any] | None = None


@dataclass(frozen=True)
class SyncKey:
    """Identifies one GitRepositorySync."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def sync_path(key: SyncKey) -> str:
    """The API path of one GitRepositorySync."""
    return f"/apis/{GROUP}/{VERSION}/namespaces/{key.namespace}/{PLURAL}/{key.name}"


@dataclass(frozen=True)
class InventoryEntry:
    """`<namespace>_<name>_<group>_<Kind>` plus the version it was applied as."""

    id: str
    v: str


@dataclass(frozen=True)
class SyncStatus:
    observed_generation: int | None = None
    last_attempted_revision: str | None = None
    last_applied_revision: str | None = None
    last_handled_reconcile_at: str | None = None
    inventory: tuple[InventoryEntry, ...] | None = None


@dataclass(frozen=True)
class Sync:
    key: SyncKey
    uid: str
    generation: int
    spec: SyncSpec
    status: SyncStatus
    requested_at: str | None = None
    deleting: bool = False


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def parse_spec(raw: dict[str, Any]) -> SyncSpec:
    """SyncSpec from the CR's spec; the CRD schema already rejected most bad input,
    this re-checks what a schema cannot say (and what a cluster without our CRD
    version might let through)."""
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
        ObjectRef(name=d["name"], namespace=_opt_str(d.get("namespace")))
        for d in raw.get("dependsOn") or []
        if isinstance(d, dict) and d.get("name")
    )
    return SyncSpec(
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
        post_build=raw.get("postBuild") or None,
    )


def parse_status(raw: dict[str, Any] | None) -> SyncStatus:
    raw = raw or {}
    inv_raw = raw.get("inventory")
    inventory: tuple[InventoryEntry, ...] | None = None
    if isinstance(inv_raw, dict):
        inventory = tuple(
            InventoryEntry(id=e["id"], v=e.get("v", ""))
            for e in inv_raw.get("entries") or []
            if isinstance(e, dict) and e.get("id")
        )
    return SyncStatus(
        observed_generation=raw.get("observedGeneration"),
        last_attempted_revision=raw.get("lastAttemptedRevision"),
        last_applied_revision=raw.get("lastAppliedRevision"),
        last_handled_reconcile_at=raw.get("lastHandledReconcileAt"),
        inventory=inventory,
    )


def parse_sync(body: dict[str, Any]) -> Sync:
    """A Sync from a whole CR body. Spec errors raise InvalidSpec."""
    meta = body.get("metadata") or {}
    return Sync(
        key=SyncKey(namespace=meta.get("namespace", ""), name=meta.get("name", "")),
        uid=meta.get("uid", ""),
        generation=int(meta.get("generation") or 0),
        spec=parse_spec(body.get("spec") or {}),
        status=parse_status(body.get("status")),
        requested_at=(meta.get("annotations") or {}).get(ANNOTATION_REQUESTED_AT),
        deleting=bool(meta.get("deletionTimestamp")),
    )
