"""A thin, typed door to the Kubernetes API: raw paths, dicts in and out.

The generated per-kind clients cannot apply arbitrary kinds, and the dynamic
client rediscovers the whole API for every client it builds; gitferry needs one
discovery shared by every sync and one client per identity (impersonation), so
it talks to the API server through `ApiClient.call_api` and its own discovery.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from .deadline import Deadline
from .refs import split_api_version

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"

# Aggregated discovery (Kubernetes >= 1.30): every group's resources in one GET.
_AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"

# One API call never waits longer than this, whatever the deadline says.
MAX_CALL_SECONDS = 30.0


class KubeError(Exception):
    """An API call failed; `message` holds the API server's own words."""

    def __init__(
        self, status: int, reason: str, message: str, details: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.details = dict(details or {})

    @classmethod
    def from_api_exception(cls, e: ApiException) -> KubeError:
        status = int(e.status or 0)
        reason = str(e.reason or "")
        message = reason
        details: dict[str, Any] = {}
        try:
            body = json.loads(e.body) if e.body else {}
            message = body.get("message") or message
            reason = body.get("reason") or reason
            details = body.get("details") or {}
        except (TypeError, ValueError):
            pass
        return cls(status, reason, message, details)

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def invalid(self) -> bool:
        return self.status == 422


def load_configuration(kubeconfig: str | None = None) -> k8s.Configuration:
    """In-cluster credentials when running in a Pod, else the kubeconfig."""
    cfg = k8s.Configuration()
    try:
        if kubeconfig:
            raise k8s_config.ConfigException("kubeconfig given")
        k8s_config.load_incluster_config(client_configuration=cfg)
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    # urllib3 would retry a hung call three times, each with a fresh timeout: the
    # deadline bounds one attempt, and the reconcile retries on its own schedule.
    cfg.retries = False
    return cfg


class Kube:
    """API calls as one identity (the operator, or an impersonated ServiceAccount)."""

    def __init__(self, configuration: k8s.Configuration, impersonate: str | None = None) -> None:
        self.configuration = configuration
        self.impersonate = impersonate
        self._api = k8s.ApiClient(configuration)
        if impersonate:
            self._api.set_default_header("Impersonate-User", impersonate)

    def as_user(self, user: str | None) -> Kube:
        return self if user == self.impersonate else Kube(self.configuration, user)

    def close(self) -> None:
        self._api.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        deadline: Deadline | None = None,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
        accept: str = "application/json",
    ) -> dict[str, Any]:
        timeout = MAX_CALL_SECONDS
        if deadline is not None:
            timeout = min(timeout, deadline.remaining(f"{method} {path}"))
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        method_, url, headers, body_, _ = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            resp = self._api.call_api(
                method_, url, header_params=headers, body=body_, _request_timeout=timeout
            )
            raw = resp.read()
        except ApiException as e:
            raise KubeError.from_api_exception(e) from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            if deadline is not None:
                deadline.remaining(f"{method} {path}")  # DeadlineExceeded when it ran out
            raise KubeError(
                0, "ConnectionError", f"{method} {path}: {type(e).__name__}: {e}"
            ) from None
        if not 200 <= resp.status < 300:
            raise KubeError.from_api_exception(ApiException(http_resp=resp))
        data = json.loads(raw) if raw else {}
        return data if isinstance(data, dict) else {}


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
