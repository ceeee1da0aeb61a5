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
from yaml.composer import Composer, ComposerError
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, MappingStartEvent, ScalarEvent, SequenceStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.resolver import Resolver

from . import scalars
from .errors import RenderError

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
    duplicate keys are refused (as kubectl does), and plain scalars resolve as
    kubectl resolves them (`scalars`: no base-60, dates stay strings)."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is ScalarNode and implicit[0]:
            return scalars.resolve_plain(value)
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]

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


def _go_scalar(loader: Any, node: Node) -> Any:
    try:
        return scalars.construct(node.tag, str(node.value))
    except ValueError as e:
        raise ComposerError(None, None, str(e), node.start_mark) from None


_Loader.add_constructor(_TIMESTAMP, _timestamp_as_text)
for _tag in (scalars.BOOL, scalars.NULL, scalars.INT, scalars.FLOAT):
    _Loader.add_constructor(_tag, _go_scalar)
_Loader.add_constructor("tag:yaml.org,2002:binary", _binary_as_base64)


def _yaml_message(source: str, err: MarkedYAMLError) -> str:
    mark = err.problem_mark or err.context_mark
    problem = err.problem or err.context or "invalid YAML"
    where = f"line {mark.line + 1}: " if mark is not None else ""
    return f"{source}: {where}{problem}"


def yaml_documents(
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
        raise RenderError(
            f"{source}: {where}YAML aliases expand past {budget_name}; refusing it"
        ) from None
    except MarkedYAMLError as e:
        raise RenderError(_yaml_message(source, e)) from None
    except YAMLError as e:
        raise RenderError(f"{source}: {e}") from None
    except RecursionError:
        raise RenderError(f"{source}: nested too deeply") from None
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
