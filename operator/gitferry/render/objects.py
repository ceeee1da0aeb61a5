"""Object checks: one parsed document -> clean Kubernetes objects, and the
checks across objects (duplicates, namespaces) that need the whole set."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from .errors import RenderError

CRD_GROUP = "apiextensions.k8s.io"
CRD_KIND = "CustomResourceDefinition"

# Written by the API server; sending them back is refused or meaningless.
# ownerReferences stay: they are the user's intent.
SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
)


@dataclass(frozen=True)
class Manifest:
    """One object from git and the file it came from (relative to the checkout).

    `string_data` names the keys of a v1 Secret's `data` that render folded from
    `stringData` (base64 of the text git holds): Flux substitutes postBuild
    variables before that fold, so `substitute` reads those keys as text."""

    obj: dict[str, Any]
    source: str
    string_data: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return str(self.obj["apiVersion"])

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = self.obj["metadata"]
        return meta

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def namespace(self) -> str | None:
        ns = self.metadata.get("namespace")
        return str(ns) if ns else None

    @property
    def group(self) -> str:
        """ "" for the core group (apiVersion "v1")."""
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def describe(self) -> str:
        if self.namespace:
            return f"{self.kind}/{self.namespace}/{self.name}"
        return f"{self.kind}/{self.name}"


class ContentError(Exception):
    """A problem in one document's content; the caller names file and document."""


def plain_copy(value: Any, depth: int, max_depth: int) -> Any:
    """A fresh JSON-compatible copy: aliases unshared, keys strings."""
    if isinstance(value, dict | list) and depth >= max_depth:
        raise ContentError(f"nested deeper than {max_depth} levels")
    if isinstance(value, dict):
        return {key_text(k): plain_copy(v, depth + 1, max_depth) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_copy(v, depth + 1, max_depth) for v in value]
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise ContentError(f"{value} is not a number JSON can carry")
    raise ContentError(f"a YAML {type(value).__name__} has no JSON form")


_INT64 = 1 << 63


def key_text(k: Any) -> str:
    """A mapping key as text, as sigs.k8s.io/yaml's YAML-to-JSON conversion writes
    it: booleans as true/false, integers in decimal, floats with float32
    precision in Go's %g; null and integers beyond int64 are refused there."""
    if isinstance(k, str):
        return k
    if isinstance(k, bool):
        return "true" if k else "false"
    if k is None:
        raise ContentError("a null key has no JSON form (quote it)")
    if isinstance(k, int):
        if not -_INT64 <= k < _INT64:
            raise ContentError(f"the key {k} is out of range (quote it)")
        return str(k)
    if isinstance(k, float):
        return go_float32_text(k)
    raise ContentError(f"a {type(k).__name__} cannot be a key")


def go_float32_text(value: float) -> str:
    """strconv.FormatFloat(value, 'g', -1, 32): the shortest text that reads back
    as the same float32, in %e form when its exponent is below -4 or at least 6
    (Go's rule for the shortest %g): 1000.0 -> "1000", 1234567.0 -> "1.234567e+06"."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    try:
        as32 = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:  # beyond float32: Go's conversion gives an infinity
        return "+Inf" if value > 0 else "-Inf"
    if math.isinf(as32):
        return "+Inf" if as32 > 0 else "-Inf"
    for digits in range(1, 10):
        text = f"{as32:.{digits}e}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == as32:
            break
    mantissa, _, exp_text = text.partition("e")
    exponent = int(exp_text)
    mantissa = mantissa.rstrip("0").rstrip(".") if "." in mantissa else mantissa
    if exponent < -4 or exponent >= 6:
        return f"{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    # Plain notation from the shortest digits.
    sign = "-" if mantissa.startswith("-") else ""
    digits_only = mantissa.lstrip("-").replace(".", "")
    point = exponent + 1
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits_only}"
    if point >= len(digits_only):
        return f"{sign}{digits_only}{'0' * (point - len(digits_only))}"
    return f"{sign}{digits_only[:point]}.{digits_only[point:]}"


def type_name(value: Any) -> str:
    """How a message names a JSON value's type: "a list", "a mapping", "null"."""
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def is_list(obj: dict[str, Any]) -> bool:
    """A list to expand: `kind: List` (as `kubectl get -o yaml` writes), or a typed
    `<Kind>List` that has `items` (`ServiceList`). kubectl's unstructured decoder
    treats an object as a list when it has `items`; a custom resource whose kind
    merely ends in `List` and has no `items` stays one object."""
    kind = obj.get("kind")
    if kind == "List":
        return True
    return isinstance(kind, str) and kind.endswith("List") and obj.get("items") is not None


