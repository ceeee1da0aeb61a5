"""The status stage: conditions (kstatus-compatible) and the status patch.

Pure functions build the new `SyncStatus` from the old one; `StatusWriter`
sends it only when it differs, so a reconcile that changes nothing writes
nothing. kstatus's rules: Ready always present; Reconciling and Stalled only
while True; lastTransitionTime moves only when a condition's status flips.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from .api import Condition, SyncKey, SyncStatus, now, sync_path
from .constants import READY, RECONCILING, STALLED, Reason
from .deadline import Deadline
from .errors import SyncError
from .kube import MERGE_PATCH, Kube

MAX_MESSAGE = 4000  # characters: a condition message stays readable in `kubectl describe`


def _trim(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"


def condition(type_: str, status: str, reason: str, message: str) -> Condition:
    return Condition(type=type_, status=status, reason=reason, message=message)


def merge_conditions(
    old: tuple[Condition, ...], new: list[Condition], generation: int, at: str
) -> tuple[Condition, ...]:
    """The new condition list; Reconciling and Stalled appear only while True
    (kstatus), and lastTransitionTime moves only when a status flips."""
    by_type = {c.type: c for c in old}
    out: list[Condition] = []
    for c in new:
        if c.type in (RECONCILING, STALLED) and c.status != "True":
            continue
        prev = by_type.get(c.type)
        flipped = prev is None or prev.status != c.status
        out.append(
            dataclasses.replace(
                c,
                message=_trim(c.message),
                observed_generation=generation,
                last_transition_time=at if flipped or prev is None else prev.last_transition_time,
            )
        )
    return tuple(out)


def progressing(message: str, retrying: bool = False) -> list[Condition]:
    reason = Reason.PROGRESSING_WITH_RETRY if retrying else Reason.PROGRESSING
    return [
        condition(READY, "Unknown", Reason.PROGRESSING, message),
        condition(RECONCILING, "True", reason, message),
    ]


def succeeded(message: str) -> list[Condition]:
    return [condition(READY, "True", Reason.SUCCEEDED, message)]


def suspended() -> list[Condition]:
    return [
        condition(
            READY,
            "False",
            Reason.SUSPENDED,
            "suspended: no changes are applied until spec.suspend is false",
        )
    ]


def failed(error: SyncError) -> list[Condition]:
    conds = [condition(READY, "False", error.reason, error.message)]
    if error.stalled:
        conds.append(condition(STALLED, "True", error.reason, error.message))
    return conds


def with_conditions(
    status: SyncStatus, conditions: list[Condition], generation: int, **changes: Any
) -> SyncStatus:
    """A copy of `status` with new conditions, observedGeneration and the given
    SyncStatus fields (`last_applied_revision=…`, `inventory=…`)."""
    return dataclasses.replace(
        status,
        conditions=merge_conditions(status.conditions, conditions, generation, now()),
        observed_generation=generation,
        **changes,
    )


def same(a: SyncStatus, b: SyncStatus) -> bool:
    """Equal but for transition times, which only move when a status flips."""

    def strip(s: SyncStatus) -> SyncStatus:
        return dataclasses.replace(
            s,
            conditions=tuple(dataclasses.replace(c, last_transition_time="") for c in s.conditions),
        )

    return strip(a) == strip(b)


def merge_patch(old: SyncStatus, new: SyncStatus) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) turning `old` into `new`: fields `new` lacks are null."""
    body = new.to_dict()
    for key in old.to_dict():
        body.setdefault(key, None)
    return {"status": body}


class StatusWriter:
    """Writes a sync's status subresource, and only when it changed."""

    def __init__(self, kube: Kube, written: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.kube = kube
        # Told the sync as stored after each write (the sync cache, syncs.py).
        self.written = written

    def write(
        self,
        key: SyncKey,
        old: SyncStatus,
        new: SyncStatus,
        deadline: Deadline | None = None,
    ) -> SyncStatus:
        """Patch the status when it differs from `old`; returns what the status now
        is. Raises KubeError when the API server refuses the patch."""
        if same(old, new):
            return old
        stored = self.kube.request(
            "PATCH",
            f"{sync_path(key)}/status",
            deadline=deadline,
            body=merge_patch(old, new),
            content_type=MERGE_PATCH,
        )
        if self.written is not None:
            self.written(stored)
        return new
