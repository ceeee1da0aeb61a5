"""The Alert resource as typed values, parsed once at the edge.

An Alert says which syncs of its namespace it is about (`spec.syncs`: names,
`*`, label selectors) and where their news go (`spec.type`): chat messages
through Apprise (`apprise`), or commit statuses on a forge (`github`, `gitlab`,
`gitea`, `bitbucket`, `bitbucketserver`, `azuredevops`). The credentials (the
Apprise URLs, the forge token) live in a Secret of the Alert's namespace
(`spec.secretRef`), read at delivery time as `spec.serviceAccountName`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ..api import Condition
from ..constants import ALERT_PLURAL, GROUP, READY, VERSION
from ..errors import InvalidSpec
from ..notify.forges import Forge

CHAT = "apprise"
MAX_SUMMARY = 1024


class Severity(StrEnum):
    INFO = "info"  # everything: applied, failed, recovered
    ERROR = "error"  # failures and recoveries only


@dataclass(frozen=True)
class AlertKey:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def alert_path(key: AlertKey) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{key.namespace}/{ALERT_PLURAL}/{key.name}"


@dataclass(frozen=True)
class Requirement:
    """One matchExpressions entry (In, NotIn, Exists, DoesNotExist)."""

    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        has = self.key in labels
        if self.operator == "In":
            return has and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not has or labels[self.key] not in self.values
        if self.operator == "Exists":
            return has
        return not has  # DoesNotExist


@dataclass(frozen=True)
class SyncSelector:
    """One entry of spec.syncs: a name (`*`: any) and/or a label selector; both
    must match. A selector with nothing in it matches every sync."""

    name: str = "*"
    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, name: str, labels: dict[str, str]) -> bool:
        if self.name not in ("*", name):
            return False
        if any(labels.get(k) != v for k, v in self.match_labels):
            return False
        return all(r.matches(labels) for r in self.match_expressions)


@dataclass(frozen=True)
class Reasons:
    """spec.reasons: condition reasons to notify about (`include`, empty: all)
    and not (`exclude`)."""

    include: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()

    def allows(self, reason: str) -> bool:
        return (not self.include or reason in self.include) and reason not in self.exclude


@dataclass(frozen=True)
class AlertSpec:
    type: str  # CHAT or a Forge value
    secret_ref: str
    syncs: tuple[SyncSelector, ...]
    severity: Severity = Severity.INFO
    reasons: Reasons = field(default_factory=Reasons)
    summary: str = ""
    suspend: bool = False
    service_account_name: str | None = None
    # Forges: the API base URL and the repository path, when the sync's git URL
    # does not tell them (a self-hosted forge, a mirror).
    address: str | None = None
    repository: str | None = None

    @property
    def forge(self) -> Forge | None:
        return None if self.type == CHAT else Forge(self.type)

    def wants(self, name: str, labels: dict[str, str]) -> bool:
        return any(s.matches(name, labels) for s in self.syncs)


@dataclass(frozen=True)
class Alert:
    key: AlertKey
    uid: str
    generation: int
    spec: AlertSpec


@dataclass(frozen=True)
class AlertStatus:
    observed_generation: int | None = None
    conditions: tuple[Condition, ...] = ()

    @classmethod
    def from_dict(cls, raw: Any) -> AlertStatus:
        raw = raw if isinstance(raw, dict) else {}
        gen = raw.get("observedGeneration")
        return cls(
            observed_generation=gen if isinstance(gen, int) else None,
            conditions=tuple(
                Condition.from_dict(c) for c in raw.get("conditions") or [] if isinstance(c, dict)
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"conditions": [c.to_dict() for c in self.conditions]}
        if self.observed_generation is not None:
            out["observedGeneration"] = self.observed_generation
        return out

    @property
    def ready(self) -> Condition | None:
        return next((c for c in self.conditions if c.type == READY), None)


def key_of(body: dict[str, Any]) -> AlertKey:
    meta = body.get("metadata") or {}
    return AlertKey(str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def _opt(raw: dict[str, Any], name: str, where: str) -> str | None:
    value = raw.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidSpec(f"{where}.{name}: must be a string")
    return value


def _strings(raw: Any, where: str) -> frozenset[str]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise InvalidSpec(f"{where}: must be a list of strings")
    return frozenset(raw)


def _selector(entry: Any, i: int) -> SyncSelector:
    where = f"spec.syncs[{i}]"
    if not isinstance(entry, dict):
        raise InvalidSpec(f"{where}: must be an object with a name and/or a selector")
    name = _opt(entry, "name", where) or "*"
    sel = entry.get("selector") or {}
    if not isinstance(sel, dict):
        raise InvalidSpec(f"{where}.selector: must be an object")
    labels = sel.get("matchLabels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise InvalidSpec(f"{where}.selector.matchLabels: must map label names to strings")
    exprs = []
    for j, e in enumerate(sel.get("matchExpressions") or []):
        w = f"{where}.selector.matchExpressions[{j}]"
        if not isinstance(e, dict) or not isinstance(e.get("key"), str):
            raise InvalidSpec(f"{w}: needs a key")
        op = e.get("operator")
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise InvalidSpec(f"{w}.operator: must be In, NotIn, Exists or DoesNotExist")
        values = _strings(e.get("values"), f"{w}.values")
        if op in ("In", "NotIn") and not values:
            raise InvalidSpec(f"{w}.values: {op} needs at least one value")
        if op in ("Exists", "DoesNotExist") and values:
            raise InvalidSpec(f"{w}.values: {op} takes no values")
        exprs.append(Requirement(e["key"], op, values))
    if name == "*" and "selector" not in entry and "name" not in entry:
        raise InvalidSpec(f'{where}: set a name (or "*") and/or a selector')
    return SyncSelector(name, tuple(sorted(labels.items())), tuple(exprs))


def parse_alert(body: dict[str, Any]) -> Alert:
    """An Alert from its whole body; InvalidSpec names the field that is wrong.
    (The CRD's schema says the same; this holds where an older copy of it is
    installed.)"""
    meta = body.get("metadata") or {}
    raw = body.get("spec")
    if not isinstance(raw, dict):
        raise InvalidSpec("spec: missing")
    type_ = raw.get("type") or CHAT
    if type_ != CHAT and type_ not in {f.value for f in Forge}:
        choices = ", ".join([CHAT, *(f.value for f in Forge)])
        raise InvalidSpec(f"spec.type: {type_!r} is not one of {choices}")
    secret = raw.get("secretRef") or {}
    secret_name = _opt(secret, "name", "spec.secretRef") if isinstance(secret, dict) else None
    if not secret_name:
        raise InvalidSpec("spec.secretRef.name: required (the Secret holding "
                          + ("the Apprise URLs)" if type_ == CHAT else "the token)"))  # fmt: skip
    syncs_raw = raw.get("syncs")
    if not isinstance(syncs_raw, list) or not syncs_raw:
        raise InvalidSpec('spec.syncs: list at least one sync (a name, "*" or a selector)')
    severity = raw.get("severity") or Severity.INFO.value
    if severity not in {s.value for s in Severity}:
        raise InvalidSpec(f"spec.severity: {severity!r} is not info or error")
    reasons = raw.get("reasons") or {}
    if not isinstance(reasons, dict):
        raise InvalidSpec("spec.reasons: must be an object with include and/or exclude")
    summary = _opt(raw, "summary", "spec") or ""
    if len(summary) > MAX_SUMMARY:
        raise InvalidSpec(f"spec.summary: at most {MAX_SUMMARY} characters")
    address = _opt(raw, "address", "spec")
    if address and not address.startswith(("https://", "http://")):
        raise InvalidSpec("spec.address: must be an http(s) URL (the forge's API base)")
    suspend = raw.get("suspend", False)
    if not isinstance(suspend, bool):
        raise InvalidSpec("spec.suspend: must be true or false")
    return Alert(
        key=key_of(body),
        uid=str(meta.get("uid") or ""),
        generation=int(meta.get("generation") or 0),
        spec=AlertSpec(
            type=type_,
            secret_ref=secret_name,
            syncs=tuple(_selector(e, i) for i, e in enumerate(syncs_raw)),
            severity=Severity(severity),
            reasons=Reasons(
                _strings(reasons.get("include"), "spec.reasons.include"),
                _strings(reasons.get("exclude"), "spec.reasons.exclude"),
            ),
            summary=summary,
            suspend=suspend,
            service_account_name=_opt(raw, "serviceAccountName", "spec"),
            address=address,
            repository=_opt(raw, "repository", "spec"),
        ),
    )