def expand_lists(obj: dict[str, Any], where: str) -> Iterator[tuple[dict[str, Any], str]]:
    """A list's items, each an object; anything else as it is. An item that names
    neither apiVersion nor kind gets the list's apiVersion and the list's kind
    without `List`, as kubectl's decoder does (apimachinery decodeToList)."""
    if not is_list(obj):
        yield obj, where
        return
    kind = str(obj.get("kind"))
    items = obj.get("items")
    if items is None:
        return
    if not isinstance(items, list):
        raise ContentError(f"{where}: {kind} items must be a list")
    for i, item in enumerate(items, 1):
        if item is None:
            continue
        item_where = f"{where}, {kind} item {i}"
        if not isinstance(item, dict):
            raise ContentError(f"{item_where}: expected an object, got {type_name(item)}")
        if kind != "List" and "kind" not in item and "apiVersion" not in item:
            item = {"apiVersion": obj.get("apiVersion"), "kind": kind[: -len("List")], **item}
        yield from expand_lists(item, item_where)


def check_object(obj: dict[str, Any]) -> None:
    """Raise ContentError unless obj names its apiVersion, kind and name."""
    kind = obj.get("kind")
    meta = obj.get("metadata")
    label = kind if isinstance(kind, str) and kind else "object"
    if isinstance(meta, dict) and isinstance(meta.get("name"), str) and meta["name"]:
        label = f"{label} {meta['name']}"
    api_version = obj.get("apiVersion")
    if not isinstance(api_version, str) or not api_version:
        raise ContentError(f"{label} has no apiVersion")
    if not isinstance(kind, str) or not kind:
        raise ContentError(f"{label} has no kind")
    if meta is None:
        raise ContentError(f"{label} has no metadata.name")
    if not isinstance(meta, dict):
        raise ContentError(f"{label}: metadata must be a mapping")
    name = meta.get("name")
    if "generateName" in meta and (name is None or name == ""):
        raise ContentError(
            f"{label}: metadata.generateName alone is not supported; set metadata.name "
            "(gitferry updates and prunes objects by name)"
        )
    # Beside a name, generateName is ignored, as the API server ignores it.
    meta.pop("generateName", None)
    if name is None or name == "":
        raise ContentError(f"{label} has no metadata.name")
    if not isinstance(name, str):
        raise ContentError(f"{label}: metadata.name must be a string")
    namespace = meta.get("namespace")
    if namespace is None or namespace == "":
        meta.pop("namespace", None)
    elif not isinstance(namespace, str):
        raise ContentError(f"{label}: metadata.namespace must be a string")
    for field in ("labels", "annotations"):
        _check_string_map(meta, field, label)


def _check_string_map(meta: dict[str, Any], field: str, label: str) -> None:
    """metadata.labels/annotations: null is empty (as kubectl reads it); anything
    but a mapping of strings is refused naming the field (kubectl refuses too)."""
    value = meta.get(field)
    if value is None:
        meta.pop(field, None)
        return
    if not isinstance(value, dict):
        raise ContentError(
            f"{label}: metadata.{field} must be a mapping of strings, got {type_name(value)}"
        )
    for key, item in value.items():
        if not isinstance(item, str):
            raise ContentError(
                f"{label}: metadata.{field}.{key} must be a string, got {type_name(item)} "
                "(quote the value)"
            )


