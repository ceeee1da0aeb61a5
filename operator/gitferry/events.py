"""Kubernetes Events about a sync (Kopf's own Event posting is off)."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from .api import SyncKey
from .constants import API_VERSION, KIND
from .kube import Kube, KubeError
from .status import now

log = logging.getLogger("gitferry.events")

NORMAL = "Normal"
WARNING = "Warning"
MAX_MESSAGE = 1024


@dataclass(frozen=True)
class SyncRef:
    key: SyncKey
    uid: str


class EventRecorder:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def post(self, sync: SyncRef, type_: str, reason: str, message: str) -> None:
        """Post one Event; a failure to post is logged, never fails the reconcile."""
        at = now()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{sync.key.name}.{secrets.token_hex(8)}",
                "namespace": sync.key.namespace,
            },
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": sync.key.name,
                "namespace": sync.key.namespace,
                "uid": sync.uid,
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
            self.kube.request("POST", f"/api/v1/namespaces/{sync.key.namespace}/events", body=event)
        except KubeError as e:
            log.warning(
                "sync=%s action=event-failed reason=%s error=%s", sync.key, reason, e.message
            )
