"""The walk of a plain directory: every manifest file below it, in path order,
skipping dot-entries and what `.gitferryignore` excludes, following symlinks
only while they stay inside the checkout; a subdirectory holding a
kustomization is built in place, as Flux does."""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pathspec

from ..deadline import Deadline
from .errors import RenderError
from .files import decode, human_size, kustomization_file, read_bounded, rel, resolve
from .kustomize import KustomizeCheck, run_kubectl
from .limits import Limits
from .loader import json_document, yaml_documents
from .objects import (
    ContentError,
    Manifest,
    check_object,
    clean,
    expand_lists,
    plain_copy,
    type_name,
)

STAGE = "render"
IGNORE_FILE = ".gitferryignore"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class _Ignore:
    base: Path
    spec: pathspec.GitIgnoreSpec

    def matches(self, path: Path, is_dir: bool) -> bool:
        rel = path.relative_to(self.base).as_posix()
        return bool(self.spec.match_file(rel + "/" if is_dir else rel))


class Renderer:
    """One render: the manifests found so far and the bytes read, against Limits."""

    def __init__(
        self, root: Path, limits: Limits, deadline: Deadline | None, kubectl: str | None
    ) -> None:
        self.root = root
        self.limits = limits
        self.deadline = deadline
        self.kubectl = kubectl
        self.total = 0  # bytes read, or expanded, so far
        self.manifests: list[Manifest] = []

    def tick(self) -> None:
        if self.deadline is not None:
            self.deadline.remaining(STAGE)

    # plain mode
    def plain(self, top: Path) -> None:
        ignores = self._ignores(top)
        items: list[tuple[PurePosixPath, Path, Path | None]] = []
        seen = {top.resolve()}
        stack = [top]
        # Symlinked directories inside the checkout are followed; `seen` stops
        # loops and a symlink farm from multiplying the walk.
        while stack:
            self.tick()
            directory = stack.pop()
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError as e:
                raise RenderError(f"{rel(self.root, directory)}: {e.strerror}") from None
            subdirs: list[Path] = []
            for entry in entries:
                if entry.name.startswith("."):
                    continue  # .git, .github, dot-files
                p = directory / entry.name
                try:
                    is_dir = entry.is_dir()
                except OSError:  # a symlink loop: not a directory; the link check names it
                    is_dir = False
                if any(i.matches(p, is_dir) for i in ignores):
                    continue
                if entry.is_symlink():
                    self._check_link(p)
                if is_dir:
                    real = p.resolve()
                    if real in seen:
                        continue
                    seen.add(real)
                    kfile = kustomization_file(self.root, p)
                    if kfile is not None:
                        items.append((PurePosixPath(rel(self.root, kfile)), p, kfile))
                    else:
                        subdirs.append(p)
                elif p.suffix.lower() in MANIFEST_SUFFIXES:
                    if not p.exists():
                        raise RenderError(
                            f"{rel(self.root, p)} -> {os.readlink(p)}: broken symlink"
                        )
                    items.append((PurePosixPath(rel(self.root, p)), p, None))
            stack.extend(reversed(subdirs))
        # PurePosixPath orders component by component: a directory's files stay together.
        for _, p, kfile in sorted(items, key=lambda it: it[0]):
            self.tick()
            if kfile is not None:
                self.kustomize(p, kfile)
            else:
                self._load_file(p, rel(self.root, p))

    def _check_link(self, p: Path) -> None:
        where = rel(self.root, p)
        if not resolve(p, where).is_relative_to(self.root):
            raise RenderError(
                f"{where} -> {os.readlink(p)}: symlink points outside the repository; "
                "refusing to read it"
            )

    def _ignores(self, top: Path) -> list[_Ignore]:
        out = []
        for base in dict.fromkeys((self.root, top)):
            f = base / IGNORE_FILE
            if not (f.exists() or f.is_symlink()):
                continue
            if f.is_symlink():
                self._check_link(f)
            source = rel(self.root, f)
            text = decode(read_bounded(f, source, self.limits.max_file_bytes), source)
            lines = text.splitlines()
            for n, line in enumerate(lines, 1):
                try:
                    pathspec.GitIgnoreSpec.from_lines([line])
                except (ValueError, re.error) as e:  # pathspec's errors, a bad [z-a]
                    raise RenderError(f"{source}: line {n}: not a gitignore pattern: {e}") from None
            out.append(_Ignore(base, pathspec.GitIgnoreSpec.from_lines(lines)))
        return out

    def _load_file(self, path: Path, source: str) -> None:
        with contextlib.suppress(OSError):  # read_bounded reports it
            size = path.stat().st_size
            # Over the file limit: read_bounded says so; else the total, unread.
            if (
                size <= self.limits.max_file_bytes
                and self.total + size > self.limits.max_total_bytes
            ):
                self._too_much(source)
        raw = read_bounded(path, source, self.limits.max_file_bytes)
        text = decode(raw, source)
        docs: list[tuple[int, Any]]
        if path.suffix.lower() == ".json":
            docs = [(1, json_document(text, source))] if text.strip() else []
            expanded = len(raw)
        else:
            limit = self.limits.max_file_bytes
            budget_name = f"the {human_size(limit)} limit for one file"
            docs, expanded = yaml_documents(text, source, limit, budget_name, self.limits.max_depth)
        self.total += max(len(raw), expanded)
        if self.total > self.limits.max_total_bytes:
            self._too_much(source)
        for n, (line, data) in enumerate(docs, 1):
            self._add_document(data, source, f"document {n} (line {line})")

    def _too_much(self, source: str) -> None:
        raise RenderError(
            f"{source}: the files to render add up to more than "
            f"{human_size(self.limits.max_total_bytes)}, the limit for one sync"
        )

    def _add_document(self, data: Any, source: str, where: str) -> None:
        if data is None:
            return  # empty document
        if not isinstance(data, dict):
            raise RenderError(
                f"{source}: {where}: expected a Kubernetes object (a mapping), "
                f"got {type_name(data)}"
            )
        try:
            data = plain_copy(data, 0, self.limits.max_depth)
        except ContentError as e:
            raise RenderError(f"{source}: {where}: {e}") from None
        try:
            for obj, obj_where in expand_lists(data, where):
                try:
                    check_object(obj)
                    folded = clean(obj)
                except ContentError as e:
                    raise RenderError(f"{source}: {obj_where}: {e}") from None
                self.manifests.append(Manifest(obj, source, folded))
                if len(self.manifests) > self.limits.max_objects:
                    raise RenderError(
                        f"{source}: more than {self.limits.max_objects} objects, "
                        "the limit for one sync"
                    )
        except ContentError as e:  # from expand_lists, which says where itself
            raise RenderError(f"{source}: {e}") from None

    # kustomize mode
    def kustomize(self, directory: Path, kfile: Path) -> None:
        source = rel(self.root, kfile)
        KustomizeCheck(self.root, self.limits).directory(directory.resolve(), source)
        out = run_kubectl(
            self.root,
            directory,
            source,
            self.limits,
            self.deadline,
            self.kubectl,
            budget=self.limits.max_total_bytes - self.total,
        )
        left = self.limits.max_total_bytes - self.total
        budget_name = f"the {human_size(self.limits.max_total_bytes)} limit for one sync"
        docs, expanded = yaml_documents(out, source, left, budget_name, self.limits.max_depth)
        self.total += expanded
        for n, (_, data) in enumerate(docs, 1):
            self._add_document(data, source, f"kustomize output, object {n}")
