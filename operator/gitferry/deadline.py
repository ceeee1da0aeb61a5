"""A deadline passed down to every API call and subprocess of one reconcile."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .errors import DeadlineExceeded


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic() value

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self, stage: str) -> float:
        """Seconds left; DeadlineExceeded naming the stage when none are."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"spec.timeout ran out during {stage}")
        return left
