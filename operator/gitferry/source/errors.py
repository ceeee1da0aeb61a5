"""What the git source raises: plain errors with a user-facing message that
never holds a credential. The pipeline above maps them to condition reasons."""

from __future__ import annotations


class SourceError(Exception):
    """Fetching a revision failed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class FetchError(SourceError):
    """git could not reach or read the remote (network, server, size limit).
    `timed_out`: git ran past its time, so the host may not be answering at all."""

    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class SourceBusy(SourceError):
    """Another fetch of the same repository or host is in flight and the slots are
    taken: nothing was asked; try again in a moment (its answer will be shared)."""


class AuthError(SourceError):
    """The credentials or the host key were refused, or cannot be used."""


class RevisionMissing(SourceError):
    """The branch, tag, semver range or commit names nothing in the remote."""


class InvalidURL(SourceError):
    """The URL is not one gitferry may hand to git; retrying cannot help."""


class InvalidRef(SourceError):
    """The branch, tag, commit or semver range cannot be valid; retrying cannot help."""
