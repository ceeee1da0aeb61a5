"""What rendering raises: plain errors with a user-facing message.

The pipeline above maps them to condition reasons; this library knows nothing
of GitRepositorySync.
"""

from __future__ import annotations


class RenderError(Exception):
    """Git's content cannot be turned into objects. `message` names the file,
    the line or document and the object; it never holds a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class PathError(RenderError):
    """The directory to render is missing or not a directory."""
