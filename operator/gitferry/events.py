"""Kubernetes Events about a sync (Kopf's own Event posting is off)."""

from __future__ import annotations

import logging
import secrets

from .api import SyncKey, now
from .constants import API_VERSION, KIND
from .kube import Kube, KubeError

log = logging.getLogger("gitferry.events")

NORMAL = "Normal"
WARNING = "Warning"
MAX_MESSAGE = 1024  # characters


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
