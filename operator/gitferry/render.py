"""Render: one directory of a checkout -> the Kubernetes objects it declares.

Two modes. A directory holding a kustomization file is built by `kubectl
kustomize`; any other directory is read as plain manifests (every *.yaml, *.yml
and *.json below it, in path order), where a subdirectory holding a
kustomization is built in place, as Flux does.

Everything in the checkout is untrusted: nothing outside it is ever read (not
through `..`, an absolute path, a symlink or a kustomize reference), nothing is
fetched from the network, no kustomize plugin runs, and sizes, object counts,
nesting and YAML alias expansion are bounded by `Limits`.

Pure apart from reading the checkout and running kubectl: no cluster, no kopf.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import posixpath
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import pathspec
from yaml import MarkedYAMLError, YAMLError
from yaml._yaml import CParser
from yaml.composer import Composer, ComposerError
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, MappingStartEvent, ScalarEvent, SequenceStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.resolver import Resolver

from .deadline import Deadline
from .errors import DeadlineExceeded, PathNotFound, RenderFailed
from .limits import KiB, Limits, MiB

STAGE = "render"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
IGNORE_FILE = ".gitferryignore"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
KUBECTL_ENV = "GITFERRY_KUBECTL"

CRD_GROUP = "apiextensions.k8s.io"
CRD_KIND = "CustomResourceDefinition"

# Written by the API server; sending them back is refused or meaningless.
# ownerReferences stay: they are the user's intent.
SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
)


# --- the result -----------------------------------------------------------
@dataclass(frozen=True)
class Manifest:
    """One object from git and the file it came from (relative to the checkout)."""

    obj: dict[str, Any]
    source: str

    @property
    def api_version(self) -> str:
        return str(self.obj["apiVersion"])

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = self.obj["metadata"]
        return meta

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def namespace(self) -> str | None:
        ns = self.metadata.get("namespace")
        return str(ns) if ns else None

    @property
    def group(self) -> str:
        """ "" for the core group (apiVersion "v1")."""
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def describe(self) -> str:
        if self.namespace:
            return f"{self.kind}/{self.namespace}/{self.name}"
        return f"{self.kind}/{self.name}"


# --- public API -------------------------------------------------------------
def render(
    checkout: Path,
    path: str,
    limits: Limits,
    deadline: Deadline | None = None,
    *,
    kubectl: str | None = None,
) -> list[Manifest]:
    """The objects under `path` of `checkout`, cleaned, in a stable order.

    Namespaces are left as written; see `assign_namespaces`.
    Raises PathNotFound, RenderFailed or DeadlineExceeded.
    """
    root = checkout.resolve()
    top = _target_dir(root, path)
    renderer = _Renderer(root, limits, deadline, kubectl)
    renderer.tick()
    kfile = _kustomization_file(root, top)
    if kfile is not None:
        renderer.kustomize(top, kfile)
    else:
        renderer.plain(top)
    check_duplicates(renderer.manifests)
    return renderer.manifests


def assign_namespaces(
    manifests: Iterable[Manifest],
    is_namespaced: Callable[[str, str], bool | None],
    default_namespace: str,
) -> list[Manifest]:
    """Namespaced objects without one get `default_namespace`; cluster-scoped
    objects lose theirs. Scope comes from CRDs in the same set first, then from
    `is_namespaced(group, kind)` (the caller's discovery; None = no such API).
    The inputs are not modified."""
    if not default_namespace:
        raise ValueError("default_namespace must not be empty")
    manifests = list(manifests)
    scopes = _crd_scopes(manifests)
    out: list[Manifest] = []
    for m in manifests:
        namespaced = scopes.get((m.group, m.kind))
        if namespaced is None:
            namespaced = is_namespaced(m.group, m.kind)
        if namespaced is None:
            group_kind = f"{m.group}/{m.kind}" if m.group else m.kind
            raise RenderFailed(
                f"{m.source}: {m.describe()}: no API for {group_kind} (is its CRD installed?)"
            )
        meta = dict(m.metadata)
        if not namespaced:
            meta.pop("namespace", None)
        elif not meta.get("namespace"):
            meta["namespace"] = default_namespace
        out.append(Manifest({**m.obj, "metadata": meta}, m.source))
    check_duplicates(out)
    return out


def check_duplicates(manifests: Iterable[Manifest]) -> None:
    """RenderFailed naming both files when one object is declared twice."""
    seen: dict[tuple[str, str, str | None, str], Manifest] = {}
    for m in manifests:
        key = (m.group, m.kind, m.namespace, m.name)
        first = seen.get(key)
        if first is not None:
            where = (
                f"in {first.source} and in {m.source}"
                if first.source != m.source
                else f"twice in {m.source}"
            )
            raise RenderFailed(f"{m.describe()} is declared {where}")
        seen[key] = m


def _crd_scopes(manifests: Iterable[Manifest]) -> dict[tuple[str, str], bool]:
    scopes: dict[tuple[str, str], bool] = {}
    for m in manifests:
        if m.group != CRD_GROUP or m.kind != CRD_KIND:
            continue
        spec = m.obj.get("spec")
        if not isinstance(spec, dict):
            continue  # the API server will say what is wrong with it
        names = spec.get("names")
        group, kind = spec.get("group"), names.get("kind") if isinstance(names, dict) else None
        if isinstance(group, str) and isinstance(kind, str):
            scopes[(group, kind)] = spec.get("scope") == "Namespaced"
    return scopes


# --- paths ----------------------------------------------------------------
def _rel(root: Path, p: Path) -> str:
    try:
        return p.relative_to(root).as_posix()
    except ValueError:
        return str(p)


def _resolve(p: Path, label: str) -> Path:
    try:
        return p.resolve()
    except (RuntimeError, OSError):  # 3.11 raises RuntimeError on a loop
        raise RenderFailed(f"{label}: symlink loop") from None


def _target_dir(root: Path, path: str) -> Path:
    """root/path, refusing anything that leaves the checkout."""
    raw = path.strip() or "."
    if PurePosixPath(raw).is_absolute():
        raise RenderFailed(f'spec.path "{path}": must be relative to the repository root')
    norm = posixpath.normpath(raw)
    if norm == ".." or norm.startswith("../"):
        raise RenderFailed(f'spec.path "{path}": leaves the repository')
    target = root / norm
    if not _resolve(target, f'spec.path "{path}"').is_relative_to(root):
        raise RenderFailed(f'spec.path "{path}": leads outside the repository through a symlink')
    if not target.exists():
        raise PathNotFound(f'spec.path "{path}": no such directory in the repository')
    if not target.is_dir():
        raise PathNotFound(f'spec.path "{path}": not a directory')
    return target


def _kustomization_file(root: Path, directory: Path) -> Path | None:
    found = [
        directory / n
        for n in KUSTOMIZATION_FILES
        if (directory / n).exists() or (directory / n).is_symlink()
    ]
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise RenderFailed(f"{_rel(root, directory)}: more than one kustomization file ({names})")
    return found[0] if found else None


def _size(n: int) -> str:
    if n >= MiB:
        return f"{n / MiB:.1f} MiB"
    if n >= KiB:
        return f"{n / KiB:.1f} KiB"
    return f"{n} bytes"


def _read_bounded(path: Path, source: str, limit: int) -> bytes:
    """A regular file's bytes; its size is checked before anything is read."""
    try:
        st = path.stat()
    except OSError as e:
        raise RenderFailed(f"{source}: cannot read: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise RenderFailed(f"{source}: not a regular file")
    if st.st_size > limit:
        raise RenderFailed(
            f"{source}: file is {_size(st.st_size)}, over the {_size(limit)} limit for one file"
        )
    with path.open("rb") as f:
        data = f.read(limit + 1)  # bounded even if the file grew meanwhile
    if len(data) > limit:
        raise RenderFailed(f"{source}: file is over the {_size(limit)} limit for one file")
    return data


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RenderFailed(f"{source}: not UTF-8 text (bad byte at offset {e.start})") from None


# --- YAML -----------------------------------------------------------------
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MERGE = "tag:yaml.org,2002:merge"


class _Expansion(Exception):
    """A file grew past its budget once YAML aliases were expanded."""

    def __init__(self, mark: Any) -> None:
        super().__init__("alias expansion")
        self.mark = mark


class _Loader(Composer, CParser, SafeConstructor, Resolver):
    """SafeLoader semantics on libyaml's parser, but composed in Python.

    libyaml's own composer recurses on the C stack (deeply nested input crashes
    the process) and cannot weigh aliases. Here every node adds its expanded
    size (scalar length + 1, 1 per collection, an alias the full size of what it
    names) to a running total, refused past `budget`: a "billion laughs" stops
    after a few hundred alias events, with memory bounded. Nesting is bounded,
    duplicate keys are refused (as kubectl does), and unquoted dates stay
    strings (as kubectl keeps them)."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != _TIMESTAMP]
        for first, resolvers in Resolver.yaml_implicit_resolvers.items()
    }

    def __init__(self, text: str, budget: int, max_depth: int) -> None:
        CParser.__init__(self, text)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.budget = budget
        self.max_depth = max_depth
        self.expanded = 0
        self._depth = 0
        self._weights: dict[int, int] = {}  # id(anchored node) -> expanded size

    def compose_document(self) -> Node | None:
        self._weights = {}  # anchors do not cross documents
        return super().compose_document()

    # Replaces Composer.compose_node (same logic plus weighing) rather than
    # wrapping it, to keep two Python frames per nesting level.
    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(AliasEvent):
            alias = self.get_event()
            if not isinstance(alias, AliasEvent):  # cannot happen: checked above
                raise ComposerError(None, None, "expected an alias", None)
            alias_mark: Any = alias.start_mark
            target = self.anchors.get(alias.anchor)
            if target is None:
                raise ComposerError(
                    None, None, f"found undefined alias {alias.anchor!r}", alias_mark
                )
            weight = self._weights.get(id(target))
            if weight is None:
                raise ComposerError(
                    None, None, f"alias *{alias.anchor} refers to itself", alias_mark
                )
            self._grow(weight, alias_mark)
            return target
        event = self.peek_event()
        if not isinstance(event, ScalarEvent | SequenceStartEvent | MappingStartEvent):
            raise ComposerError(None, None, f"unexpected {event}", None)
        anchor: Any = event.anchor  # the stubs mistype compose_*_node's argument
        start: Any = event.start_mark
        if anchor is not None and anchor in self.anchors:
            raise ComposerError(
                f"found duplicate anchor {anchor!r}; first occurrence",
                self.anchors[anchor].start_mark,
                "second occurrence",
                start,
            )
        if self._depth >= self.max_depth:
            raise ComposerError(None, None, f"nested deeper than {self.max_depth} levels", start)
        before = self.expanded
        self._depth += 1
        self.descend_resolver(parent, index)
        node: Node
        if isinstance(event, ScalarEvent):
            node = self.compose_scalar_node(anchor)
            own = len(node.value) + 1
        elif isinstance(event, SequenceStartEvent):
            node = self.compose_sequence_node(anchor)
            own = 1
        else:
            mapping = self.compose_mapping_node(anchor)
            self._check_keys(mapping)
            node, own = mapping, 1
        self.ascend_resolver()
        self._depth -= 1
        self._grow(own, node.start_mark)
        if anchor is not None:
            self._weights[id(node)] = self.expanded - before
        return node

    def _grow(self, amount: int, mark: Any) -> None:
        self.expanded += amount
        if self.expanded > self.budget:
            raise _Expansion(mark)

    @staticmethod
    def _check_keys(node: MappingNode) -> None:
        seen: dict[tuple[str, str], int] = {}
        for key, _ in node.value:
            if not isinstance(key, ScalarNode) or key.tag == _MERGE:
                continue
            first = seen.get((key.tag, key.value))
            if first is not None:
                raise ComposerError(
                    None,
                    None,
                    f"duplicate key {key.value!r} (first at line {first})",
                    key.start_mark,
                )
            seen[(key.tag, key.value)] = key.start_mark.line + 1


def _timestamp_as_text(loader: Any, node: Node) -> str:
    return str(node.value)


def _binary_as_base64(loader: Any, node: Node) -> str:
    # Normalised base64 text: what a Secret's data wants.
    return base64.b64encode(loader.construct_yaml_binary(node)).decode("ascii")


_Loader.add_constructor(_TIMESTAMP, _timestamp_as_text)
_Loader.add_constructor("tag:yaml.org,2002:binary", _binary_as_base64)


def _yaml_message(source: str, err: MarkedYAMLError) -> str:
    mark = err.problem_mark or err.context_mark
    problem = err.problem or err.context or "invalid YAML"
    where = f"line {mark.line + 1}: " if mark is not None else ""
    return f"{source}: {where}{problem}"


def _yaml_documents(
    text: str, source: str, budget: int, budget_name: str, max_depth: int
) -> tuple[list[tuple[int, Any]], int]:
    """(1-based line, data) per document, and the size after alias expansion."""
    loader = _Loader(text, budget, max_depth)
    docs: list[tuple[int, Any]] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                docs.append((node.start_mark.line + 1, loader.construct_document(node)))
    except _Expansion as e:
        where = f"line {e.mark.line + 1}: " if e.mark is not None else ""
        raise RenderFailed(
            f"{source}: {where}YAML aliases expand past {budget_name}; refusing it"
        ) from None
    except MarkedYAMLError as e:
        raise RenderFailed(_yaml_message(source, e)) from None
    except YAMLError as e:
        raise RenderFailed(f"{source}: {e}") from None
    except RecursionError:
        raise RenderFailed(f"{source}: nested too deeply") from None
    finally:
        loader.dispose()
    return docs, loader.expanded


class _DuplicateKey(Exception):
    pass


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _json_document(text: str, source: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_json_pairs, parse_constant=_json_constant)
    except json.JSONDecodeError as e:
        raise RenderFailed(f"{source}: line {e.lineno}: {e.msg}") from None
    except _DuplicateKey as e:
        raise RenderFailed(f"{source}: duplicate key {e.args[0]!r}") from None
    except ValueError as e:
        raise RenderFailed(f"{source}: {e}") from None
    except RecursionError:
        raise RenderFailed(f"{source}: nested too deeply") from None


# --- objects --------------------------------------------------------------
class _Content(Exception):
    """A problem in one document's content; the caller names file and document."""


def _plain(value: Any, depth: int, max_depth: int) -> Any:
    """A fresh JSON-compatible copy: aliases unshared, keys strings."""
    if isinstance(value, dict | list) and depth >= max_depth:
        raise _Content(f"nested deeper than {max_depth} levels")
    if isinstance(value, dict):
        return {_key(k): _plain(v, depth + 1, max_depth) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, depth + 1, max_depth) for v in value]
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise _Content(f"{value} is not a number JSON can carry")
    raise _Content(f"a YAML {type(value).__name__} has no JSON form")


def _key(k: Any) -> str:
    # As kubectl's YAML-to-JSON conversion does.
    if isinstance(k, str):
        return k
    if isinstance(k, bool):
        return "true" if k else "false"
    if k is None:
        return "null"
    if isinstance(k, int | float):
        return str(k)
    raise _Content(f"a {type(k).__name__} cannot be a key")


def _type_name(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def _expand_lists(obj: dict[str, Any], where: str) -> Iterator[tuple[dict[str, Any], str]]:
    """`kind: List` (as `kubectl get -o yaml` writes) becomes its items."""
    if obj.get("kind") != "List":
        yield obj, where
        return
    items = obj.get("items")
    if items is None:
        return
    if not isinstance(items, list):
        raise _Content(f"{where}: List items must be a list")
    for i, item in enumerate(items, 1):
        if item is None:
            continue
        item_where = f"{where}, List item {i}"
        if not isinstance(item, dict):
            raise _Content(f"{item_where}: expected an object, got {_type_name(item)}")
        yield from _expand_lists(item, item_where)


def _check_object(obj: dict[str, Any]) -> None:
    """Raise _Content unless obj names its apiVersion, kind and name."""
    kind = obj.get("kind")
    meta = obj.get("metadata")
    label = kind if isinstance(kind, str) and kind else "object"
    if isinstance(meta, dict) and isinstance(meta.get("name"), str) and meta["name"]:
        label = f"{label} {meta['name']}"
    api_version = obj.get("apiVersion")
    if not isinstance(api_version, str) or not api_version:
        raise _Content(f"{label} has no apiVersion")
    if not isinstance(kind, str) or not kind:
        raise _Content(f"{label} has no kind")
    if meta is None:
        raise _Content(f"{label} has no metadata.name")
    if not isinstance(meta, dict):
        raise _Content(f"{label}: metadata must be a mapping")
    if "generateName" in meta:
        raise _Content(
            f"{label}: metadata.generateName is not supported; set metadata.name "
            "(gitferry updates and prunes objects by name)"
        )
    name = meta.get("name")
    if name is None or name == "":
        raise _Content(f"{label} has no metadata.name")
    if not isinstance(name, str):
        raise _Content(f"{label}: metadata.name must be a string")
    namespace = meta.get("namespace")
    if namespace is None or namespace == "":
        meta.pop("namespace", None)
    elif not isinstance(namespace, str):
        raise _Content(f"{label}: metadata.namespace must be a string")


def _clean(obj: dict[str, Any]) -> None:
    """Drop what the server owns; fold a Secret's stringData into data."""
    obj.pop("status", None)
    meta = obj["metadata"]
    for key in SERVER_METADATA:
        meta.pop(key, None)
    if obj["kind"] == "Secret" and obj["apiVersion"] == "v1" and "stringData" in obj:
        string_data = obj.pop("stringData")
        if string_data is None:
            return
        label = f"Secret {meta['name']}"
        if not isinstance(string_data, dict):
            raise _Content(f"{label}: stringData must be a mapping of strings")
        data = obj.get("data") or {}
        if not isinstance(data, dict):
            raise _Content(f"{label}: data must be a mapping")
        merged = dict(data)
        for key, value in string_data.items():
            if not isinstance(value, str):
                # Name the key, never the value: it is secret.
                raise _Content(f"{label}: stringData.{key} must be a string (quote it)")
            merged[key] = base64.b64encode(value.encode("utf-8")).decode("ascii")
        obj["data"] = merged  # stringData wins, as on the API server


# --- the walk -------------------------------------------------------------
@dataclass(frozen=True)
class _Ignore:
    base: Path
    spec: pathspec.GitIgnoreSpec

    def matches(self, path: Path, is_dir: bool) -> bool:
        rel = path.relative_to(self.base).as_posix()
        return bool(self.spec.match_file(rel + "/" if is_dir else rel))


class _Renderer:
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
                raise RenderFailed(f"{_rel(self.root, directory)}: {e.strerror}") from None
            subdirs: list[Path] = []
            for entry in entries:
                if entry.name.startswith("."):
                    continue  # .git, .github, dot-files
                p = directory / entry.name
                is_dir = entry.is_dir()
                if any(i.matches(p, is_dir) for i in ignores):
                    continue
                if entry.is_symlink():
                    self._check_link(p)
                if is_dir:
                    real = p.resolve()
                    if real in seen:
                        continue
                    seen.add(real)
                    kfile = _kustomization_file(self.root, p)
                    if kfile is not None:
                        items.append((PurePosixPath(_rel(self.root, kfile)), p, kfile))
                    else:
                        subdirs.append(p)
                elif p.suffix.lower() in MANIFEST_SUFFIXES:
                    if not p.exists():
                        raise RenderFailed(
                            f"{_rel(self.root, p)} -> {os.readlink(p)}: broken symlink"
                        )
                    items.append((PurePosixPath(_rel(self.root, p)), p, None))
            stack.extend(reversed(subdirs))
        # PurePosixPath orders component by component: a directory's files stay together.
        for _, p, kfile in sorted(items, key=lambda it: it[0]):
            self.tick()
            if kfile is not None:
                self.kustomize(p, kfile)
            else:
                self._load_file(p, _rel(self.root, p))

    def _check_link(self, p: Path) -> None:
        rel = _rel(self.root, p)
        if not _resolve(p, rel).is_relative_to(self.root):
            raise RenderFailed(
                f"{rel} -> {os.readlink(p)}: symlink points outside the repository; "
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
            source = _rel(self.root, f)
            text = _decode(_read_bounded(f, source, self.limits.max_file_bytes), source)
            out.append(_Ignore(base, pathspec.GitIgnoreSpec.from_lines(text.splitlines())))
        return out

    def _load_file(self, path: Path, source: str) -> None:
        with contextlib.suppress(OSError):  # _read_bounded reports it
            if self.total + path.stat().st_size > self.limits.max_total_bytes:
                self._too_much(source)
        raw = _read_bounded(path, source, self.limits.max_file_bytes)
        text = _decode(raw, source)
        docs: list[tuple[int, Any]]
        if path.suffix.lower() == ".json":
            docs = [(1, _json_document(text, source))] if text.strip() else []
            expanded = len(raw)
        else:
            limit = self.limits.max_file_bytes
            budget_name = f"the {_size(limit)} limit for one file"
            docs, expanded = _yaml_documents(
                text, source, limit, budget_name, self.limits.max_depth
            )
        self.total += max(len(raw), expanded)
        if self.total > self.limits.max_total_bytes:
            self._too_much(source)
        for n, (line, data) in enumerate(docs, 1):
            self._add_document(data, source, f"document {n} (line {line})")

    def _too_much(self, source: str) -> None:
        raise RenderFailed(
            f"{source}: the files to render add up to more than "
            f"{_size(self.limits.max_total_bytes)}, the limit for one sync"
        )

    def _add_document(self, data: Any, source: str, where: str) -> None:
        if data is None:
            return  # empty document
        if not isinstance(data, dict):
            raise RenderFailed(
                f"{source}: {where}: expected a Kubernetes object (a mapping), "
                f"got {_type_name(data)}"
            )
        try:
            data = _plain(data, 0, self.limits.max_depth)
        except _Content as e:
            raise RenderFailed(f"{source}: {where}: {e}") from None
        try:
            for obj, obj_where in _expand_lists(data, where):
                try:
                    _check_object(obj)
                    _clean(obj)
                except _Content as e:
                    raise RenderFailed(f"{source}: {obj_where}: {e}") from None
                self.manifests.append(Manifest(obj, source))
                if len(self.manifests) > self.limits.max_objects:
                    raise RenderFailed(
                        f"{source}: more than {self.limits.max_objects} objects, "
                        "the limit for one sync"
                    )
        except _Content as e:  # from _expand_lists, which says where itself
            raise RenderFailed(f"{source}: {e}") from None

    # kustomize mode
    def kustomize(self, directory: Path, kfile: Path) -> None:
        source = _rel(self.root, kfile)
        _KustomizeCheck(self.root, self.limits).directory(directory.resolve(), source)
        out = self._run_kubectl(directory, source)
        left = self.limits.max_total_bytes - self.total
        budget_name = f"the {_size(self.limits.max_total_bytes)} limit for one sync"
        docs, expanded = _yaml_documents(out, source, left, budget_name, self.limits.max_depth)
        self.total += expanded
        for n, (_, data) in enumerate(docs, 1):
            self._add_document(data, source, f"kustomize output, object {n}")

    def _run_kubectl(self, directory: Path, source: str) -> str:
        kubectl = _kubectl(self.kubectl)
        timeout = self.limits.kubectl_timeout_seconds
        by_deadline = False
        if self.deadline is not None:
            left = self.deadline.remaining(STAGE)
            if left < timeout:
                timeout, by_deadline = left, True
        command = [
            kubectl,
            "kustomize",
            "--load-restrictor=LoadRestrictionsNone",  # overlays use ../base; checked above
            _rel(self.root, directory) or ".",
        ]
        with (
            tempfile.TemporaryDirectory(prefix="gitferry-kubectl-") as home,
            tempfile.TemporaryFile() as out,
            tempfile.TemporaryFile() as err,
        ):
            # Minimal environment: no kubeconfig, no plugin or helm configuration.
            env = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C", "HOME": home}
            try:
                proc = subprocess.Popen(
                    command,
                    cwd=self.root,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
            except OSError as e:
                raise RenderFailed(f"{source}: cannot run {kubectl}: {e.strerror}") from None
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                if by_deadline:
                    raise DeadlineExceeded(
                        f"spec.timeout ran out during {STAGE} (kustomize build of {source})"
                    ) from None
                raise RenderFailed(
                    f"{source}: kustomize build took longer than {timeout:g}s"
                ) from None
            finally:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            if code != 0:
                raise RenderFailed(f"{source}: kustomize build failed: {self._stderr(err)}")
            size = os.fstat(out.fileno()).st_size
            if self.total + size > self.limits.max_total_bytes:
                self._too_much(source)
            out.seek(0)
            data = out.read()
        return _decode(data, source)

    def _stderr(self, err: IO[bytes]) -> str:
        err.seek(0, os.SEEK_END)
        err.seek(max(0, err.tell() - 4 * KiB))
        text = err.read().decode("utf-8", "replace")
        text = text.replace(f"{self.root}{os.sep}", "").replace(str(self.root), ".")
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        message = "; ".join(lines)
        for prefix in ("error: ", "Error: "):
            message = message.removeprefix(prefix)
        if len(message) > 1000:
            message = message[:1000] + "…"
        return message or "(no message)"


def _kubectl(explicit: str | None) -> str:
    """The argument, $GITFERRY_KUBECTL, the venv's kubectl, then PATH."""
    if explicit:
        return explicit
    from_env = os.environ.get(KUBECTL_ENV)
    if from_env:
        return from_env
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("kubectl")
    if found:
        return found
    raise RenderFailed(
        f"kubectl not found (set {KUBECTL_ENV}); it is needed to build kustomizations"
    )


# --- kustomize references -------------------------------------------------
# Always remote: URLs, go-getter and scp-like forms, well-known hosts, refs.
_REMOTE = re.compile(
    r"""^[a-z][a-z0-9+.-]*://
      | ^git:: | ^gh: | ^[\w.-]+@[\w.-]+:
      | ^(?:www\.)?(?:github\.com|gitlab\.com|bitbucket\.org)[/:]
      | \?(?:ref|version|timeout|submodules)=""",
    re.IGNORECASE | re.VERBOSE,
)
# Remote-looking when missing locally (kustomize would then try to fetch it).
_HOSTLIKE = re.compile(r"^[\w-]+(?:\.[\w-]+)+/|//")
_FUNCTION_ANNOTATIONS = ("config.kubernetes.io/function", "config.k8s.io/function")
_HELM = ("helmCharts", "helmGlobals", "helmChartInflationGenerator")


def _is_inline(entry: str) -> bool:
    return "\n" in entry or entry.lstrip().startswith(("{", "apiVersion:", "kind:"))


class _KustomizeCheck:
    """Walks every kustomization reachable from one and refuses, before kubectl
    runs, anything that would read outside the checkout, fetch from the network
    or run a plugin. kubectl itself runs with LoadRestrictionsNone, so this walk
    is the only guard: every field that names a file is covered."""

    def __init__(self, root: Path, limits: Limits) -> None:
        self.root = root
        self.limits = limits
        self.seen: set[Path] = set()

    def directory(self, directory: Path, referrer: str, plugin_base: Path | None = None) -> None:
        if directory in self.seen:
            return
        self.seen.add(directory)
        kfile = _kustomization_file(self.root, directory)
        if kfile is None:
            raise RenderFailed(
                f"{referrer}: {_rel(self.root, directory)} has no kustomization file"
            )
        source = _rel(self.root, kfile)
        if not _resolve(kfile, source).is_relative_to(self.root):
            raise RenderFailed(
                f"{source} -> {os.readlink(kfile)}: symlink points outside the repository"
            )
        docs = self._documents(kfile, source)
        if len(docs) != 1 or not isinstance(docs[0], dict):
            raise RenderFailed(f"{source}: expected one kustomization (a mapping)")
        self.kustomization(docs[0], directory, source, plugin_base)

    def _documents(self, path: Path, source: str) -> list[Any]:
        text = _decode(_read_bounded(path, source, self.limits.max_file_bytes), source)
        return self._parse(text, source)

    def _parse(self, text: str, source: str) -> list[Any]:
        limit = self.limits.max_file_bytes
        docs, _ = _yaml_documents(
            text, source, limit, f"the {_size(limit)} limit", self.limits.max_depth
        )
        return [data for _, data in docs]

    def kustomization(
        self, k: dict[str, Any], base: Path, source: str, plugin_base: Path | None
    ) -> None:
        for key in _HELM:
            if k.get(key):
                raise RenderFailed(
                    f"{source}: {key}: Helm charts are not supported; "
                    "render the chart into the repository instead"
                )
        for key in ("resources", "bases", "components"):
            for entry in self._list(k, key, source):
                p = self.local(source, key, entry, base)
                if p.is_dir():
                    self.directory(p, source, plugin_base)
                else:
                    self.file(source, key, entry, p)
                    if plugin_base is not None:
                        self.plugins(
                            source,
                            key,
                            entry,
                            self._documents(p, _rel(self.root, p)),
                            (plugin_base, p.parent),
                        )
        for key in ("crds", "configurations"):
            for entry in self._list(k, key, source):
                self.file(source, key, entry, self.local(source, key, entry, base))
        for entry in self._list(k, "patchesStrategicMerge", source):
            if not (isinstance(entry, str) and _is_inline(entry)):
                p = self.local(source, "patchesStrategicMerge", entry, base)
                self.file(source, "patchesStrategicMerge", entry, p)
        for key in ("patches", "patchesJson6902", "replacements"):
            for item in self._list(k, key, source):
                if isinstance(item, dict) and item.get("path") is not None:
                    entry = item["path"]
                    self.file(source, key, entry, self.local(source, f"{key} path", entry, base))
        openapi = k.get("openapi")
        if isinstance(openapi, dict) and openapi.get("path") is not None:
            entry = openapi["path"]
            self.file(source, "openapi", entry, self.local(source, "openapi path", entry, base))
        for key in ("configMapGenerator", "secretGenerator"):
            for item in self._list(k, key, source):
                if isinstance(item, dict):
                    self.generator_files(source, key, item, (base,), must_exist=True)
        for key in ("generators", "transformers", "validators"):
            for n, entry in enumerate(self._list(k, key, source), 1):
                if isinstance(entry, str) and _is_inline(entry):
                    docs = self._parse(entry, f"{source}: {key} entry {n}")
                    self.plugins(source, key, f"inline entry {n}", docs, (base,))
                    continue
                p = self.local(source, key, entry, base)
                if p.is_dir():
                    self.directory(p, source, plugin_base or base)
                else:
                    self.file(source, key, entry, p)
                    docs = self._documents(p, _rel(self.root, p))
                    self.plugins(source, key, entry, docs, (base, p.parent))

    def _list(self, k: dict[str, Any], key: str, source: str) -> list[Any]:
        value = k.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise RenderFailed(f"{source}: {key} must be a list")
        return value

    def local(self, source: str, key: str, entry: Any, base: Path, must_exist: bool = True) -> Path:
        """The checked, resolved path of a kustomization entry."""
        if not isinstance(entry, str) or not entry.strip():
            raise RenderFailed(f"{source}: {key}: entries must be non-empty strings")
        if _REMOTE.search(entry):
            raise RenderFailed(
                f"{source}: {key}: {entry!r} is a remote reference; gitferry builds only "
                "from the repository it fetched"
            )
        label = f"{source}: {key}: {entry!r}"
        # kustomize joins and cleans lexically, the OS resolves `..` after links:
        # both readings must stay inside.
        joined = Path(os.path.normpath(base / entry))
        for candidate in (joined, base / entry):
            if not _resolve(candidate, label).is_relative_to(self.root):
                raise RenderFailed(f"{label} resolves outside the repository")
        if not joined.exists():
            if not must_exist:
                return joined
            if _HOSTLIKE.search(entry):
                raise RenderFailed(
                    f"{label} is not in the repository (remote references are not allowed)"
                )
            raise RenderFailed(f"{label} does not exist")
        return joined.resolve()

    def file(self, source: str, key: str, entry: Any, p: Path) -> None:
        if p.is_dir():
            # kustomize lists a directory's files for generators; check each.
            for child in sorted(p.iterdir()):
                if not _resolve(child, str(child)).is_relative_to(self.root):
                    raise RenderFailed(
                        f"{source}: {key}: {_rel(self.root, child)} -> {os.readlink(child)}: "
                        "symlink points outside the repository"
                    )
            return
        size = p.stat().st_size
        if size > self.limits.max_file_bytes:
            raise RenderFailed(
                f"{source}: {key}: {entry!r} is {_size(size)}, over the "
                f"{_size(self.limits.max_file_bytes)} limit for one file"
            )

    def generator_files(
        self,
        source: str,
        key: str,
        item: dict[str, Any],
        bases: tuple[Path, ...],
        must_exist: bool,
    ) -> None:
        entries: list[Any] = []
        for field_name in ("files", "envs", "paths"):
            value = item.get(field_name)
            if value is None:
                continue
            if not isinstance(value, list):
                raise RenderFailed(f"{source}: {key} {field_name} must be a list")
            # files entries may be "key=path".
            entries += [
                e.split("=", 1)[1]
                if field_name == "files" and isinstance(e, str) and "=" in e
                else e
                for e in value
            ]
        for single in ("env", "path"):
            if item.get(single) is not None:
                entries.append(item[single])
        for replacement in item.get("replacements") or []:
            if isinstance(replacement, dict) and replacement.get("path") is not None:
                entries.append(replacement["path"])
        for entry in entries:
            for b in bases:
                p = self.local(source, key, entry, b, must_exist=must_exist)
                if p.exists():
                    self.file(source, key, entry, p)

    def plugins(
        self, source: str, key: str, entry: Any, docs: list[Any], bases: tuple[Path, ...]
    ) -> None:
        """Generator/transformer/validator configs: builtins only, and their own
        file references checked like a kustomization's."""
        for data in docs:
            if not isinstance(data, dict):
                continue  # kustomize will refuse it
            api_version, kind = data.get("apiVersion"), data.get("kind")
            meta = data.get("metadata")
            annotations = meta.get("annotations") if isinstance(meta, dict) else None
            is_function = isinstance(annotations, dict) and any(
                a in annotations for a in _FUNCTION_ANNOTATIONS
            )
            if api_version != "builtin" or is_function:
                raise RenderFailed(
                    f"{source}: {key}: {entry}: {kind} ({api_version}) is a kustomize plugin; "
                    "only kustomize's builtin generators and transformers are allowed"
                )
            if kind == "HelmChartInflationGenerator":
                raise RenderFailed(
                    f"{source}: {key}: {entry}: Helm charts are not supported; "
                    "render the chart into the repository instead"
                )
            # Paths in builtin configs: relative to which kustomization is a
            # kustomize detail, so every plausible base must stay inside.
            self.generator_files(source, key, data, bases, must_exist=False)
