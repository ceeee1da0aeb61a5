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


class SubstitutionError(RenderError):
    """postBuild variable substitution failed (`substitute`). The message names
    the file, the object (`Kind/namespace/name`), the field and the variable;
    never a value, which may come from a Secret. `source` and `obj` are None
    when no one object is at fault (an invalid variable name); `variable` is
    the variable at fault, if one is."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        obj: str | None = None,
        variable: str | None = None,
    ) -> None:
        super().__init__(message)
        self.source = source
        self.obj = obj
        self.variable = variable
