"""What a push webhook tells: which repository, which ref, which paths changed."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .urls import repo_key

BRANCH_PREFIX = "refs/heads/"
TAG_PREFIX = "refs/tags/"


@dataclass(frozen=True)
class Push:
    """One ref updated (created, moved or deleted) in one repository."""

    # Every form of the repository's URL the payload gave (https, ssh, git@host:path,
    # the web page), as written; `repo_keys` is what matching compares.
    clone_urls: frozenset[str]
    ref: str  # "refs/heads/main", "refs/tags/v1"
    # The paths the pushed commits added, modified or removed; None when unknown
    # (the forge lists none, the list may be truncated, a force push or a new or
    # deleted ref): then anything may have changed.
    changed_paths: frozenset[str] | None
    after: str | None = None  # the commit (or tag object) the ref points at now
    # The repository's default branch, when the payload says.
    default_branch: str | None = None
    repo_keys: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = {repo_key(u) for u in self.clone_urls}
        object.__setattr__(self, "repo_keys", frozenset(k for k in keys if k))

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix(BRANCH_PREFIX) if self.ref.startswith(BRANCH_PREFIX) else None

    @property
    def tag(self) -> str | None:
        return self.ref.removeprefix(TAG_PREFIX) if self.ref.startswith(TAG_PREFIX) else None


class Kind(Enum):
    PUSH = "push"
    PING = "ping"  # the forge checks that the hook answers
    IGNORED = "ignored"  # an authenticated event that is not a push


@dataclass(frozen=True)
class Delivery:
    """One webhook request, parsed: its kind, the forge's own event name, and
    the pushes (one per ref: Bitbucket sends several refs in one request)."""

    kind: Kind
    event: str
    pushes: tuple[Push, ...] = ()
