"""Which directories of a repository a push touched."""

from __future__ import annotations

from collections.abc import Iterable


def clean_path(path: str) -> str:
    """A repository path as one spelling: no leading `./` or `/`, no trailing
    `/`, no empty or `.` components; the root is ""."""
    return "/".join(p for p in path.replace("\\", "/").split("/") if p not in ("", "."))


def touches(changed: Iterable[str] | None, directory: str) -> bool:
    """Whether a push that changed `changed` (None: unknown) may have changed
    something under `directory`: a file inside it, the directory itself, or one of
    its parents (a directory replaced by a file or a symlink)."""
    if changed is None:
        return True
    top = clean_path(directory)
    for raw in changed:
        path = clean_path(raw)
        if not top or path == top or path.startswith(top + "/") or top.startswith(path + "/"):
            return True
    return False
