"""What the notification library raises, and the redaction every message passes."""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "***"
# Pieces of a secret shorter than this are left alone: redacting "1" or "api"
# would garble every message and hide nothing.
MIN_SECRET_PIECE = 4


class NotifyError(Exception):
    """A delivery failed. `message` is safe to show (no URL, token or password);
    `retryable` is False when trying again cannot help (401, 404, a bad URL)."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable

    def __str__(self) -> str:
        return self.message


# A URL in a library's message: Apprise masks passwords by keeping their first
# and last characters (`mailto://***:M...7@…`), which is still part of a secret.
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://\S+")


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret (longest first) replaced by
    `***`, and every URL (`scheme://…`, however a library masked it) by
    `<url>`; pieces shorter than MIN_SECRET_PIECE characters are left alone."""
    pieces = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_PIECE}, key=len, reverse=True)
    if pieces:
        pattern = re.compile("|".join(re.escape(p) for p in pieces))
        text = pattern.sub(REDACTED, text)
    return _URL.sub("<url>", text)
