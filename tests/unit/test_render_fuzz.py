"""Render fuzzed: whatever bytes, YAML trees or symlinks git holds, render ends in
objects or a RenderError naming the problem — never another exception, never an
object that is not one, never a byte from outside the checkout.

Hypothesis plays the part of Flux's fuzzers. The limits are small, so a bomb
fails in milliseconds; each property runs a few hundred examples in a few
seconds. No example database is kept: a failure prints its example."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitferry.render import Limits, Manifest, RenderError, render

LIMITS = Limits(
    max_file_bytes=16 * 1024,
    max_total_bytes=64 * 1024,
    max_objects=50,
    max_depth=16,
    kubectl_timeout_seconds=20,
)
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- checkouts ------------------------------------------------------------------
@contextmanager
def workspace() -> Iterator[Path]:
    """A fresh directory per example (a pytest tmp_path would be shared by all)."""
    with tempfile.TemporaryDirectory(prefix="gitferry-fuzz-") as d:
        yield Path(d).resolve()


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def outcome(root: Path, path: str = ".") -> list[Manifest] | RenderError:
    """What render made of the checkout: its objects or its RenderError. Any
    other exception escapes and fails the property."""
    try:
        manifests = render(root, path, LIMITS)
    except RenderError as e:
        assert str(e).strip(), "a RenderError must say what is wrong"
        assert "Traceback" not in str(e)
        return e
    assert isinstance(manifests, list)
    return manifests


def check_objects(manifests: list[Manifest], written: set[str]) -> None:
    """Every Manifest is a Kubernetes object from a file that was written."""
    for m in manifests:
        assert isinstance(m, Manifest)
        obj = m.obj
        assert isinstance(obj, dict)
        assert isinstance(obj.get("apiVersion"), str) and obj["apiVersion"]
        assert isinstance(obj.get("kind"), str) and obj["kind"]
        assert obj["kind"] != "List", "a List is expanded into its items"
        assert isinstance(obj.get("metadata"), dict)
        assert isinstance(obj["metadata"].get("name"), str) and obj["metadata"]["name"]
        assert "status" not in obj
        json.dumps(obj, allow_nan=False)  # what the API server is sent
        assert m.source in written, f"{m.source!r} was not written by the test"


# --- strategies -----------------------------------------------------------------
DIRS = st.sampled_from(["deploy", "base", "a b", "ünï", ".hidden", "nested/deeper"])
SUFFIXES = st.sampled_from([".yaml", ".yml", ".json", ".YAML", ".Json"])
STEMS = st.text(alphabet="abcxyz-_.0", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..")
)


@st.composite
def file_paths(draw: st.DrawFn) -> str:
    parts = draw(st.lists(DIRS, max_size=2))
    name = draw(STEMS) + draw(SUFFIXES)
    return "/".join([*parts, name])


# Pieces of YAML and JSON that reach deeper than random bytes do.
FRAGMENTS = st.sampled_from(
    [
        b"apiVersion: v1\n",
        b"kind: ConfigMap\n",
        b"kind: List\nitems:\n",
        b"metadata:\n  name: x\n",
        b"metadata: {name: y, namespace: ''}\n",
        b"  - ",
        b"---\n",
        b"...\n",
        b"&a [*a, *a, *a]\n",
        b"[[[[[[[[[[[[[[[[[[[[[[[[",
        b"a: &a [lol, lol, lol, lol, lol, lol, lol, lol]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
        b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c]\n"
        b"e: [*d, *d, *d, *d, *d, *d, *d, *d]\n",
        b"a: &b [1, 2]\nc: *b\n",
        b"<<: *a\n",
        b"!!binary aGVsbG8=\n",
        b"!!python/object:os.system\n",
        b"? [complex, key]\n: v\n",
        b"{",
        b"}",
        b"[",
        b'{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}',
        b"stringData: {k: 1}\n",
        b"2001-12-14t21:59:43.10-05:00\n",
        b".nan\n",
        b"\xef\xbb\xbf",
        b"\xff\xfe",
        b"\t",
        b"%YAML 1.1\n",
        b"%TAG ! tag:example.com,2000:\n",
    ]
)
# Valid files, to be mutated: most examples then fail deep inside, some not at all.
VALID = st.sampled_from(
    [
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  k: v\n",
        b"apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: apps}\nstringData: {k: v}\n",
        b"apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n"
        b"- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n",
        b"---\napiVersion: v1\nkind: Namespace\nmetadata: {name: apps}\n---\n"
        b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: &s {replicas: 1}\n"
        b"status: *s\n",
        b'{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "j"}, "data": {"a": "1"}}',
    ]
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid file with a few bytes inserted, replaced or deleted."""
    data = bytearray(draw(VALID))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data)))
        piece = draw(st.one_of(st.binary(min_size=1, max_size=3), FRAGMENTS))
        op = draw(st.sampled_from(["insert", "replace", "delete"]))
        if op == "insert":
            data[at:at] = piece
        elif op == "replace":
            data[at : at + len(piece)] = piece
        else:
            del data[at : at + draw(st.integers(1, 8))]
    return bytes(data)


