"""What the cluster library raises: plain errors carrying the API server's words."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException


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


class LineTooLong(KubeError):
    """A streamed line (one watch event) grew past the bound; the stream is unusable."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(0, "LineTooLong", f"{what}: a line longer than {limit} bytes")
        self.limit = limit


class ApplyError(Exception):
    """Objects could not be applied; `message` names each object and its file and
    the API server's words. Nothing of the failing stage was written when its
    dry-run failed; when a write failed (after its dry-run, or a first apply's
    create without one), the message says which objects were written before."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
