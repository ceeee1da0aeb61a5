"""A thin, typed door to the Kubernetes API: raw paths, dicts in and out.

The generated per-kind clients cannot apply arbitrary kinds, and the dynamic
client rediscovers the whole API for every client it builds; gitferry needs one
discovery shared by every sync and one connection pool for every identity
(impersonation is a request header), so
it talks to the API server through `ApiClient.call_api` and its own discovery.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from ..deadline import Deadline
from .errors import KubeError, LineTooLong

APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# One API call never waits longer than this, whatever the deadline says.
MAX_CALL_SECONDS = 30.0
# A stream's error answer (a Status) is read up to this many bytes.
_MAX_ERROR_BODY = 64 * 1024


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

    def stream(
        self,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        accept: str = "application/json",
        connect_timeout: float = 10.0,
        read_timeout: float = MAX_CALL_SECONDS,
    ) -> Stream:
        """GET `path` and hand back its body as a Stream (a watch), once the API
        server answered 2xx; a non-2xx answer raises KubeError with its status.

        `read_timeout` bounds each wait for more bytes, not the whole response.
        The caller must close() the stream; its connection is never reused."""
        headers = {"Accept": accept}
        if self.impersonate:
            headers["Impersonate-User"] = self.impersonate
        method_, url, headers, _, _ = self._api.param_serialize(
            method="GET",
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params=headers,
            auth_settings=["BearerToken"],
        )
        try:
            resp = self._api.call_api(
                method_,
                url,
                header_params=headers,
                _request_timeout=(connect_timeout, read_timeout),
            )
        except ApiException as e:
            raise KubeError.from_api_exception(e) from None
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise KubeError(0, "ConnectionError", f"GET {path}: {type(e).__name__}: {e}") from None
        raw = resp.response
        if not 200 <= resp.status < 300:
            try:
                body = raw.read(_MAX_ERROR_BODY)
            except (urllib3.exceptions.HTTPError, OSError):
                body = b""
            finally:
                raw.close()
            raise KubeError.from_api_exception(
                ApiException(resp.status, resp.reason, body=body.decode("utf-8", "replace"))
            )
        return Stream(raw, f"GET {path}")


class Stream:
    """A response read as it arrives, line by line (a watch): `lines()` on one
    thread, `abort()` from any other to end it at once, whatever it waits for."""

    def __init__(self, response: Any, what: str) -> None:
        self._response = response  # urllib3's HTTPResponse, not preloaded
        self._what = what
        self._lock = threading.Lock()
        self._closed = False

    def lines(self, max_line_bytes: int) -> Iterator[bytes]:
        """Each line (without its newline) as soon as it is complete; raises
        LineTooLong when one grows past `max_line_bytes`, KubeError (status 0)
        when the connection breaks. Ends when the server ends the response."""
        buf = bytearray()
        while True:
            try:
                chunk = self._response.read1(64 * 1024)
            except (urllib3.exceptions.HTTPError, OSError, ValueError, AttributeError) as e:
                # ValueError/AttributeError: the response was closed under the read.
                raise KubeError(
                    0, "ConnectionError", f"{self._what}: {type(e).__name__}: {e}"
                ) from None
            if not chunk:
                if buf.strip():
                    yield bytes(buf)
                return
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                if len(buf) + end - start > max_line_bytes:
                    raise LineTooLong(self._what, max_line_bytes)
                buf += chunk[start:end]
                if buf.strip():
                    yield bytes(buf)
                buf.clear()
                start = end + 1
            buf += chunk[start:]
            if len(buf) > max_line_bytes:
                raise LineTooLong(self._what, max_line_bytes)

    def abort(self) -> None:
        """Shut the socket down under a blocked read, from another thread: the
        reader sees the connection end at once instead of at its read timeout."""
        with self._lock:
            if self._closed:
                return
        # Already closed or released: nothing is blocked on it.
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            self._response.shutdown()

    def close(self) -> None:
        """Close the connection: a stream's connection never goes back to the pool."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(OSError, urllib3.exceptions.HTTPError):
            self._response.close()