CONTENTS = st.one_of(
    mutated(),
    mutated(),
    st.binary(max_size=512),
    st.lists(FRAGMENTS, max_size=12).map(b"".join),
    st.lists(st.one_of(FRAGMENTS, st.binary(max_size=16)), max_size=12).map(b"".join),
    st.text(max_size=200).map(str.encode),
)
# Mostly the whole checkout; sometimes a subdirectory, or one that is not there.
RENDER_PATHS = st.sampled_from(
    [".", ".", ".", ".", ".", ".", "deploy", "./deploy/", "nested/deeper", "missing"]
)


# .gitferryignore lines: gitignore syntax, some of it invalid.
IGNORE_LINES = st.one_of(
    st.sampled_from(["*.json", "!keep.yaml", "deploy/", "**/deeper", "#c", "\\#x", "a b", "/"]),
    st.text(alphabet="*!/\\#?[]-ab. ", max_size=6),
)
IGNORES = st.one_of(
    st.none(),
    st.binary(max_size=64),
    st.lists(IGNORE_LINES, max_size=5).map(lambda lines: "\n".join(lines).encode()),
)


@pytest.mark.parametrize("pattern", [b"!", b"x\\", b"[z-a]"])
def test_an_invalid_ignore_pattern_is_a_render_error(pattern: bytes) -> None:
    with workspace() as root:
        write_files(root, {".gitferryignore": pattern + b"\n", "a.yaml": b""})
        assert isinstance(outcome(root), RenderError)


@given(
    files=st.dictionaries(file_paths(), CONTENTS, min_size=1, max_size=6),
    ignore=IGNORES,
    path=RENDER_PATHS,
)
@FUZZ
def test_arbitrary_bytes_end_in_objects_or_a_render_error(
    files: dict[str, bytes], ignore: bytes | None, path: str
) -> None:
    with workspace() as root:
        write_files(root, files)
        if ignore is not None:
            (root / ".gitferryignore").write_bytes(ignore)
        result = outcome(root, path)
        if isinstance(result, list):
            check_objects(result, set(files))


KEYS = st.one_of(
    st.sampled_from(
        ["apiVersion", "kind", "metadata", "name", "namespace", "items", "data", "status"]
    ),
    st.text(max_size=8),
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
TREES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(KEYS, children, max_size=4),
    ),
    max_leaves=24,
)
# What a real object holds: strings, finite numbers, nested maps and lists.
JSONISH = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=10),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)


