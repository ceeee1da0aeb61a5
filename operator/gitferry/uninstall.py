"""Uninstall: when the GitRepositorySync CRD is being deleted, orphan every sync.

Deleting the CRD deletes every sync, and each sync's finalizer would prune its
objects — but Kopf stops serving a resource whose CRD is going away, so the
finalizers would never run and the CRD would hang in Terminating. An uninstall
is not a request to delete workloads: gitferry removes its finalizer from every
sync, which orphans their objects, and lets the CRD go.
"""

from __future__ import annotations

import logging

from .constants import FINALIZER, GROUP, PLURAL, VERSION
from .kube import MERGE_PATCH, Kube, KubeError

log = logging.getLogger("gitferry.uninstall")

CRD_PATH = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{PLURAL}.{GROUP}"


def crd_deleting(kube: Kube) -> bool:
    try:
        crd = kube.request("GET", CRD_PATH)
    except KubeError as e:
        return e.not_found
    return bool((crd.get("metadata") or {}).get("deletionTimestamp"))


def orphan_all(kube: Kube) -> int:
    """Remove gitferry's finalizer from every sync; returns how many were released."""
    try:
        syncs = kube.request("GET", f"/apis/{GROUP}/{VERSION}/{PLURAL}").get("items") or []
    except KubeError as e:
        log.warning("action=uninstall error=%s", e.message)
        return 0
    released = 0
    for sync in syncs:
        meta = sync.get("metadata") or {}
        finalizers = meta.get("finalizers") or []
        if FINALIZER not in finalizers:
            continue
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{meta.get('namespace')}/{PLURAL}/{meta.get('name')}"
        patch = {
            "metadata": {
                "finalizers": [f for f in finalizers if f != FINALIZER],
                "resourceVersion": meta.get("resourceVersion"),
            }
        }
        try:
            kube.request("PATCH", path, body=patch, content_type=MERGE_PATCH)
            released += 1
            log.info(
                "sync=%s/%s action=uninstall orphaned=true", meta.get("namespace"), meta.get("name")
            )
        except KubeError as e:
            log.warning(
                "sync=%s/%s action=uninstall error=%s",
                meta.get("namespace"),
                meta.get("name"),
                e.message,
            )
    return released
