"""Push webhooks: is a request from the forge, and what did it push?

A library: it knows nothing of GitRepositorySync (the pipeline's `receiver`
matches pushes against syncs) and raises plain errors (`WebhookError` and its
kinds). Its seams, a module each: `forges` (the names), `signatures` (verify a
request against a secret, constant-time), `payloads` (a body → `Delivery` of
`Push` values), `urls` (one key per repository, however its URL is written),
`paths` (did a push touch a directory).
"""

from __future__ import annotations

from .errors import PayloadError, UnknownForge, WebhookError
from .forges import FORGES
from .paths import clean_path, touches
from .payloads import parse
from .push import Delivery, Kind, Push
from .signatures import sign, signed, verify
from .urls import repo_key

__all__ = [
    "FORGES",
    "Delivery",
    "Kind",
    "PayloadError",
    "Push",
    "UnknownForge",
    "WebhookError",
    "clean_path",
    "parse",
    "repo_key",
    "sign",
    "signed",
    "touches",
    "verify",
]
