"""The bounded YAML/JSON loader: libyaml's parser, composed in Python.

A "billion laughs", a duplicate key, nesting past the limit and unquoted dates
are handled as kubectl handles them, with memory bounded by a byte budget.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from yaml import MarkedYAMLError, YAMLError
from yaml._yaml import CParser
from yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

from . import scalars
from .errors import RenderError

_TAG = "tag:yaml.org,2002:"
_MAP, _SEQ, _STR = _TAG + "map", _TAG + "seq", _TAG + "str"
_SET, _OMAP, _PAIRS = _TAG + "set", _TAG + "omap", _TAG + "pairs"
_BINARY, _TIMESTAMP = _TAG + "binary", _TAG + "timestamp"


class _LoadError(Exception):
    """A problem at `line` (0-based) of the text."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


class _Expansion(Exception):
    """A file grew past its budget once YAML aliases were expanded."""

    def __init__(self, line: int) -> None:
        super().__init__("alias expansion")
        self.line = line


class _Unfinished:
    """The value of an anchor whose node is still open: an alias to it loops."""


_OPEN = _Unfinished()


class _Frame:
    """A collection being built: a list, or a dict with its pending key."""

    __slots__ = (
        "anchor",
        "before",
        "is_map",
        "key",
        "key_id",
        "keys",
        "line",
        "merges",
        "tag",
        "value",
    )

    def __init__(self, tag: str, is_map: bool, anchor: str | None, line: int, before: int) -> None:
        self.tag = tag
        self.is_map = is_map
        self.anchor = anchor
        self.line = line
        self.before = before  # the expanded size when it opened: its anchor's weight
        self.value: Any = {} if is_map else []
        self.key: Any = _OPEN  # a mapping's key waiting for its value
        self.key_id: tuple[str, str] | None = None
        self.keys: dict[tuple[str, str], int] = {}  # (tag, text) -> first line
        self.merges: list[Any] = []  # `<<` values, merged under the explicit keys


