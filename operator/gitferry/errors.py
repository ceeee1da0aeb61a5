"""Typed failures of the reconcile stages, and the one place that names them.

Each `SyncError` carries the condition reason it maps to and whether retrying
can help (`stalled`); the status stage reads both from here and nowhere else.
The libraries below the pipeline (`source`, `render`, `kube`) raise plain
errors; `classify(stage, error)` turns whatever a stage raised into a
`SyncError`, per stage, so a timeout while fetching reads `GitFetchFailed` and
never `ApplyFailed`, and an internal error is never reported as a stage failure.
Messages are for users: they name the file, the object and the API server's
words, and never a credential or a traceback.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from enum import StrEnum

from .constants import Reason
from .deadline import DeadlineExceeded
from .kube import ApplyError, KubeError
from .render import PathError, RenderError, SubstitutionError
from .source import (
    AuthError,
    FetchError,
    InvalidRef,
    InvalidURL,
    RevisionMissing,
    SourceBusy,
    SourceError,
)

log = logging.getLogger("gitferry.errors")


class SyncError(Exception):
    """A reconcile failed for a reason a user can act on."""

    reason: str = Reason.RECONCILIATION_FAILED
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


class RenderTimedOut(SyncError):
    """Rendering ran out of time: a retry may finish (not Stalled)."""

    reason = Reason.RENDER_FAILED


class SubstitutionFailed(SyncError):
    """spec.postBuild could not substitute: a variable unset with no default
    (strict), a ConfigMap or Secret missing or unreadable, a key that is no
    variable name, or a `${…}` that git's content writes wrong. Flux reports
    all of them as BuildFailed, which is gitferry's RenderFailed. Not Stalled:
    the fix may be a change to a ConfigMap or Secret, which no event announces,
    so the retry is what finds it."""

    reason = Reason.RENDER_FAILED


# --- apply / prune --------------------------------------------------------
class ApplyFailed(SyncError):
    reason = Reason.APPLY_FAILED


class OwnershipConflict(SyncError):
    reason = Reason.OWNERSHIP_CONFLICT


class PruneRefused(SyncError):
    reason = Reason.PRUNE_REFUSED


class PruneFailed(SyncError):
    reason = Reason.PRUNE_FAILED


# --- dependencies ---------------------------------------------------------
class DependencyNotReady(SyncError):
    """A sync in spec.dependsOn is not Ready yet: retried, and woken at once
    when it becomes Ready."""

    reason = Reason.DEPENDENCY_NOT_READY


class DependencyCycle(SyncError):
    """spec.dependsOn leads back to the sync itself: no order can satisfy it."""

    reason = Reason.DEPENDENCY_CYCLE
    stalled = True


# --- health ---------------------------------------------------------------
class HealthCheckFailed(SyncError):
    """An object failed, or was not healthy within spec.timeout."""

    reason = Reason.HEALTH_CHECK_FAILED


class InternalError(SyncError):
    """A bug in gitferry: the log has the traceback, the status only this."""

    reason = Reason.RECONCILIATION_FAILED


class Deferred(Exception):  # noqa: N818 - a state, not a failure
    """The stage cannot start now without holding a thread (another fetch of the
    same repository or host is in flight): retry in a moment, write nothing."""


class ShuttingDown(Exception):  # noqa: N818 - a state, not a failure
    """The operator is stopping: the reconcile ends at a stage boundary and
    writes nothing (no status, no Event, no prune); the next start redoes it."""


class Stage(StrEnum):
    """The stages of one reconcile, in order (README "How one sync runs")."""

    SPEC = "spec"
    DEPENDENCIES = "dependencies"
    FETCH = "fetch"
    RENDER = "render"
    OWNERSHIP = "ownership"
    APPLY = "apply"
    PRUNE = "prune"
    HEALTH = "health"
    STATUS = "status"


# What a timeout or an API error means in each stage. Ownership reads live
# objects before apply writes them: a failure there is an apply failure.
_STAGE_ERROR: dict[Stage, type[SyncError]] = {
    Stage.SPEC: InvalidSpec,
    Stage.DEPENDENCIES: DependencyNotReady,
    Stage.FETCH: GitFetchFailed,
    Stage.RENDER: RenderTimedOut,
    Stage.OWNERSHIP: ApplyFailed,
    Stage.APPLY: ApplyFailed,
    Stage.PRUNE: PruneFailed,
    Stage.HEALTH: HealthCheckFailed,
    Stage.STATUS: SyncError,
}

# Library errors whose kind, not the stage, decides the reason.
_LIBRARY_ERROR: tuple[tuple[type[Exception], type[SyncError]], ...] = (
    (InvalidURL, URLInvalid),
    (InvalidRef, InvalidSpec),
    (AuthError, AuthenticationFailed),
    (RevisionMissing, RevisionNotFound),
    (FetchError, GitFetchFailed),
    (SourceError, GitFetchFailed),
    (PathError, PathNotFound),
    (SubstitutionError, SubstitutionFailed),
    (RenderError, RenderFailed),
    (ApplyError, ApplyFailed),
)


def classify(stage: Stage, error: BaseException, timeout: float | None = None) -> SyncError:
    """The SyncError for `error` raised while `stage` ran.

    - a SyncError is kept as it is;
    - a library error maps by its kind (`_LIBRARY_ERROR`);
    - `DeadlineExceeded` and `KubeError` map to the stage's own failure
      (`_STAGE_ERROR`): "timed out after 2m0s during fetch (git fetch …)";
    - anything else is an `InternalError` naming the stage (a bug).

    `timeout` is spec.timeout in seconds, for the message."""
    if isinstance(error, SyncError):
        return error
    for library_type, sync_type in _LIBRARY_ERROR:
        if isinstance(error, library_type):
            return sync_type(str(error))
    stage_type = _STAGE_ERROR[stage]
    if isinstance(error, DeadlineExceeded):
        after = f" after {format_seconds(timeout)}" if timeout else ""
        return stage_type(f"spec.timeout: timed out{after} during {error.what}")
    if isinstance(error, KubeError):
        return stage_type(f"{stage.value}: {error.message}")
    return InternalError(f"internal error during {stage.value}: {type(error).__name__}: {error}")


def format_seconds(seconds: float) -> str:
    """Go-style duration text: 90.0 -> "1m30s", 0.25 -> "250ms"."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    total = round(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return (f"{h}h" if h else "") + (f"{m}m" if m or h else "") + f"{s}s"


@contextlib.contextmanager
def in_stage(stage: Stage, timeout: float | None = None) -> Iterator[None]:
    """Run a block as `stage`: whatever it raises leaves as a SyncError
    (`classify`). An internal error's traceback goes to the log, never to status."""
    try:
        yield
    except ShuttingDown:
        raise
    except SourceBusy as e:
        raise Deferred(str(e)) from e
    except Exception as e:
        error = classify(stage, e, timeout)
        if isinstance(error, InternalError):
            log.exception("stage=%s error=internal", stage.value)
        if error is e:
            raise
        raise error from e