def objects(items: st.SearchStrategy[Any], wild: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Mappings shaped like Kubernetes objects; when `wild`, any field may be anything."""

    def field(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.one_of(good, good, good, bad) if wild else good

    metadata = field(
        st.fixed_dictionaries(
            {"name": field(st.text(alphabet="abcdw-", min_size=1, max_size=6), SCALARS)},
            optional={
                "namespace": field(st.sampled_from(["", "apps"]), SCALARS),
                "labels": st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=2),
                "resourceVersion": st.just("42"),
                **({"generateName": st.just("web-")} if wild else {}),
            },
        ),
        TREES,
    )
    return st.fixed_dictionaries(
        {
            "apiVersion": field(st.sampled_from(["v1", "apps/v1", "x.dev/v1"]), SCALARS),
            "kind": field(st.sampled_from(["ConfigMap", "Secret", "List", "Thing"]), SCALARS),
            "metadata": metadata,
        },
        optional={
            "data": field(JSONISH, TREES),
            "stringData": field(st.dictionaries(st.text(max_size=5), st.text(max_size=5)), TREES),
            "status": field(JSONISH, TREES),
            "items": field(st.lists(items, max_size=3), TREES),
        },
    )


def documents(wild: bool) -> st.SearchStrategy[list[Any]]:
    """The documents of one file. Tame ones mostly render; wild ones mostly fail
    somewhere deep, with any value where an object's field should be."""
    objs = st.recursive(
        st.just({"apiVersion": "v1", "kind": "List"}),
        lambda items: objects(items, wild),
        max_leaves=6,
    )
    return st.lists(st.one_of(objs, objs, objs, TREES) if wild else objs, min_size=1, max_size=3)


@st.composite
def yaml_files(draw: st.DrawFn) -> dict[str, bytes]:
    """A few files of dumped documents: YAML (several documents) or JSON (the first)."""
    wild = draw(st.booleans())
    stems = draw(st.lists(file_paths().map(lambda p: p.rsplit(".", 1)[0]), min_size=1, max_size=3))
    files = {}
    for stem in stems:
        docs = draw(documents(wild))
        if draw(st.booleans()):
            files[f"{stem}.json"] = json.dumps(docs[0]).encode()  # NaN and Infinity too
        else:
            files[f"{stem}.yaml"] = yaml.safe_dump_all(docs, allow_unicode=True).encode()
    return files


@given(files=yaml_files())
@FUZZ
def test_arbitrary_yaml_trees_end_in_objects_or_a_render_error(files: dict[str, bytes]) -> None:
    with workspace() as root:
        write_files(root, files)
        result = outcome(root)
        if isinstance(result, list):
            check_objects(result, set(files))


# --- nothing outside the checkout -----------------------------------------------
MARKER = "marker-from-outside"


def cm(name: str, note: str = "") -> bytes:
    data = f"data:\n  note: {note}\n" if note else ""
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{data}".encode()


def outside_world(base: Path) -> None:
    """Valid manifests next to the checkout, each carrying the marker."""
    write_files(
        base,
        {
            f"{MARKER}.yaml": cm(f"{MARKER}-sibling", MARKER),
            "outside/cm.yaml": cm(f"{MARKER}-dir", MARKER),
            "outside/kustomization.yaml": b"resources: [cm.yaml]\n",
            "outside-plain/nested/cm.yml": cm(f"{MARKER}-plain", MARKER),
        },
    )


# Where a link may point: relative to the link's own directory, absolute, or
# `{root}`-based (the checkout's absolute path).
LINK_TARGETS = st.sampled_from(
    [
        f"../{MARKER}.yaml",
        "../outside",
        "../outside/cm.yaml",
        "../outside-plain",
        "../outside-plain/nested",
        "{root}/../outside-plain/nested/cm.yml",
        "{root}/..",
        "..",
        "../..",
        "/",
        "/etc",
        # inside, or through the inside back out
        "inside.yaml",
        "sub",
        "sub/../..",
        "sub/link",
        "link",
        "dangling",
        "{root}/sub",
        "{root}/inside.yaml",
    ]
)
LINK_NAMES = st.sampled_from(
    [
        "link",
        "link.yaml",
        "l.json",
        "sub/link",
        "sub/x.yml",
        "deeper",
        "sub/deeper",
        ".gitferryignore",
    ]
)
# Mostly the whole checkout, else a directory that may be a link, or a way out.
ESCAPING_PATHS = st.sampled_from(
    [".", ".", ".", "sub", "link", "deeper", "sub/deeper", "sub/link"]
    + ["..", "../outside", "sub/../..", "/tmp", "{root}/../outside"]
)


@pytest.mark.parametrize("name", ["link", "link.yaml"])
def test_a_symlink_loop_is_a_render_error(name: str) -> None:
    with workspace() as root:
        os.symlink(name, root / name)
        assert isinstance(outcome(root), RenderError)


@given(
    links=st.dictionaries(LINK_NAMES, LINK_TARGETS, min_size=1, max_size=3),
    path=ESCAPING_PATHS,
)
@settings(
    FUZZ,
    max_examples=200,
    suppress_health_check=[*FUZZ.suppress_health_check, HealthCheck.filter_too_much],
)
def test_nothing_outside_the_checkout_is_ever_read(links: dict[str, str], path: str) -> None:
    with workspace() as base:
        outside_world(base)
        root = base / "checkout"
        write_files(root, {"inside.yaml": cm("inside"), "sub/in.yaml": cm("in-sub")})
        for name, target in links.items():
            os.symlink(target.format(root=root), root / name)
        result = outcome(root, path.format(root=root))
        if isinstance(result, RenderError):
            return
        for m in result:
            assert MARKER not in json.dumps(m.obj), f"{m.source} was read from outside"
            assert not m.source.startswith(("/", "..")), m.source
            assert (root / m.source).resolve().is_relative_to(root), m.source
