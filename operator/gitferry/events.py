"""Kubernetes Events about a sync (Kopf's own Event posting is off)."""

from __future__ import annotations

import logging
import secrets

from .api import SyncKey, now
from .constants import API_VERSION, KIND
from .kube import Action, ChangeSet, Kube, KubeError

log = logging.getLogger("gitferry.events")

NORMAL = "Normal"
WARNING = "Warning"
MAX_MESSAGE = 1024  # characters
MAX_OBJECT_LINES = 20  # objects an Event names; the rest are counted ("and N more")


def headline(revision: str, subject: str = "", author: str = "") -> str:
    """`main@sha1:<hex>: "Scale web to 3" by Ada Lovelace`, each part when known."""
    text = revision
    if subject:
        text += f': "{subject}"'
    if author:
        text += f" by {author}"
    return text


def change_message(head: str, changes: ChangeSet, max_lines: int = MAX_OBJECT_LINES) -> str:
    """What a revision changed, as Flux's kustomize-controller says it: the
    headline, then a line per object written or deleted (`Deployment/apps/web
    configured`; unchanged and skipped ones left out) in apply order, deletions
    last; at most `max_lines`, then `and N more`; the counts close it (`created 1,
    configured 1, unchanged 40`). Fewer lines are named until the message fits
    MAX_MESSAGE bytes of UTF-8 (a longer headline is cut last)."""
    quiet = (Action.UNCHANGED, Action.SKIPPED)
    lines = [f"{c.ref} {c.action.value}" for c in changes.changes if c.action not in quiet]
    shown = min(len(lines), max_lines)
    while True:
        more = len(lines) - shown
        text = "\n".join(
            [head, *lines[:shown], *([f"and {more} more"] if more else []), changes.summary()]
        )
        if len(text.encode()) <= MAX_MESSAGE or shown == 0:
            break
        shown -= 1
    data = text.encode()
    if len(data) <= MAX_MESSAGE:
        return text
    return data[: MAX_MESSAGE - len("…".encode())].decode(errors="ignore") + "…"


class EventRecorder:
    """Posts core/v1 Events about GitRepositorySyncs as `gitferry`."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def post(self, key: SyncKey, uid: str, type_: str, reason: str, message: str) -> None:
        """Post one Event about sync `key` (its `uid`); a failure to post is logged,
        never fails the reconcile."""
        at = now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{key.name}.{secrets.token_hex(8)}",
                "namespace": key.namespace,
            },
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": key.name,
                "namespace": key.namespace,
                "uid": uid,
            },
            "type": type_,
            "reason": reason,
            "message": message[:MAX_MESSAGE],
            "source": {"component": "gitferry"},
            "reportingComponent": "gitferry",
            "reportingInstance": "gitferry",
            "firstTimestamp": at,
            "lastTimestamp": at,
            "count": 1,
        }
        try:
            self.kube.request("POST", f"/api/v1/namespaces/{key.namespace}/events", body=event)
        except KubeError as e:
            log.warning("sync=%s action=event-failed reason=%s error=%s", key, reason, e.message)
