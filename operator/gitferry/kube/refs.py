"""ObjRef: which object in the cluster, independent of its version."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


@dataclass(frozen=True, order=True)
class ObjRef:
    group: str
    kind: str
    namespace: str
    name: str

    @classmethod
    def of(cls, obj: dict[str, Any]) -> ObjRef:
        meta = obj.get("metadata") or {}
        group, _ = split_api_version(obj.get("apiVersion", ""))
        return cls(group, obj.get("kind", ""), meta.get("namespace") or "", meta.get("name", ""))

    @property
    def id(self) -> str:
        """The inventory id: `<namespace>_<name>_<group>_<Kind>` (Flux's format)."""
        return f"{self.namespace}_{self.name}_{self.group}_{self.kind}"

    @classmethod
    def from_id(cls, id_: str) -> ObjRef:
        # Namespaces, groups and kinds never hold "_"; names can (RBAC objects):
        # split the fixed parts off both ends.
        rest, group, kind = id_.rsplit("_", 2)
        namespace, name = rest.split("_", 1)
        return cls(group, kind, namespace, name)

    def describe(self) -> str:
        """`Kind/namespace/name`, or `Kind/name` for cluster-scoped objects."""
        if self.namespace:
            return f"{self.kind}/{self.namespace}/{self.name}"
        return f"{self.kind}/{self.name}"

    def __str__(self) -> str:
        return self.describe()
