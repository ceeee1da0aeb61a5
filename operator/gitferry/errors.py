"""Typed failures of the reconcile stages.

Each exception carries the condition reason it maps to and whether retrying can
help (``stalled``): the status stage reads both from here and nowhere else.
Messages are for users: they name the file, the object and the API server's
words, and never a credential or a traceback.
"""

from __future__ import annotations

from .constants import Reason


class SyncError(Exception):
    """A reconcile failed for a reason a user can act on."""

    reason: str = Reason.APPLY_FAILED
    stalled: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- spec -----------------------------------------------------------------
class InvalidSpec(SyncError):
    reason = Reason.INVALID_SPEC
    stalled = True


# --- fetch ----------------------------------------------------------------
class GitFetchFailed(SyncError):
    reason = Reason.GIT_FETCH_FAILED


class AuthenticationFailed(SyncError):
    reason = Reason.AUTHENTICATION_FAILED


class RevisionNotFound(SyncError):
    reason = Reason.REVISION_NOT_FOUND


class URLInvalid(SyncError):
    reason = Reason.URL_INVALID
    stalled = True


# --- render ---------------------------------------------------------------
class PathNotFound(SyncError):
    reason = Reason.PATH_NOT_FOUND
    stalled = True


class RenderFailed(SyncError):
    """An error in git's content: only a new commit can fix it."""

    reason = Reason.RENDER_FAILED
    stalled = True


# --- apply / prune --------------------------------------------------------
class ApplyFailed(SyncError):
    reason = Reason.APPLY_FAILED


class OwnershipConflict(SyncError):
    reason = Reason.OWNERSHIP_CONFLICT


class PruneRefused(SyncError):
    reason = Reason.PRUNE_REFUSED


class PruneFailed(SyncError):
    reason = Reason.PRUNE_FAILED


class HealthCheckFailed(SyncError):
    reason = Reason.HEALTH_CHECK_FAILED


class DeadlineExceeded(SyncError):
    """spec.timeout ran out; the stage that was running is named."""

    reason = Reason.APPLY_FAILED
