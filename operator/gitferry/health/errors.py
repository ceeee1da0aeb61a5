"""What the health library raises: one plain error, for a bad healthCheckExprs.

Judging an object never raises: an object that cannot be judged is a Health
(InProgress, or Unknown when an expression fails), so a wait can go on.
"""

from __future__ import annotations


class ExprError(Exception):
    """A healthCheckExprs entry is invalid. `path` names the field
    (`healthCheckExprs[0].current`); `message` holds the CEL parser's words or
    the rule that was broken. Never a traceback."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"