def clean(obj: dict[str, Any]) -> tuple[str, ...]:
    """Drop what the server owns; fold a Secret's stringData into data. Returns
    the keys folded (`Manifest.string_data`)."""
    obj.pop("status", None)
    meta = obj["metadata"]
    for key in SERVER_METADATA:
        meta.pop(key, None)
    if obj["kind"] == "Secret" and obj["apiVersion"] == "v1" and "stringData" in obj:
        string_data = obj.pop("stringData")
        if string_data is None:
            return ()
        label = f"Secret {meta['name']}"
        if not isinstance(string_data, dict):
            raise ContentError(f"{label}: stringData must be a mapping of strings")
        data = obj.get("data") or {}
        if not isinstance(data, dict):
            raise ContentError(f"{label}: data must be a mapping")
        merged = dict(data)
        for key, value in string_data.items():
            if not isinstance(value, str):
                # Name the key, never the value: it is secret.
                raise ContentError(f"{label}: stringData.{key} must be a string (quote it)")
            merged[key] = base64.b64encode(value.encode("utf-8")).decode("ascii")
        obj["data"] = merged  # stringData wins, as on the API server
        return tuple(string_data)
    return ()


def assign_namespaces(
    manifests: Iterable[Manifest],
    is_namespaced: Callable[[str, str], bool | None],
    default_namespace: str,
) -> list[Manifest]:
    """Namespaced objects without one get `default_namespace`; cluster-scoped
    objects lose theirs. Scope comes from CRDs in the same set first, then from
    `is_namespaced(group, kind)` (the caller's discovery; None = no such API).
    The inputs are not modified."""
    if not default_namespace:
        raise ValueError("default_namespace must not be empty")
    manifests = list(manifests)
    scopes = crd_scopes(manifests)
    out: list[Manifest] = []
    for m in manifests:
        namespaced = scopes.get((m.group, m.kind))
        if namespaced is None:
            namespaced = is_namespaced(m.group, m.kind)
        if namespaced is None:
            group_kind = f"{m.group}/{m.kind}" if m.group else m.kind
            raise RenderError(
                f"{m.source}: {m.describe()}: no API for {group_kind} (is its CRD installed?)"
            )
        meta = dict(m.metadata)
        if not namespaced:
            meta.pop("namespace", None)
        elif not meta.get("namespace"):
            meta["namespace"] = default_namespace
        out.append(replace(m, obj={**m.obj, "metadata": meta}))
    check_duplicates(out)
    return out


def check_duplicates(manifests: Iterable[Manifest]) -> None:
    """RenderError naming both files when one object is declared twice."""
    seen: dict[tuple[str, str, str | None, str], Manifest] = {}
    for m in manifests:
        key = (m.group, m.kind, m.namespace, m.name)
        first = seen.get(key)
        if first is not None:
            where = (
                f"in {first.source} and in {m.source}"
                if first.source != m.source
                else f"twice in {m.source}"
            )
            raise RenderError(f"{m.describe()} is declared {where}")
        seen[key] = m


def crd_scopes(manifests: Iterable[Manifest]) -> dict[tuple[str, str], bool]:
    scopes: dict[tuple[str, str], bool] = {}
    for m in manifests:
        if m.group != CRD_GROUP or m.kind != CRD_KIND:
            continue
        spec = m.obj.get("spec")
        if not isinstance(spec, dict):
            continue  # the API server will say what is wrong with it
        names = spec.get("names")
        group, kind = spec.get("group"), names.get("kind") if isinstance(names, dict) else None
        if isinstance(group, str) and isinstance(kind, str):
            scopes[(group, kind)] = spec.get("scope") == "Namespaced"
    return scopes