class _Loader(CParser):
    """YAML → Python values straight from libyaml's parser events.

    No node tree is built (a tree of a 5 MiB file of short scalars took over
    300 MiB), nothing recurses (deep input cannot overflow a stack), and:
    every value adds its expanded size (scalar length + 1, 1 per collection, an
    alias the full size of what it names) to a total refused past `budget`, so
    a "billion laughs" stops after a few hundred events; nesting is bounded;
    duplicate keys are refused (as kubectl does); merge keys (`<<`) work as in
    YAML 1.1; plain scalars resolve as kubectl resolves them (`scalars`)."""

    def __init__(self, text: str, budget: int, max_depth: int) -> None:
        super().__init__(text)
        self.budget = budget
        self.max_depth = max_depth
        self.expanded = 0

    def documents(self) -> list[tuple[int, Any]]:
        """(1-based line, value) per non-empty document."""
        docs: list[tuple[int, Any]] = []
        self.get_event()  # StreamStart
        while not self.check_event(StreamEndEvent):
            self.get_event()  # DocumentStart
            line, value = self._document()
            self.get_event()  # DocumentEnd
            if value is not None:
                docs.append((line + 1, value))
        return docs

    def _grow(self, amount: int, line: int) -> None:
        self.expanded += amount
        if self.expanded > self.budget:
            raise _Expansion(line)

    def _document(self) -> tuple[int, Any]:
        anchors: dict[str, tuple[Any, int]] = {}  # anchor -> (value, expanded size)
        stack: list[_Frame] = []
        first_line: int | None = None
        result: Any = None
        while True:
            event: Any = self.get_event()
            line = event.start_mark.line
            if first_line is None:
                first_line = line
            if isinstance(event, (SequenceEndEvent, MappingEndEvent)):
                frame = stack.pop()
                value = self._close(frame)
                if frame.anchor is not None:
                    anchors[frame.anchor] = (value, self.expanded - frame.before)
                done = not stack
                if not done:
                    self._add(stack[-1], value, None, line)
                else:
                    result = value
                    break
                continue
            anchor = getattr(event, "anchor", None)
            if isinstance(event, AliasEvent):
                if anchor not in anchors:
                    raise _LoadError(f"found undefined alias {anchor!r}", line)
                value, weight = anchors[anchor]
                if value is _OPEN:
                    raise _LoadError(f"alias *{anchor} refers to itself", line)
                self._grow(weight, line)
                key_id = None
            elif isinstance(event, ScalarEvent):
                if anchor is not None and anchor in anchors:
                    raise _LoadError(f"found duplicate anchor {anchor!r}", line)
                value, key_id = self._scalar(event, line)
                self._grow(len(event.value) + 1, line)
                if anchor is not None:
                    anchors[anchor] = (value, len(event.value) + 1)
            elif isinstance(event, (SequenceStartEvent, MappingStartEvent)):
                if anchor is not None and anchor in anchors:
                    raise _LoadError(f"found duplicate anchor {anchor!r}", line)
                if len(stack) >= self.max_depth:
                    raise _LoadError(f"nested deeper than {self.max_depth} levels", line)
                is_map = isinstance(event, MappingStartEvent)
                tag = event.tag if event.tag not in (None, "!") else (_MAP if is_map else _SEQ)
                if tag not in ((_MAP, _SET, _OMAP, _PAIRS) if is_map else (_SEQ, _OMAP, _PAIRS)):
                    raise _LoadError(f"could not determine a constructor for the tag {tag!r}", line)
                self._grow(1, line)
                if anchor is not None:
                    anchors[anchor] = (_OPEN, 0)
                stack.append(_Frame(tag, is_map, anchor, line, self.expanded - 1))
                continue
            else:  # an empty document: DocumentEnd right away
                raise _LoadError(f"unexpected {type(event).__name__}", line)
            if not stack:
                result = "<<" if value is _MERGE_KEY else value
                break
            self._add(stack[-1], value, key_id, line)
        return first_line or 0, result

    def _scalar(self, event: Any, line: int) -> tuple[Any, tuple[str, str]]:
        text = event.value
        tag = event.tag
        if tag is None or tag == "!":
            tag = scalars.resolve_plain(text) if event.implicit[0] else _STR
        if tag in (_STR, _TIMESTAMP):  # dates stay text, as kubectl keeps them
            return text, (tag, text)
        if tag == _BINARY:  # the decoded bytes as text, as kubectl reads them
            try:
                raw = base64.b64decode("".join(text.split()), validate=True)
                return raw.decode("utf-8"), (tag, text)
            except ValueError:
                raise _LoadError("!!binary is not base64 of UTF-8 text", line) from None
        if tag in (scalars.BOOL, scalars.NULL, scalars.INT, scalars.FLOAT, scalars.MERGE):
            if tag == scalars.MERGE:
                return _MERGE_KEY, (tag, text)
            try:
                return scalars.construct(tag, text), (tag, text)
            except ValueError as e:
                raise _LoadError(str(e), line) from None
        raise _LoadError(f"could not determine a constructor for the tag {tag!r}", line)

    def _add(self, frame: _Frame, value: Any, key_id: tuple[str, str] | None, line: int) -> None:
        is_key = frame.is_map and frame.key is _OPEN
        if value is _MERGE_KEY and not is_key:
            value = "<<"  # a merge only as a mapping key; elsewhere plain text
        if not frame.is_map:
            frame.value.append(value)
            return
        if is_key:  # this value is a key
            if key_id is not None and key_id[0] != scalars.MERGE:
                first = frame.keys.get(key_id)
                if first is not None:
                    raise _LoadError(f"duplicate key {key_id[1]!r} (first at line {first})", line)
                frame.keys[key_id] = line + 1
            if isinstance(value, (dict, list, set)):
                raise _LoadError(f"a {type_word(value)} cannot be a key", line)
            frame.key = value
            return
        key, frame.key = frame.key, _OPEN
        if key is _MERGE_KEY and frame.tag == _MAP:
            merged = value if isinstance(value, list) else [value]
            if not all(isinstance(m, dict) for m in merged):
                raise _LoadError("a merge key (<<) takes a mapping or a list of mappings", line)
            frame.merges.extend(merged)
            return
        frame.value[key] = value  # under !!set, !!omap, !!pairs too: JSON has no form for them

    def _close(self, frame: _Frame) -> Any:
        if not frame.is_map:
            if frame.tag in (_OMAP, _PAIRS):
                return [
                    tuple(item.items())[0] if isinstance(item, dict) and len(item) == 1 else item
                    for item in frame.value
                ]
            return frame.value
        if frame.tag == _SET:
            return set(frame.value)
        if frame.tag in (_OMAP, _PAIRS):
            return list(frame.value.items())
        if frame.merges:
            out: dict[Any, Any] = {}
            # YAML 1.1 merge: earlier mappings win over later ones, explicit keys over all.
            for m in reversed(frame.merges):
                out.update(m)
            out.update(frame.value)
            return out
        return frame.value


class _MergeKey:
    """The `<<` key of a YAML 1.1 merge."""


_MERGE_KEY = _MergeKey()


def type_word(value: Any) -> str:
    if isinstance(value, dict):
        return "mapping"
    return "list" if isinstance(value, list) else type(value).__name__


def _yaml_message(source: str, err: MarkedYAMLError) -> str:
    mark = err.problem_mark or err.context_mark
    problem = err.problem or err.context or "invalid YAML"
    where = f"line {mark.line + 1}: " if mark is not None else ""
    return f"{source}: {where}{problem}"


def yaml_documents(
    text: str, source: str, budget: int, budget_name: str, max_depth: int
) -> tuple[list[tuple[int, Any]], int]:
    """(1-based line, data) per document, and the size after alias expansion.
    Raises RenderError naming `source` and the line."""
    loader = _Loader(text, budget, max_depth)
    try:
        docs = loader.documents()
    except _Expansion as e:
        raise RenderError(
            f"{source}: line {e.line + 1}: YAML aliases expand past {budget_name}; refusing it"
        ) from None
    except _LoadError as e:
        where = f"line {e.line + 1}: " if e.line is not None else ""
        raise RenderError(f"{source}: {where}{e}") from None
    except MarkedYAMLError as e:
        raise RenderError(_yaml_message(source, e)) from None
    except YAMLError as e:
        raise RenderError(f"{source}: {e}") from None
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


def json_document(text: str, source: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_json_pairs, parse_constant=_json_constant)
    except json.JSONDecodeError as e:
        raise RenderError(f"{source}: line {e.lineno}: {e.msg}") from None
    except _DuplicateKey as e:
        raise RenderError(f"{source}: duplicate key {e.args[0]!r}") from None
    except ValueError as e:
        raise RenderError(f"{source}: {e}") from None
    except RecursionError:
        raise RenderError(f"{source}: nested too deeply") from None
