"""Is a webhook request from the forge that holds our secret?

Each forge proves it differently (one row each in `SCHEMES`):

- an HMAC-SHA256 of the raw body, hex, as `sha256=<hex>` (GitHub's
  `X-Hub-Signature-256`, Bitbucket's `X-Hub-Signature`, our generic
  `X-Signature-256`) or bare (Gitea's `X-Gitea-Signature`, Forgejo's
  `X-Forgejo-Signature`);
- the secret itself in a header (GitLab's `X-Gitlab-Token`).

Every comparison is constant-time. The first of a forge's headers that is present
is the one checked: a bad signature is never rescued by another header. None of
these schemes signs a timestamp, so a captured delivery can be replayed; a replay
only asks for a reconcile that finds nothing new.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from enum import Enum

from .forges import (
    BITBUCKET_CLOUD,
    BITBUCKET_SERVER,
    GENERIC,
    GITEA,
    GITHUB,
    GITLAB,
    check_forge,
)


class Kind(Enum):
    PREFIXED_HMAC = "sha256=<hex HMAC-SHA256 of the body>"
    HEX_HMAC = "<hex HMAC-SHA256 of the body>"
    TOKEN = "<the secret>"


# forge -> (header, how it proves the secret), in the order they are looked for.
SCHEMES: dict[str, tuple[tuple[str, Kind], ...]] = {
    GITHUB: (("X-Hub-Signature-256", Kind.PREFIXED_HMAC),),
    GITLAB: (("X-Gitlab-Token", Kind.TOKEN),),
    GITEA: (
        ("X-Gitea-Signature", Kind.HEX_HMAC),
        ("X-Forgejo-Signature", Kind.HEX_HMAC),
        ("X-Hub-Signature-256", Kind.PREFIXED_HMAC),
    ),
    BITBUCKET_SERVER: (("X-Hub-Signature", Kind.PREFIXED_HMAC),),
    BITBUCKET_CLOUD: (("X-Hub-Signature", Kind.PREFIXED_HMAC),),
    GENERIC: (("X-Signature-256", Kind.PREFIXED_HMAC),),
}


def lower_keys(headers: Mapping[str, str]) -> dict[str, str]:
    """Header names are case-insensitive: one spelling to look them up by."""
    return {k.lower(): v for k, v in headers.items()}


def _proof(forge: str, headers: Mapping[str, str]) -> tuple[str, Kind] | None:
    h = lower_keys(headers)
    for name, kind in SCHEMES[check_forge(forge)]:
        value = h.get(name.lower())
        if value is not None:
            return value, kind
    return None


def signed(forge: str, headers: Mapping[str, str]) -> bool:
    """Whether the request carries any of the forge's signature or token headers
    (a request without one is unauthenticated; with a wrong one, forbidden)."""
    return _proof(forge, headers) is not None


def _equal(given: str, expected: bytes) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected)


def verify(forge: str, headers: Mapping[str, str], body: bytes, secret: bytes | str) -> bool:
    """True when the request proves it knows `secret`; False when it carries no
    proof, a wrong one, or one made with another algorithm. Raises UnknownForge."""
    key = secret.encode() if isinstance(secret, str) else secret
    proof = _proof(forge, headers)
    if not key or proof is None:
        return False
    value, kind = proof
    if kind is Kind.TOKEN:
        return _equal(value, key)
    mac = hmac.new(key, body, hashlib.sha256).hexdigest().encode()
    if kind is Kind.PREFIXED_HMAC:
        algorithm, sep, value = value.partition("=")
        if not sep or algorithm.strip().lower() != "sha256":
            return False
    return _equal(value.strip().lower(), mac)


def sign(body: bytes, secret: bytes | str) -> str:
    """`sha256=<hex>`: what a sender puts in a prefixed-HMAC header (tests, the generic
    hook's senders)."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
