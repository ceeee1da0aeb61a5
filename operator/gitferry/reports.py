"""What a reconcile tells the world beyond its status and Events: a revision
started applying, was applied (and is healthy, when the sync waits), or failed.

Chat notifications and commit statuses subscribe here (`Context.reporters`);
the pipeline publishes one `SyncReport` at each of these moments and never
waits for a subscriber: a subscriber only enqueues, and delivers on its own
thread, with its own retries (issue 12: delivery never slows a reconcile).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from .api import SyncKey

log = logging.getLogger("gitferry.reports")


class Phase(StrEnum):
    """Where a revision stands: the three states a forge's commit status knows."""

    PENDING = "pending"  # a revision starts applying
    SUCCEEDED = "success"  # applied, and healthy when the sync waits
    FAILED = "failure"  # any stage failed; `reason` says which


@dataclass(frozen=True)
class SyncReport:
    """One moment of one sync. `revision` is `<ref>@sha1:<hex>` (empty when the
    failure came before git answered); `changes` names the objects written,
    Flux style (`Deployment/apps/web configured`); `message` is the condition
    message (it names file and object, never a credential). `author` (a name,
    never an address) and `subject` are the revision's commit's, `paths` the
    files it changed since the revision applied before (`old -> new` for a
    rename, then `and N more` past 1000); all empty when git could not tell
    (a first revision, one whose predecessor is not in the local mirror) and
    for a drift correction (`drift`)."""

    key: SyncKey
    uid: str
    url: str
    revision: str
    phase: Phase
    reason: str
    message: str
    changes: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    author: str = ""
    subject: str = ""
    paths: tuple[str, ...] = ()
    # The revision was applied before: what was written put back changes made
    # outside git (drift), and the commit is not what changed anything.
    drift: bool = False


Reporter = Callable[[SyncReport], None]


def publish(reporters: list[Reporter], report: SyncReport) -> None:
    """Hand `report` to every subscriber; a subscriber's error is logged and
    never reaches the reconcile."""
    for reporter in reporters:
        try:
            reporter(report)
        except Exception:
            log.exception(
                "sync=%s action=report phase=%s error=subscriber", report.key, report.phase
            )
