"""What an Alert says about a SyncReport, and when it stays silent: pure
functions over a small per-sync memory, unit tested without a cluster.

Chat (`chat_notice`): one message per event that matters —

- **failed**: a failure, once. The pipeline reports a failure on every retry;
  the same failure (`dedupe_key`: the sync's uid, the phase, the reason and the
  message with timestamps, durations and counters taken out) is not sent again
  while it lasts, and a failure seen in the last `FLAP_WINDOW` seconds of the
  same failing streak is not sent again either (two failures taking turns);
- **recovered**: the first success after failures, saying for how long the
  sync was failing ("Ready again after 4m"), sent at either severity;
- **applied** (severity info): a success that changed objects or brought a new
  revision. A success that changed nothing on a revision already seen (every
  interval) is silent, and so is a drift correction identical to the last one.

A `pending` report is never a chat message: "applying" followed by "applied"
would be two messages for one event. Reasons (`spec.reasons`) filter failures
and applied messages; a recovery is sent only for a failure that was.

Commit statuses (`commit_status`): pending, success and failure of the revision's
commit, each state posted once per commit (`posted`), and never a failure that
is not the commit's fault (git unreachable, a dependency not ready: the
revision is the previous one, whose status must stay as it was).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from ..constants import Reason
from ..errors import format_seconds
from ..notify.chat import Message
from ..notify.forges import Status, sha_of
from ..reports import Phase, SyncReport
from .api import AlertSpec, Severity

MAX_CHANGES = 20  # objects listed in one message; the rest are counted
MAX_MESSAGE = 2000  # characters of a failure message in chat
FLAP_WINDOW = 600.0  # seconds: a failure sent this recently in a streak is not resent

# What is taken out of a message before it becomes part of a dedupe key: the
# same failure, retried, must give the same key. Policy as data.
_VOLATILE: tuple[tuple[re.Pattern[str], str], ...] = (
    # RFC 3339 timestamps (status times, API server messages)
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?"), "<time>"),
    # Go-style durations as gitferry and Kubernetes write them: 812ms, 2.5s, 1h30m
    (re.compile(r"(?<![\w.-])\d+(\.\d+)?(ns|us|µs|ms|s|m|h)(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))*(?![\w.-])"), "<duration>"),  # noqa: E501
    # counters: attempt 3, retry #2, 5 retries, (x4)
    (re.compile(r"\b(attempt|retry|try)\s*#?\d+", re.I), r"\1 <n>"),
    (re.compile(r"\b\d+\s*(attempts|retries|tries|times)\b", re.I), r"<n> \1"),
    (re.compile(r"\(x\d+\)"), "(x<n>)"),
    # an object's resourceVersion changes with every write
    (re.compile(r'resourceVersion[\s:=]*"?\d+"?'), "resourceVersion=<n>"),
)  # fmt: skip

# Failures that are not the fault of the revision the report names (the one
# attempted before): no commit status is posted for them.
NOT_THE_COMMITS_FAULT = frozenset(
    {
        Reason.GIT_FETCH_FAILED,
        Reason.AUTHENTICATION_FAILED,
        Reason.REVISION_NOT_FOUND,
        Reason.URL_INVALID,
        Reason.INVALID_SPEC,
        Reason.DEPENDENCY_NOT_READY,
        Reason.DEPENDENCY_CYCLE,
    }
)


@functools.lru_cache(maxsize=1024)  # one report is judged by every Alert of its namespace
def normalize(message: str) -> str:
    """`message` without what changes from one retry to the next."""
    for pattern, placeholder in _VOLATILE:
        message = pattern.sub(placeholder, message)
    return " ".join(message.split())


def dedupe_key(report: SyncReport) -> tuple[str, str, str, str]:
    """Equal for the same failure retried: no timestamp, duration or counter."""
    return (report.uid, report.phase.value, report.reason, normalize(report.message))


@dataclass
class SyncMemory:
    """What one Alert remembers of one sync (by uid)."""

    failing_since: float | None = None  # time.monotonic() of the first failure notified
    failing_reason: str = ""
    last_failure: tuple[str, str, str, str] | None = None
    failures_sent: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    revision: str | None = None  # the last successful revision seen
    last_applied: tuple[str, tuple[str, ...]] | None = None
    posted: tuple[str, str] | None = None  # commit status: (sha, state) last posted


def short_revision(revision: str) -> str:
    """`main@sha1:3f2a9c4e1b2d` (12 hex digits) for titles."""
    head, sep, hexpart = revision.rpartition("sha1:")
    return f"{head}{sep}{hexpart[:12]}" if sep else revision


def chat_notice(spec: AlertSpec, report: SyncReport, memory: SyncMemory, now: float) -> Message | None:  # fmt: skip
    """The chat message `report` is worth to an Alert with `spec`, or None;
    updates `memory`."""
    if report.phase == Phase.PENDING:
        return None
    if report.phase == Phase.FAILED:
        if not spec.reasons.allows(report.reason):
            return None
        key = dedupe_key(report)
        if memory.failing_since is None:
            memory.failing_since, memory.failing_reason = now, report.reason
        if key == memory.last_failure:
            return None  # the same failure, retried
        memory.last_failure = key
        sent = memory.failures_sent.get(key)
        memory.failures_sent = {k: t for k, t in memory.failures_sent.items()
                                if now - t < FLAP_WINDOW}  # fmt: skip
        if sent is not None and now - sent < FLAP_WINDOW:
            return None  # two failures taking turns: each is said once per window
        memory.failures_sent[key] = now
        return failed_message(spec, report)
    # Phase.SUCCEEDED
    seen, memory.revision = memory.revision, report.revision
    if memory.failing_since is not None:
        failed_for = now - memory.failing_since
        reason = memory.failing_reason
        memory.failing_since, memory.last_failure, memory.failures_sent = None, None, {}
        memory.last_applied = (report.revision, report.changes)
        return recovered_message(spec, report, failed_for, reason)
    if spec.severity == Severity.ERROR or not spec.reasons.allows(report.reason):
        return None
    new_revision = seen is not None and seen != report.revision
    if not report.changes and not new_revision:
        return None
    applied = (report.revision, report.changes)
    if applied == memory.last_applied:
        return None  # the same drift put back again
    memory.last_applied = applied
    return applied_message(spec, report)


def _head(spec: AlertSpec) -> list[str]:
    return [spec.summary] if spec.summary else []


def _commit(report: SyncReport) -> list[str]:
    lines = [f"Revision: {report.revision}"] if report.revision else []
    if report.subject:
        lines.append(f"Commit: {report.subject}" + (f" ({report.author})" if report.author else ""))
    return lines


def _changes(changes: tuple[str, ...]) -> list[str]:
    if not changes:
        return ["No objects changed."]
    lines = [f"Changed ({len(changes)}):"] + [f"- {c}" for c in changes[:MAX_CHANGES]]
    if len(changes) > MAX_CHANGES:
        lines.append(f"… and {len(changes) - MAX_CHANGES} more")
    return lines


def applied_message(spec: AlertSpec, report: SyncReport) -> Message:
    if report.drift:  # no commit changed anything: changes made outside git were put back
        title = f"{report.key} corrected drift at {short_revision(report.revision)}"
        body = _head(spec) + _commit(report) + ["Changed outside git, put back:"]
        body += _changes(report.changes)[1:] if report.changes else _changes(())
        return Message(title, "\n".join(body), "success")
    title = f"{report.key} applied {short_revision(report.revision)}"
    body = _head(spec) + _commit(report) + _changes(report.changes)
    return Message(title, "\n".join(body), "success")


def failed_message(spec: AlertSpec, report: SyncReport) -> Message:
    title = f"{report.key} failed: {report.reason}"
    text = report.message
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 1] + "…"
    body = _head(spec) + _commit(report) + [text]
    return Message(title, "\n".join(body), "failure")


def recovered_message(
    spec: AlertSpec, report: SyncReport, failed_for: float, reason: str
) -> Message:
    title = f"{report.key} is Ready again after {format_seconds(failed_for)}"
    body = (
        _head(spec)
        + [f"Ready again after {format_seconds(failed_for)} failing ({reason})."]
        + _commit(report)
        + _changes(report.changes)
    )
    return Message(title, "\n".join(body), "success")


def status_context(namespace: str, name: str, cluster: str | None = None) -> str:
    """The stable commit-status key of a sync: branch protection requires it by name."""
    return "/".join(["gitferry", *([cluster] if cluster else []), namespace, name])


def commit_status(
    report: SyncReport, memory: SyncMemory, context: str
) -> tuple[str, Status] | None:
    """(sha, status) to post for `report`, or None: no commit named, not the
    commit's fault, or this state already posted on this commit."""
    sha = sha_of(report.revision)
    if sha is None:
        return None
    short = short_revision(report.revision)
    if report.phase == Phase.PENDING:
        status = Status("pending", context, f"applying {short}")
    elif report.phase == Phase.SUCCEEDED:
        status = Status("success", context, f"applied {short}")
    else:
        if report.reason in NOT_THE_COMMITS_FAULT:
            return None
        status = Status("failure", context, f"{report.reason}: {report.message}")
    if memory.posted == (sha, status.state):
        return None
    memory.posted = (sha, status.state)
    return sha, status
