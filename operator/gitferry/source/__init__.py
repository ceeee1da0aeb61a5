"""The git source: fetch a revision of a repository into a shared, bounded cache.

A library: it knows nothing of GitRepositorySync and raises plain errors
(`SourceError` and its kinds, `DeadlineExceeded`). Its seams, a module each:
`urls` (URL policy), `refs` (ref and semver policy), `credentials`, `runner`
(the hardened git runner), `cache` (the disk cache), `history` (who changed what,
read offline from the mirror with GitPython), `fetcher` (GitSource).
"""

from __future__ import annotations

from .credentials import GitCredentials
from .errors import (
    AuthError,
    FetchError,
    InvalidRef,
    InvalidURL,
    RevisionMissing,
    SourceBusy,
    SourceError,
)
from .fetcher import Checkout, GitSource, SourceSettings
from .history import ChangedPaths, HistoryLimits, PathChange, RevisionInfo, commit_of
from .refs import GitRef, validate_ref
from .urls import parse_url, redact_url

__all__ = [
    "AuthError",
    "ChangedPaths",
    "Checkout",
    "FetchError",
    "GitCredentials",
    "GitRef",
    "GitSource",
    "HistoryLimits",
    "InvalidRef",
    "InvalidURL",
    "PathChange",
    "RevisionInfo",
    "RevisionMissing",
    "SourceBusy",
    "SourceError",
    "SourceSettings",
    "commit_of",
    "parse_url",
    "redact_url",
    "validate_ref",
]
