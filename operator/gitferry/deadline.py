"""A deadline passed down to every API call and subprocess of one reconcile.

Shared by the libraries below the pipeline (git, render, kube): it raises a
plain `DeadlineExceeded`; the pipeline names the stage and the condition.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


class DeadlineExceeded(Exception):
    """The deadline passed; `what` says what was running (`fetch (git ls-remote …)`)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"the deadline passed during {what}")
        self.what = what
        self.message = str(self)


@dataclass(frozen=True)
class Deadline:
    """A point in time.monotonic() seconds; `seconds` is the length it was given."""

    at: float
    seconds: float = 0.0

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self, what: str) -> float:
        """Seconds left (> 0); raises DeadlineExceeded naming `what` when none are."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(what)
        return left
