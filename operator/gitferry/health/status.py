"""kstatus's statuses, the Health result, and careful readers of an object's fields.

Objects arrive as the API server returns them, but `status` is written by
controllers (and, for custom resources, by anyone): every reader here accepts
any shape and falls back to a default instead of raising.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# Messages from the cluster (a kubelet's image-pull error, a custom resource's
# condition) can run to kilobytes; a health message is one line of a condition.
MAX_MESSAGE_CHARS = 300


class Status(StrEnum):
    """kstatus's statuses (sigs.k8s.io/cli-utils/pkg/kstatus/status), same spelling."""

    IN_PROGRESS = "InProgress"
    FAILED = "Failed"
    CURRENT = "Current"
    TERMINATING = "Terminating"
    NOT_FOUND = "NotFound"  # for the caller whose GET found nothing; never judged here
    UNKNOWN = "Unknown"  # a healthCheckExprs expression could not be evaluated


@dataclass(frozen=True)
class Health:
    """How one object stands, and why, in the API's own words, one short line:
    `1 of 3 replicas ready`, `Job has reached the specified backoff limit`."""

    status: Status
    message: str = ""

    @property
    def is_current(self) -> bool:
        return self.status is Status.CURRENT

    @property
    def is_failed(self) -> bool:
        return self.status is Status.FAILED

    def __str__(self) -> str:
        return f"{self.status}: {self.message}" if self.message else str(self.status)


def in_progress(message: str) -> Health:
    return Health(Status.IN_PROGRESS, clip(message))


def failed(message: str) -> Health:
    return Health(Status.FAILED, clip(message))


def current(message: str) -> Health:
    return Health(Status.CURRENT, clip(message))


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` on one line, at most `limit` characters (an ellipsis marks a cut)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def field(obj: Mapping[str, Any], *path: str) -> Any:
    """`obj[path[0]][path[1]]…`, or None where a step is missing or not a mapping."""
    value: Any = obj
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def integer(obj: Mapping[str, Any], *path: str, default: int | None = None) -> int | None:
    """An integer field; `default` when missing or of another type (a bool is not
    an integer here, though Python says it is; JSON numbers may arrive as 2.0)."""
    value = field(obj, *path)
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return default


def count(obj: Mapping[str, Any], *path: str, default: int = 0) -> int:
    """A replica count: missing means `default` (controllers omit zero counts)."""
    value = integer(obj, *path, default=default)
    return default if value is None else value


def text(obj: Mapping[str, Any], *path: str) -> str:
    value = field(obj, *path)
    return value if isinstance(value, str) else ""


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True", "False" or "Unknown"
    reason: str = ""
    message: str = ""

    def words(self) -> str:
        """`reason: message`, or whichever of them is set."""
        return ": ".join(part for part in (self.reason, self.message) if part)


def conditions(obj: Mapping[str, Any]) -> list[Condition]:
    """`status.conditions`, skipping entries that are not condition-shaped."""
    raw = field(obj, "status", "conditions")
    if not isinstance(raw, list):
        return []
    found = []
    for item in raw:
        if isinstance(item, Mapping) and isinstance(item.get("type"), str):
            found.append(
                Condition(
                    item["type"],
                    str(item.get("status") or ""),
                    str(item.get("reason") or ""),
                    str(item.get("message") or ""),
                )
            )
    return found


def condition(obj: Mapping[str, Any], type_: str) -> Condition | None:
    """The first condition of `type_`, as kstatus reads them."""
    for c in conditions(obj):
        if c.type == type_:
            return c
    return None


def stale_generation(obj: Mapping[str, Any]) -> Health | None:
    """InProgress when the controller has not yet seen the latest spec.

    kstatus (generic.go checkGeneration) and Flux's CEL evaluator both compare
    only when both numbers are there: many kinds never write observedGeneration.
    """
    generation = integer(obj, "metadata", "generation")
    observed = integer(obj, "status", "observedGeneration")
    if generation is None or observed is None or observed == generation:
        return None
    return in_progress(f"generation {generation} not yet observed (observed {observed})")
