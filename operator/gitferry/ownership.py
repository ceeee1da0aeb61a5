"""Which sync owns an object, read from the object's labels before any write.

All syncs share one field manager, so server-side apply never reports a
conflict between two of them: the labels are the record. The rules (DESIGN.md):

- no object yet                          → create it, ours
- labels name this sync                  → ours
- no gitferry labels, claimed by us      → handed over by its last owner: ours
- no gitferry labels                     → it pre-existed: adopt it, marked
- labels name a sync whose git holds it  → OwnershipConflict, no write
- labels name a sync that is gone or no longer holds it → take it over
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .api import SyncKey
from .constants import ANNOTATION_ADOPTED, ANNOTATION_CLAIM, LABEL_SYNC_NAME, LABEL_SYNC_NAMESPACE
from .kube import ObjRef


class Decision(StrEnum):
    CREATE = "create"
    OWN = "own"
    ADOPT = "adopt"
    TAKE_OVER = "take-over"
    CONFLICT = "conflict"


@dataclass(frozen=True)
class Verdict:
    ref: ObjRef
    decision: Decision
    owner: SyncKey | None = None  # the other sync, for TAKE_OVER and CONFLICT
    adopted: bool = False  # carry the adopted mark: never deleted while it is there
    claimed_by_us: bool = False  # our claim annotation is on it (to remove once ours)

    @property
    def writable(self) -> bool:
        return self.decision != Decision.CONFLICT


def owner_of(obj: dict[str, Any]) -> SyncKey | None:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    name, namespace = labels.get(LABEL_SYNC_NAME), labels.get(LABEL_SYNC_NAMESPACE)
    return SyncKey(namespace, name) if name and namespace else None


def claim_of(obj: dict[str, Any]) -> SyncKey | None:
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_CLAIM) or ""
    namespace, _, name = value.partition("/")
    return SyncKey(namespace, name) if namespace and name else None


def claim_value(key: SyncKey) -> str:
    return f"{key.namespace}/{key.name}"


def is_adopted(obj: dict[str, Any]) -> bool:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_ADOPTED) == "true"


def controller_owner(obj: dict[str, Any]) -> str | None:
    """`Kind/name` of a controller that owns the object through an ownerReference."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return f"{ref.get('kind')}/{ref.get('name')}"
    return None


def decide(
    me: SyncKey,
    ref: ObjRef,
    live: dict[str, Any] | None,
    holds: Callable[[SyncKey, ObjRef], bool],
) -> Verdict:
    """`holds(sync, ref)`: does that sync exist and does its git still hold `ref`?"""
    if live is None:
        return Verdict(ref, Decision.CREATE)
    claimed = claim_of(live) == me
    owner = owner_of(live)
    if owner == me:
        return Verdict(ref, Decision.OWN, adopted=is_adopted(live), claimed_by_us=claimed)
    if owner is None:
        if claimed:
            return Verdict(ref, Decision.TAKE_OVER, claimed_by_us=True, adopted=is_adopted(live))
        return Verdict(ref, Decision.ADOPT, adopted=True)
    if holds(owner, ref):
        return Verdict(ref, Decision.CONFLICT, owner=owner, claimed_by_us=claimed)
    return Verdict(
        ref, Decision.TAKE_OVER, owner=owner, adopted=is_adopted(live), claimed_by_us=claimed
    )
