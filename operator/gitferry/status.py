"""The status stage: conditions (kstatus-compatible) and the status patch.

Pure functions build the new status from the old one; `StatusWriter` sends it
only when it differs, so a reconcile that changes nothing writes nothing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .api import SyncKey, sync_path
from .constants import READY, RECONCILING, STALLED, Reason
from .deadline import Deadline
from .errors import SyncError
from .kube import MERGE_PATCH, Kube

MAX_MESSAGE = 4000  # a condition message stays readable in `kubectl describe`


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _trim(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


def merge_conditions(
    old: list[dict[str, Any]], new: list[Condition], generation: int, at: str
) -> list[dict[str, Any]]:
    """The new condition list; Reconciling and Stalled appear only while True
    (kstatus), and lastTransitionTime moves only when a status flips."""
    by_type = {c.get("type"): c for c in old or []}
    out: list[dict[str, Any]] = []
    for c in new:
        if c.type in (RECONCILING, STALLED) and c.status != "True":
            continue
        prev = by_type.get(c.type)
        changed = prev is None or prev.get("status") != c.status
        out.append(
            {
                "type": c.type,
                "status": c.status,
                "observedGeneration": generation,
                "lastTransitionTime": at if changed else prev.get("lastTransitionTime", at),  # type: ignore[union-attr]
                "reason": c.reason,
                "message": _trim(c.message),
            }
        )
    return out


def ready_status(status: dict[str, Any]) -> str | None:
    for c in (status or {}).get("conditions") or []:
        if c.get("type") == READY:
            return str(c.get("status"))
    return None


def progressing(message: str, retrying: bool = False) -> list[Condition]:
    reason = Reason.PROGRESSING_WITH_RETRY if retrying else Reason.PROGRESSING
    return [
        Condition(READY, "Unknown", Reason.PROGRESSING, message),
        Condition(RECONCILING, "True", reason, message),
    ]


def succeeded(message: str) -> list[Condition]:
    return [Condition(READY, "True", Reason.SUCCEEDED, message)]


def suspended() -> list[Condition]:
    return [
        Condition(
            READY,
            "False",
            Reason.SUSPENDED,
            "suspended: no changes are applied until spec.suspend is false",
        )
    ]


def failed(error: SyncError) -> list[Condition]:
    conds = [Condition(READY, "False", error.reason, error.message)]
    if error.stalled:
        conds.append(Condition(STALLED, "True", error.reason, error.message))
    return conds


def with_conditions(
    status: dict[str, Any], conditions: list[Condition], generation: int, **fields: Any
) -> dict[str, Any]:
    """A copy of `status` with new conditions and fields (None removes a field)."""
    out = copy.deepcopy(status or {})
    out["conditions"] = merge_conditions(out.get("conditions") or [], conditions, generation, now())
    out["observedGeneration"] = generation
    for k, v in fields.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal but for transition times, which only move when a status flips."""

    def strip(s: dict[str, Any]) -> dict[str, Any]:
        s = copy.deepcopy(s)
        for c in s.get("conditions") or []:
            c.pop("lastTransitionTime", None)
        return s

    return strip(a) == strip(b)


class StatusWriter:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def path(self, key: SyncKey) -> str:
        return f"{sync_path(key)}/status"

    def write(
        self,
        key: SyncKey,
        old: dict[str, Any],
        new: dict[str, Any],
        deadline: Deadline | None = None,
    ) -> dict[str, Any]:
        """Patch the status when it differs from `old`; returns what the status now is."""
        if _same(old or {}, new):
            return old
        patch: dict[str, Any] = {"status": dict(new)}
        for k in old or {}:
            if k not in new:
                patch["status"][k] = None  # merge patch: null removes
        self.kube.request(
            "PATCH", self.path(key), deadline=deadline, body=patch, content_type=MERGE_PATCH
        )
        return new
