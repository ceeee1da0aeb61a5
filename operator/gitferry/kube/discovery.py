"""Discovery: which kinds the API serves, their plural, scope and verbs."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from urllib.parse import quote

from ..deadline import Deadline
from .client import Kube
from .refs import split_api_version

# Aggregated discovery (Kubernetes >= 1.30): every group's resources in one GET.
_AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    verbs: frozenset[str] = frozenset()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
        return base


class Discovery:
    """Which kinds the API serves, their plural and scope; shared by all syncs."""

    def __init__(self, kube: Kube) -> None:
        self._kube = kube
        self._lock = threading.Lock()
        self._by_gvk: dict[tuple[str, str, str], Resource] = {}
        self._scope_by_gk: dict[tuple[str, str], bool] = {}
        self._by_gk: dict[tuple[str, str], Resource] = {}

    def refresh(self, deadline: Deadline | None = None) -> None:
        found: dict[tuple[str, str, str], Resource] = {}
        for root in ("/api", "/apis"):
            doc = self._kube.request("GET", root, deadline=deadline, accept=_AGGREGATED)
            if doc.get("kind") != "APIGroupDiscoveryList":
                raise RuntimeError("the API server does not serve aggregated discovery (v2)")
            for group in doc.get("items") or []:
                gname = (group.get("metadata") or {}).get("name", "")
                for ver in group.get("versions") or []:
                    vname = ver.get("version", "")
                    for res in ver.get("resources") or []:
                        kind = (res.get("responseKind") or {}).get("kind")
                        if not kind:
                            continue
                        r = Resource(
                            gname,
                            vname,
                            kind,
                            res["resource"],
                            res.get("scope") == "Namespaced",
                            frozenset(res.get("verbs") or ()),
                        )
                        found.setdefault((gname, vname, kind), r)
        # The preferred version comes first in aggregated discovery: keep it per kind.
        by_gk: dict[tuple[str, str], Resource] = {}
        for r in found.values():
            by_gk.setdefault((r.group, r.kind), r)
        with self._lock:
            self._by_gvk = found
            self._by_gk = by_gk
            self._scope_by_gk = {gk: r.namespaced for gk, r in by_gk.items()}

    def _get(self, key: tuple[str, str, str]) -> Resource | None:
        with self._lock:
            return self._by_gvk.get(key)

    def resource(
        self, api_version: str, kind: str, deadline: Deadline | None = None
    ) -> Resource | None:
        group, version = split_api_version(api_version)
        r = self._get((group, version, kind))
        if r is None:
            self.refresh(deadline)  # a CRD may have appeared since the last look
            r = self._get((group, version, kind))
        return r

    def for_group_kind(self, group: str, kind: str, version: str = "") -> Resource | None:
        """The resource at `version` if still served, else at the preferred version."""
        with self._lock:
            return self._by_gvk.get((group, version, kind)) or self._by_gk.get((group, kind))

    def listable(self, namespaced: bool | None = None) -> list[Resource]:
        """One resource per kind that can be listed (preferred version)."""
        with self._lock:
            rs = list(self._by_gk.values())
        return [
            r
            for r in rs
            if "list" in r.verbs and (namespaced is None or r.namespaced == namespaced)
        ]

    def is_namespaced(self, group: str, kind: str) -> bool | None:
        with self._lock:
            return self._scope_by_gk.get((group, kind))

    def knows(self, group: str, kind: str, deadline: Deadline | None = None) -> bool:
        """Whether the API serves the kind, refreshing once when it seems not to:
        a CRD installed since the last look must not need an operator restart."""
        if self.is_namespaced(group, kind) is None:
            self.refresh(deadline)
        return self.is_namespaced(group, kind) is not None
