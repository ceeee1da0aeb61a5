"""A thin, typed door to the Kubernetes API: raw paths, dicts in and out.

The generated per-kind clients cannot apply arbitrary kinds, and the dynamic
client rediscovers the whole API for every client it builds; gitferry needs one
discovery shared by every sync and one connection pool for every identity
(impersonation is a request header), so
it talks to the API server through `ApiClient.call_api` and its own discovery.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from ..deadline import Deadline
from .errors import KubeError

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# One API call never waits longer than this, whatever the deadline says.
MAX_CALL_SECONDS = 30.0


def load_configuration(
    kubeconfig: str | None = None, pool_size: int | None = None
) -> k8s.Configuration:
    """In-cluster credentials when running in a Pod, else the kubeconfig.

    `pool_size` (connections) should cover every thread that calls at once, or
    urllib3 discards connections ("Connection pool is full")."""
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
    if pool_size:
        cfg.connection_pool_maxsize = pool_size
    return cfg


class Kube:
    """API calls as one identity: the operator, or a user it impersonates.

    Every identity shares one ApiClient and so one connection pool; impersonation
    is the `Impersonate-User` header of each request (Kubernetes' user
    impersonation), never a client per identity."""

    def __init__(
        self,
        configuration: k8s.Configuration,
        impersonate: str | None = None,
        *,
        _api: k8s.ApiClient | None = None,
    ) -> None:
        self.configuration = configuration
        self.impersonate = impersonate
        self._api = _api or k8s.ApiClient(configuration)

    def as_user(self, user: str | None) -> Kube:
        """The same pool, calling as `user` (None: as the operator itself)."""
        if user == self.impersonate:
            return self
        return Kube(self.configuration, user, _api=self._api)

    def close(self) -> None:
        """Close the shared pool: every Kube made by as_user stops working too."""
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
        if self.impersonate:
            headers["Impersonate-User"] = self.impersonate
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
