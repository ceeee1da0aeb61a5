"""Paths inside the checkout and bounded reads: the file-system seam of render.

Every path is resolved and checked against the checkout root before it is
read; a file's size is checked before any byte is read.
"""

from __future__ import annotations

import posixpath
import stat
from pathlib import Path, PurePosixPath

from .errors import PathError, RenderError
from .limits import KiB, MiB

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


def rel(root: Path, p: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)


def resolve(p: Path, label: str) -> Path:
    try:
        return p.resolve()
    except (RuntimeError, OSError):  # 3.11 raises RuntimeError on a loop
        raise RenderError(f"{label}: symlink loop") from None


def target_dir(root: Path, path: str) -> Path:
    """root/path, refusing anything that leaves the checkout."""
    raw = path.strip() or "."
    if PurePosixPath(raw).is_absolute():
        raise RenderError(f'spec.path "{path}": must be relative to the repository root')
    norm = posixpath.normpath(raw)
    if norm == ".." or norm.startswith("../"):
        raise RenderError(f'spec.path "{path}": leaves the repository')
    target = root / norm
    if not resolve(target, f'spec.path "{path}"').is_relative_to(root):
        raise RenderError(f'spec.path "{path}": leads outside the repository through a symlink')
    if not target.exists():
        raise PathError(f'spec.path "{path}": no such directory in the repository')
    if not target.is_dir():
        raise PathError(f'spec.path "{path}": not a directory')
    return target


def kustomization_file(root: Path, directory: Path) -> Path | None:
    found = [
        directory / n
        for n in KUSTOMIZATION_FILES
        if (directory / n).exists() or (directory / n).is_symlink()
    ]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise RenderError(f"{rel(root, directory)}: more than one kustomization file ({names})")
    return found[0] if found else None


def human_size(n: int) -> str:
    if n >= MiB:
        return f"{n / MiB:.1f} MiB"
    if n >= KiB:
        return f"{n / KiB:.1f} KiB"
    return f"{n} bytes"


def read_bounded(path: Path, source: str, limit: int) -> bytes:
    """A regular file's bytes; its size is checked before anything is read."""
    try:
        st = path.stat()
    except OSError as e:
        raise RenderError(f"{source}: cannot read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise RenderError(f"{source}: not a regular file")
    if st.st_size > limit:
        raise RenderError(
            f"{source}: file is {human_size(st.st_size)}, over the {human_size(limit)} limit for one file"
        )
    with path.open("rb") as f:
        data = f.read(limit + 1)  # bounded even if the file grew meanwhile
    if len(data) > limit:
        raise RenderError(f"{source}: file is over the {human_size(limit)} limit for one file")
    return data


def decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RenderError(f"{source}: not UTF-8 text (bad byte at offset {e.start})") from None
