"""Field ownership: taking it over when an applier adopts an object, and reading
it (field_paths, owners: who holds which field).

An object created by client-side `kubectl apply`, `kubectl create`/`edit` or
another tool has its fields owned by those managers. A server-side apply that
adopts it only becomes a co-owner: a field the new applier later stops setting
stays, still owned by the old manager. `kubectl apply --server-side` solves this
when it migrates from client-side apply (client-go's `csaupgrade`): it moves the
old managers' field sets into its own Apply entry with one JSON patch guarded by
the resourceVersion, and drops the last-applied annotation. This does the same
for a configurable set of managers — people's tools, never controllers, whose
fields (a Deployment's revision annotation, an HPA's replicas) are not ours —
and only for the fields the adopting apply sets itself.

Reading: `apply_fields_json` is an applier's field set as canonical JSON (what a
watch keeps per object to notice that someone took a field), `field_paths` spells
a field set as readable paths, and `owners` names who holds a path.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
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


def _intersect(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The fields in both fieldsV1 sets."""
    out: dict[str, Any] = {}
    for key, value in a.items():
        if key not in b:
            continue
        other = b[key]
        if isinstance(value, dict) and isinstance(other, dict) and value and other:
            inner = _intersect(value, other)
            if inner:
                if "." in value:  # the map or list item itself goes with what it holds
                    inner["."] = {}
                out[key] = inner
        else:
            out[key] = {}
    return out


def _subtract(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """The fields of `a` that are not in `b`."""
    out: dict[str, Any] = {}
    for key, value in a.items():
        if key not in b:
            out[key] = copy.deepcopy(value)
            continue
        other = b[key]
        if isinstance(value, dict) and value and isinstance(other, dict) and other:
            inner = _subtract(value, other)
            if inner:
                out[key] = inner
    return out


def applied_fields(obj: dict[str, Any], manager: str) -> dict[str, Any] | None:
    """The fieldsV1 of `manager`'s Apply entry on the main resource, or None."""
    for e in (obj.get("metadata") or {}).get("managedFields") or []:
        if (e.get("manager"), e.get("operation")) == (manager, "Apply") and not e.get(
            "subresource"
        ):
            fields = e.get("fieldsV1")
            return fields if isinstance(fields, dict) else {}
    return None


def takeover_patch(
    live: dict[str, Any],
    manager: str,
    api_version: str,
    applying: dict[str, Any],
    managers: Iterable[tuple[str, str]] = TAKEN_OVER_MANAGERS,
) -> list[dict[str, Any]] | None:
    """A JSON patch (RFC 6902) that moves, from the entries of `managers` on the
    main resource (not status) into `manager`'s Apply entry at `api_version`,
    the fields `manager` is applying (`applying`: its fieldsV1 in a dry-run of
    the apply), and removes the last-applied annotation; None when there is
    nothing to do. Fields the applier does not set stay with their managers:
    `kubectl scale`'s replicas or `kubectl set resources`'s limits are left
    alone, while a key git sets now is git's alone, so removing it from git
    later removes it from the object.

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
            fields = e.get("fieldsV1") or {}
            taken = _intersect(fields, applying)
            if taken:
                moved = _union(moved, taken)
                # The last-applied annotation goes away: nobody should own it.
                rest = _without(_subtract(fields, taken), _LAST_APPLIED_PATH)
                if rest:
                    kept.append(dict(e, fieldsV1=rest))
                continue
        kept.append(e)
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


_LAST_APPLIED_PATH = ("f:metadata", "f:annotations", f"f:{LAST_APPLIED}")


def _without(fields: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    """`fields` without the field at `path`, and without the parents that held
    nothing else (an emptied parent must not read as a leaf, which owns it all)."""
    if not path or path[0] not in fields:
        return fields
    out = dict(fields)
    if len(path) == 1:
        del out[path[0]]
        return out
    child = fields[path[0]]
    if not isinstance(child, dict) or not child:
        return out  # a leaf: it owns the whole parent; leave it
    inner = _without(child, path[1:])
    if inner and set(inner) != {"."}:  # a bare "." marker owns nothing left
        out[path[0]] = inner
    else:
        del out[path[0]]
    return out


# --- reading fieldsV1 -----------------------------------------------------------


def canonical(fields: Mapping[str, Any]) -> str:
    """A fieldsV1 set as canonical JSON (sorted keys, no spaces): equal sets, equal strings."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def apply_fields_json(managed_fields: Iterable[Mapping[str, Any]], manager: str) -> str | None:
    """Canonical JSON of the fieldsV1 of `manager`'s Apply entry on the main
    resource (not a subresource), or None when it has no such entry."""
    for e in managed_fields:
        if (e.get("manager"), e.get("operation")) == (manager, "Apply") and not e.get(
            "subresource"
        ):
            fields = e.get("fieldsV1")
            return canonical(fields if isinstance(fields, dict) else {})
    return None


_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _name(name: str) -> str:
    """`.replicas`, or `["app.kubernetes.io/name"]` for a name a dot would split."""
    return f".{name}" if _PLAIN_NAME.fullmatch(name) else f"[{json.dumps(name)}]"


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _step(key: str) -> str | None:
    """One fieldsV1 key as a path step; None for "." (the map or item itself)."""
    if key == ".":
        return None
    prefix, _, rest = key.partition(":")
    if prefix == "f":
        return _name(rest)
    if prefix == "k":  # an item of an associative list, by its keys
        try:
            keys = json.loads(rest)
        except ValueError:
            return f"[{rest}]"
        if isinstance(keys, dict):
            return "[" + ",".join(f"{k}={_scalar(v)}" for k, v in sorted(keys.items())) + "]"
        return f"[{rest}]"
    if prefix == "v":  # an item of a set, by its value
        try:
            return f"[={_scalar(json.loads(rest))}]"
        except ValueError:
            return f"[={rest}]"
    if prefix == "i":  # an item of an atomic-less list, by its index
        return f"[{rest}]"
    return f"[{json.dumps(key)}]"


def field_paths(fields: str | Mapping[str, Any]) -> set[str]:
    """A fieldsV1 set (JSON or already decoded) as readable paths: `spec.replicas`,
    `metadata.labels.app`, `spec.template.spec.containers[name=web].image`,
    `metadata.annotations["example.com/x"]`, `metadata.finalizers[=example.com/f]`.

    Every leaf is a path, and so is every map or list item the set owns as such
    (its `"."` marker): `spec.template.spec.containers[name=web]`."""
    tree = json.loads(fields) if isinstance(fields, str) else fields
    out: set[str] = set()
    stack: list[tuple[str, Any]] = [("", tree)]
    while stack:
        prefix, node = stack.pop()
        if not isinstance(node, Mapping):
            continue
        if not node and prefix:
            out.add(prefix)
            continue
        for key, child in node.items():
            step = _step(key)
            if step is None:
                if prefix:
                    out.add(prefix)
                continue
            stack.append((prefix + step, child))
    return {p[1:] if p.startswith(".") else p for p in out}


def owners(managed_fields: Iterable[Mapping[str, Any]], path: str) -> list[str]:
    """The managers whose field set holds `path` (as field_paths spells it), each
    once, in the order of managedFields: who took `spec.replicas`."""
    found: list[str] = []
    for e in managed_fields:
        fields = e.get("fieldsV1")
        manager = str(e.get("manager") or "")
        if isinstance(fields, Mapping) and manager not in found and path in field_paths(fields):
            found.append(manager)
    return found
