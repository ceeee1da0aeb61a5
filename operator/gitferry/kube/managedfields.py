"""Taking over field ownership when an applier adopts an object.

An object created by client-side `kubectl apply`, `kubectl create`/`edit` or
another tool has its fields owned by those managers. A server-side apply that
adopts it only becomes a co-owner: a field the new applier later stops setting
stays, still owned by the old manager. `kubectl apply --server-side` solves this
when it migrates from client-side apply (client-go's `csaupgrade`): it moves the
old managers' field sets into its own Apply entry with one JSON patch guarded by
the resourceVersion, and drops the last-applied annotation. This does the same
for a configurable set of managers — people's tools, never controllers, whose
fields (a Deployment's revision annotation, an HPA's replicas) are not ours.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

# (manager, operation) pairs whose fields an adopting applier takes over: kubectl's
# own client-side apply and imperative commands, the name the API server gives
# fields of objects created before managed fields existed, and Helm.
TAKEN_OVER_MANAGERS: frozenset[tuple[str, str]] = frozenset(
    [("kubectl-client-side-apply", "Update"), ("before-first-apply", "Update")]
    + [
        (name, "Update")
        for name in (
            "kubectl",
            "kubectl-create",
            "kubectl-edit",
            "kubectl-replace",
            "kubectl-patch",
            "kubectl-label",
            "kubectl-annotate",
            "kubectl-set",
            "kubectl-scale",
            "kubectl-rollout",
            "helm",
        )
    ]
    + [("kubectl", "Apply")]
)


def _union(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The union of two fieldsV1 sets (nested maps; `{}` marks a leaf)."""
    out = copy.deepcopy(a)
    for key, value in b.items():
        if key in out and isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = _union(out[key], value)
        else:
            out.setdefault(key, copy.deepcopy(value))
    return out


def takeover_patch(
    live: dict[str, Any],
    manager: str,
    api_version: str,
    managers: Iterable[tuple[str, str]] = TAKEN_OVER_MANAGERS,
) -> list[dict[str, Any]] | None:
    """A JSON patch (RFC 6902) that moves the fields of `managers` on the main
    resource (not status) into `manager`'s Apply entry at `api_version`, and
    removes the last-applied annotation; None when there is nothing to move.

    The first operation tests metadata.resourceVersion: a concurrent write makes
    the API server refuse the patch (409/422) instead of losing an update."""
    meta = live.get("metadata") or {}
    entries: list[dict[str, Any]] = list(meta.get("managedFields") or [])
    wanted = frozenset(managers)
    moved: dict[str, Any] = {}
    kept: list[dict[str, Any]] = []
    ours: dict[str, Any] | None = None
    for e in entries:
        key = (e.get("manager"), e.get("operation"))
        same_version = e.get("apiVersion") == api_version
        if key == (manager, "Apply") and not e.get("subresource"):
            ours = e
        elif key in wanted and same_version and not e.get("subresource"):
            moved = _union(moved, e.get("fieldsV1") or {})
            continue
        kept.append(e)
    # The last-applied annotation goes away: nobody should own it.
    (moved.get("f:metadata") or {}).get("f:annotations", {}).pop(f"f:{LAST_APPLIED}", None)
    annotations = meta.get("annotations") or {}
    if not moved and LAST_APPLIED not in annotations:
        return None
    patch: list[dict[str, Any]] = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta.get("resourceVersion")}
    ]
    if moved:
        if ours is None:
            ours = {
                "manager": manager,
                "operation": "Apply",
                "apiVersion": api_version,
                "fieldsType": "FieldsV1",
                "fieldsV1": {},
            }
            kept.append(ours)
        merged = dict(ours, fieldsV1=_union(ours.get("fieldsV1") or {}, moved))
        kept = [merged if e is ours else e for e in kept]
        patch.append({"op": "replace", "path": "/metadata/managedFields", "value": kept})
    if LAST_APPLIED in annotations:
        escaped = LAST_APPLIED.replace("~", "~0").replace("/", "~1")
        patch.append({"op": "remove", "path": f"/metadata/annotations/{escaped}"})
    return patch
