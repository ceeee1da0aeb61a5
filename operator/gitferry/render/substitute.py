"""postBuild variable substitution: `${var}` in rendered objects, as Flux does it.

Flux's kustomize-controller substitutes variables in each object after
kustomize builds it and before it is applied (docs/spec/v1/kustomizations.md,
"Post build variable substitution"), with its fork of drone/envsubst
(fluxcd/pkg envsubst; the call is fluxcd/pkg kustomize/kustomize_varsub.go).
What that does, and so what this does:

| written                        | becomes                                                           |
|--------------------------------|-------------------------------------------------------------------|
| `${var}`                       | the value; unset: an error (strict) or "" (not strict)            |
| `${var:=d}`, `${var:-d}`, `${var=d}` | the value, or `d` when it is unset *or empty* (all three alike) |
| `${var:=${other}x}`            | defaults nest, and are evaluated even when unused (as Flux)       |
| `${#var}`                      | the value's length in UTF-8 bytes                                 |
| `${var^}` `${var^^}` `${var,}` `${var,,}` | first / all characters upper or lower case             |
| `${var:pos}`, `${var:pos:len}` | a substring; a negative `pos` counts from the end; a `pos` or `len` that is no integer leaves the value whole |
| `${var/x/y}` `${var//x/y}`     | the first / every `x` (literal text, not a pattern) replaced by `y`; `${var/x/}` deletes it |
| `${var/#x/y}` `${var/%x/y}`    | `x` replaced where it starts / ends the value                     |
| `${var#p}` `${var##p}` `${var%p}` `${var%%p}` | the shortest / longest match of the glob `p` (`*`, `?`, `[a-z]`, `[^a-z]`, `\\c`) stripped from the start / end; a match is never empty |
| `$${var}`                      | the text `${var}`: `$$` is one literal `$` anywhere (`$$x` -> `$x`) |
| `$var`                         | left as written: only `${` starts a substitution                  |

Inside `${…}`: `${var/x/y}`'s `x` and `y` take `\\/`, `\\\\` and `$$` as escapes;
a default ends at the first `}`. A variable name in a manifest is letters,
digits and `_`; names given as variables must match
`^[_[:alpha:]][_[:alpha:][:digit:]]*$` (`check_variable_names`), as Flux checks.

Refused with a `SubstitutionError`, where Flux either refuses too or does
something no reader would expect: `${var-d}`, `${var+d}`, `${var?d}` (Flux:
"missing closing brace"; write `${var:-d}`), `${var:+d}` and `${var:?d}` (Flux
reads both as `${var:-d}`, bash otherwise), `${var/#x/}` and `${var/%x/}` (Flux
leaves the value unchanged), `${var^,}` and mixed case operators (Flux: the
value unchanged), a negative substring length (Flux's Go code panics), a
malformed glob (Flux: the value unchanged), and any other malformed `${`:
`${}`, `${ var}`, a `${` never closed (Flux's errors). An object that the
label or annotation `disabled_annotation: disabled_value` marks is left as
written (Flux: `kustomize.toolkit.fluxcd.io/substitute: disabled`).

Where this differs from Flux, on purpose:

- **No YAML is injected.** Flux substitutes in the object's YAML text and
  parses the result again, so a value holding `"\\n- x: y"` or `{a: b}` adds
  structure, and ` # x` cuts a value short. Here the object's tree is walked
  and only string scalars (and mapping keys) are substituted; a value never
  adds a field, an item or a comment. (Flux also deletes every newline from a
  value, which keeps most injections out; the caller does that here, see
  `gitferry.postbuild`.)
- **Types come back as Flux's re-parse gives them**, for the strings that
  kustomize writes as plain scalars (kustomize drops the quotes of
  `"${PORT}"`, so Flux reads `8080` either way): a changed string is resolved
  as go-yaml v2 resolves a plain scalar (`scalars.py`), so `replicas:
  ${REPLICAS}` is the integer 3, `${ON}` the boolean true, `""` null. A
  result that is one whole YAML scalar marked as a string, quoted or tagged
  `!!str`, is that string: Flux's documented `${quote}${id}${quote}` idiom
  and its tested `!!str 123` value keep working. A string kustomize would
  quote (leading or trailing spaces, a line break, `: `, ` #`, a leading
  indicator), and any result holding a line break, stays a string, as in
  Flux.
- Substrings count characters, not UTF-8 bytes (Flux cuts bytes and can split a
  character); `${#var}` counts bytes as Flux does. A glob's suffix match is
  correct for classes and escapes (Flux reverses the pattern's text, which
  breaks `[a-z]` and `\\.`).
- Strict mode is the default here and in Flux since kustomize-controller
  v1.9 (the `StrictPostBuildSubstitutions` feature gate); the Flux docs still
  describe the older non-strict default.

Bounds: values are untrusted (a tenant's ConfigMap). Everything substitution
writes, expression results and the final strings, is charged in UTF-8 bytes
against `max_bytes` for the whole call, and a glob match as writing its value
once per 64 tokens and once per range of a class (its time is linear in
both), so a large value used many times fails fast instead of exhausting
memory or time. `${` nests at most `MAX_NESTING` deep. Errors name the file,
the object, the field and the variable, never a value: values may come from
Secrets.

Why our own: no Python library matches Flux's grammar. `expandvars` expands
`$var` and reads `$$` as the process id, `${var:=d}` assigns into the
environment and `${var:+d}` follows bash; `envsubst` (last released 2019)
reads the environment and argv, expands `$var`, and gives `${var-d}` bash's
meaning; neither has Flux's string functions or bounds its output.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, NoReturn

import yaml

from ..deadline import Deadline
from . import scalars
from .errors import SubstitutionError
from .files import human_size
from .objects import ContentError, Manifest, key_text, type_name

STAGE = "render (postBuild substitution)"

# Flux's varsubRegex; RE2's [:alpha:] and [:digit:] are ASCII.
VARIABLE_NAME = "^[_[:alpha:]][_[:alpha:][:digit:]]*$"
_VARIABLE_NAME = re.compile(r"[_A-Za-z][_A-Za-z0-9]*")

# Operators that supply a value for an unset variable: strict mode allows them.
_DEFAULTS = frozenset({"=", ":=", ":-"})
_CASES = frozenset({"^", "^^", ",", ",,"})  # upper / lower case: the first or every character
_LINE_BREAK = re.compile("[\n\r\x85\u2028\u2029]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def check_variable_names(names: Iterable[str], origin: str) -> None:
    """SubstitutionError naming `origin` ("ConfigMap apps/vars") and the first
    name that is no variable name (Flux refuses it the same way). Names are
    keys, never values: naming one reveals no secret."""
    for name in names:
        if not isinstance(name, str) or not _VARIABLE_NAME.fullmatch(name):
            shown = name if len(str(name)) <= 64 else f"{str(name)[:64]}…"
            raise SubstitutionError(
                f"{origin}: {shown!r} is not a variable name (it must match {VARIABLE_NAME})",
                variable=str(name),
            )


def substitute(
    manifests: Sequence[Manifest],
    variables: Mapping[str, str],
    *,
    strict: bool,
    max_bytes: int,
    disabled_annotation: str,
    disabled_value: str,
    always: bool = False,
    deadline: Deadline | None = None,
) -> list[Manifest]:
    """`manifests` with `${…}` substituted from `variables` (the module
    docstring has the rules), in the same order.

    - `strict`: a variable that is unset and has no default is an error
      (Flux's StrictPostBuildSubstitutions); otherwise it is "".
    - `max_bytes`: what substitution may write in all, in UTF-8 bytes (pass
      `Limits.max_total_bytes`).
    - An object whose label or annotation `disabled_annotation` is
      `disabled_value` is left as written.
    - With no variables at all nothing is substituted unless `always` (Flux's
      default `substituteStrategy: WithVariables`; `Always` sets it).

    Returns new Manifests for the objects that changed and the same ones for
    the rest; the inputs are not modified (new objects share unchanged parts
    with them). Raises SubstitutionError (naming file, object, field and
    variable, never a value) or DeadlineExceeded."""
    if max_bytes <= 0:
        raise ValueError("max_bytes must be positive")
    check_variable_names(variables, "postBuild variables")
    values = dict(variables)
    if not values and not always:
        return list(manifests)
    run = _Run(values, strict, _Budget(max_bytes))
    out: list[Manifest] = []
    for m in manifests:
        if deadline is not None:
            deadline.remaining(STAGE)
        out.append(m if _disabled(m, disabled_annotation, disabled_value) else run.manifest(m))
    return out


def _disabled(m: Manifest, key: str, value: str) -> bool:
    meta = m.obj.get("metadata")
    if not isinstance(meta, dict):
        return False
    return any(
        isinstance(marks, dict) and marks.get(key) == value
        for marks in (meta.get("labels"), meta.get("annotations"))
    )


# --- the grammar --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Expr:
    """One `${…}`: the variable, the operator ("" for `${var}`, "len" for
    `${#var}`) and its arguments (text or nested expressions)."""

    name: str
    op: str
    args: tuple[_Part, ...]

    def shape(self) -> str:
        """How a message shows it: `${NAME:=…}`, never its arguments' text."""
        if self.op == "len":
            return f"${{#{self.name}}}"
        if self.op in ("", *_CASES):
            return f"${{{self.name}{self.op}}}"
        return f"${{{self.name}{self.op}…}}"


_Part = str | _Expr


class _SyntaxProblem(Exception):
    def __init__(self, message: str, at: int) -> None:
        super().__init__(message)
        self.at = at


# `${a:=${b:=…}}` nests; parsing and evaluating recurse, so git may not nest
# deeper than this (Python's stack would end first, with no useful message).
MAX_NESTING = 32


class _Parser:
    """Flux's envsubst grammar, read left to right with no backtracking."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.depth = 0

    def peek(self, ahead: int = 0) -> str:
        j = self.i + ahead
        return self.s[j] if j < len(self.s) else ""

    def fail(self, message: str, at: int | None = None) -> NoReturn:
        raise _SyntaxProblem(message, self.i if at is None else at)

    def template(self) -> tuple[_Part, ...]:
        parts: list[_Part] = []
        text: list[str] = []
        s, n = self.s, len(self.s)
        while self.i < n:
            j = s.find("$", self.i)
            if j < 0:
                text.append(s[self.i :])
                break
            text.append(s[self.i : j])
            self.i = j
            if s.startswith("${", j):
                if text:
                    parts.append("".join(text))
                    text = []
                parts.append(self.expr())
            elif s.startswith("$$", j):  # `$$` is one `$`, whatever follows
                text.append("$")
                self.i = j + 2
            else:
                text.append("$")
                self.i = j + 1
        rest = "".join(text)
        if rest:
            parts.append(rest)
        return tuple(parts)

    def ident(self) -> str:
        """A name in a manifest: Go's unicode letters, digits and `_`."""
        start = self.i
        s = self.s
        while self.i < len(s) and (
            s[self.i].isalpha() or s[self.i].isdecimal() or s[self.i] == "_"
        ):
            self.i += 1
        return s[start : self.i]

    def close(self, start: int) -> None:
        if self.peek() != "}":
            self.fail("missing '}' to close the '${'", start)
        self.i += 1

    def expr(self) -> _Expr:
        start = self.i
        if self.depth >= MAX_NESTING:
            self.fail(f"'${{' nested deeper than {MAX_NESTING} levels", start)
        self.depth += 1
        try:
            return self.inner(start)
        finally:
            self.depth -= 1

    def inner(self, start: int) -> _Expr:
        """The `${…}` that starts at `start`."""
        self.i += 2  # ${
        if self.peek() == "#":
            self.i += 1
            name = self.ident()
            if not name:
                self.fail("'${#' must be followed by a variable name", start)
            self.close(start)
            return _Expr(name, "len", ())
        name = self.ident()
        if not name:
            self.fail(
                "'${' must be followed by a variable name (write '$${' for a literal '${')", start
            )
        c = self.peek()
        if c == "}":
            self.i += 1
            return _Expr(name, "", ())
        if c == ":":
            after = self.peek(1)
            if after in ("=", "-"):
                self.i += 2
                return self.defaults(name, ":" + after, start)
            if after in ("?", "+"):
                self.fail(
                    f"${{{name}:{after}…}} is not supported (Flux reads it as ${{{name}:-…}}, "
                    f"bash otherwise): write ${{{name}:-…}}",
                    start,
                )
            self.i += 1
            return self.substring(name, start)
        if c == "=":
            self.i += 1
            return self.defaults(name, "=", start)
        if c in (",", "^"):
            op_start = self.i
            while self.i - op_start < 2 and self.peek() in (",", "^"):
                self.i += 1
            op = self.s[op_start : self.i]
            if op not in _CASES:
                self.fail(f"${{{name}{op}}} is not supported: use one of ^ ^^ , ,,", start)
            self.close(start)
            return _Expr(name, op, ())
        if c == "/":
            return self.replacement(name, start)
        if c in ("#", "%"):
            op = c * 2 if self.peek(1) == c else c
            self.i += len(op)
            pattern = self.param("}", escapes=False)
            self.close(start)
            return _Expr(name, op, (pattern,))
        if c in ("-", "+", "?"):
            self.fail(
                f"${{{name}{c}…}} is not supported (Flux refuses it too): "
                f"write ${{{name}:-…}} for a default",
                start,
            )
        self.fail(f"missing '}}' after ${{{name}", start)

    def defaults(self, name: str, op: str, start: int) -> _Expr:
        args: list[_Part] = []
        while self.peek() != "}":
            if not self.peek():
                self.fail("missing '}' to close the '${'", start)
            args.append(self.param("}", escapes=False))
        self.i += 1
        return _Expr(name, op, tuple(args))

    def substring(self, name: str, start: int) -> _Expr:
        position = self.param(":}", escapes=False)
        if self.peek() == "}":
            self.i += 1
            return _Expr(name, ":", (position,))
        if self.peek() != ":":
            self.fail(f"${{{name}:…}} takes a position and a length, then '}}'", start)
        self.i += 1
        length = self.param("}", escapes=False)
        self.close(start)
        return _Expr(name, ":", (position, length))

    def replacement(self, name: str, start: int) -> _Expr:
        self.i += 1
        op = "/"
        if self.peek() in ("/", "#", "%"):
            op += self.peek()
            self.i += 1
        # As in Flux, the text to replace runs to the next unescaped '/'.
        old = self.param("/", escapes=True)
        if self.peek() != "/":
            self.fail(f"${{{name}{op}…}} needs a second '/': ${{{name}{op}old/new}}", start)
        self.i += 1
        if self.peek() == "}":
            self.i += 1
            if op in ("/#", "/%"):
                self.fail(
                    f"${{{name}{op}…/}} with an empty replacement is not supported (Flux "
                    f"leaves the value unchanged): write ${{{name}{op[1]}…}}",
                    start,
                )
            return _Expr(name, op, (old,))
        new = self.param("}", escapes=True)
        self.close(start)
        return _Expr(name, op, (old, new))

    def param(self, stop: str, *, escapes: bool) -> _Part:
        """One argument: a nested `${…}`, or text up to a `stop` character or a `${`."""
        if self.s.startswith("${", self.i):
            return self.expr()
        s, n = self.s, len(self.s)
        start = self.i
        text: list[str] = []
        while self.i < n:
            c = s[self.i]
            nxt = self.peek(1)
            if c == "$" and nxt == "{":
                break
            if escapes and ((c == "$" and nxt == "$") or (c == "\\" and nxt in ("/", "\\"))):
                text.append(nxt)
                self.i += 2
                continue
            if c in stop:
                break
            text.append(c)
            self.i += 1
        if self.i == start:
            self.fail("an argument is missing inside '${…}'")
        return "".join(text)


# --- evaluation ----------------------------------------------------------------
class _TooBig(Exception):
    pass


class _Unset(Exception):
    def __init__(self, expr: _Expr) -> None:
        super().__init__(expr.name)
        self.expr = expr


class _Refused(Exception):
    """An expression that parsed but cannot be evaluated with these values."""

    def __init__(self, message: str, expr: _Expr) -> None:
        super().__init__(message)
        self.expr = expr


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


class _Budget:
    """What one `substitute` call may still write, in bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit

    def check(self, size: int) -> None:
        if size > self.left:
            raise _TooBig()

    def take(self, size: int) -> None:
        self.check(size)
        self.left -= size


class _Evaluator:
    def __init__(self, values: dict[str, str], strict: bool, budget: _Budget) -> None:
        self.values = values
        self.strict = strict
        self.budget = budget

    def text(self, parts: tuple[_Part, ...]) -> str:
        pieces = [p if isinstance(p, str) else self.expr(p) for p in parts]
        self.budget.take(sum(_utf8_len(p) for p in pieces))
        return "".join(pieces)

    def expr(self, e: _Expr) -> str:
        # Arguments first, even a default that is not needed: Flux does the same,
        # so a strict error in an unused default is an error here too.
        args = [a if isinstance(a, str) else self.expr(a) for a in e.args]
        value = self.values.get(e.name)
        if value is None:
            if self.strict and e.op not in _DEFAULTS:
                raise _Unset(e)
            value = ""
        out = self.apply(e, value, args)
        self.budget.take(_utf8_len(out))
        return out

    def apply(self, e: _Expr, value: str, args: list[str]) -> str:
        op = e.op
        if op == "":
            return value
        if op in _DEFAULTS:
            return value or "".join(args)
        if op == "len":
            return str(len(value.encode("utf-8", "surrogatepass")))
        if op in _CASES:
            return _case(value, op)
        if op == ":":
            return _substring(value, args, e)
        if op.startswith("/"):
            return self.replace(value, op, args)
        return _trim(value, op, args[0], e, self.budget)

    def replace(self, value: str, op: str, args: list[str]) -> str:
        old = args[0]
        new = args[1] if len(args) > 1 else ""
        if op == "//":
            count = len(value) + 1 if not old else value.count(old)
            self.budget.check(len(value) + count * (len(new) - len(old)))
            return value.replace(old, new)
        if op == "/":
            return value.replace(old, new, 1)
        if op == "/#":
            return new + value[len(old) :] if value.startswith(old) else value
        # "/%"
        return value[: len(value) - len(old)] + new if value.endswith(old) else value


def _case(value: str, op: str) -> str:
    """Go's strings.ToUpper/ToLower (and the first rune's unicode.ToUpper/ToLower):
    one character for one, never `ß` -> `SS`."""
    upper = op.startswith("^")

    def one(c: str) -> str:
        mapped = c.upper() if upper else c.lower()
        return mapped if len(mapped) == 1 else c

    if len(op) == 1:
        return one(value[0]) + value[1:] if value else value
    if value.isascii():
        return value.upper() if upper else value.lower()
    return "".join(one(c) for c in value)


_ATOI = re.compile(r"[+-]?[0-9]+")
_INT64 = 1 << 63


def _atoi(text: str) -> int | None:
    """Go's strconv.Atoi: an optional sign and ASCII digits, within int64."""
    if not _ATOI.fullmatch(text) or len(text.lstrip("+-").lstrip("0")) > 19:
        return None  # beyond int64 (and never a 5000-digit int() for Python to refuse)
    number = int(text)
    return number if -_INT64 <= number < _INT64 else None


def _substring(value: str, args: list[str], e: _Expr) -> str:
    """Flux's toSubstr, counting characters: what no integer is leaves the value."""
    position = _atoi(args[0])
    if position is None:
        return value
    if position < 0:
        position = max(len(value) + position, 0)
    if len(args) == 1:
        return value[position:]
    length = _atoi(args[1])
    if length is None:
        return value
    if length < 0:
        raise _Refused("a negative length is not supported", e)
    return value[position : position + length]


# --- globs ---------------------------------------------------------------------
_STAR = ("*",)


def _glob(pattern: str) -> list[tuple[Any, ...]]:
    """The tokens of a glob as Flux's envsubst reads it: `*` any text (`/`
    too), `?` any character, `[…]`/`[^…]` a class of characters and ranges,
    `\\c` the character c. ValueError when it is malformed."""
    tokens: list[tuple[Any, ...]] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if not tokens or tokens[-1] is not _STAR:
                tokens.append(_STAR)
            i += 1
        elif c == "?":
            tokens.append(("?",))
            i += 1
        elif c == "\\":
            if i + 1 >= n:
                raise ValueError("ends in a lone '\\'")
            tokens.append(("=", pattern[i + 1]))
            i += 2
        elif c == "[":
            i += 1
            negated = i < n and pattern[i] == "^"
            if negated:
                i += 1
            ranges: list[tuple[str, str]] = []
            while True:
                if i < n and pattern[i] == "]" and ranges:
                    i += 1
                    break
                lo, i = _class_char(pattern, i)
                hi = lo
                if pattern[i] == "-":
                    hi, i = _class_char(pattern, i + 1)
                ranges.append((lo, hi))
            tokens.append(("[", negated, tuple(ranges)))
        else:
            tokens.append(("=", c))
            i += 1
    return tokens


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    """One character of a class (Go's path.getEsc): never a bare `-` or `]`,
    and something must follow it."""
    n = len(pattern)
    if i >= n or pattern[i] in "-]":
        raise ValueError("a character class is malformed")
    if pattern[i] == "\\":
        i += 1
        if i >= n:
            raise ValueError("a character class is malformed")
    if i + 1 >= n:
        raise ValueError("a character class is not closed")
    return pattern[i], i + 1


def _in_class(token: tuple[Any, ...], c: str) -> bool:
    negated, ranges = token[1], token[2]
    return any(lo <= c <= hi for lo, hi in ranges) != bool(negated)


def _prefix_ends(tokens: list[tuple[Any, ...]], text: str) -> Iterator[int]:
    """Each length >= 1 of a prefix of `text` that the glob matches whole, in
    increasing order. A bit-parallel NFA (bit j: the first j tokens matched):
    time linear in the text, whatever the pattern, never backtracking."""
    k = len(tokens)
    stars = sum(1 << j for j, t in enumerate(tokens) if t is _STAR)
    done = 1 << k
    anything = sum(1 << j for j, t in enumerate(tokens) if t[0] == "?")
    literal: dict[str, int] = {}
    for j, t in enumerate(tokens):
        if t[0] == "=":
            literal[t[1]] = literal.get(t[1], 0) | 1 << j
    classes = [(j, t) for j, t in enumerate(tokens) if t[0] == "["]
    masks: dict[str, int] = {}

    def closure(bits: int) -> int:
        return bits | ((bits & stars) << 1)  # a star may match nothing

    bits = closure(1)
    for end, c in enumerate(text, 1):
        mask = masks.get(c)
        if mask is None:
            mask = literal.get(c, 0) | anything
            for j, t in classes:
                if _in_class(t, c):
                    mask |= 1 << j
            masks[c] = mask
        bits = closure(((bits & mask) << 1) | (bits & stars))
        if not bits:
            return
        if bits & done:
            yield end


def _trim(value: str, op: str, pattern: str, e: _Expr, budget: _Budget) -> str:
    """`value` less the shortest (`#`, `%`) or longest (`##`, `%%`) non-empty
    prefix (`#`) or suffix (`%`) that the glob matches. The match is charged
    to `budget` as writing the value once per 64 tokens and once per range of
    a class: its time is linear in both."""
    try:
        tokens = _glob(pattern)
    except ValueError as err:
        raise _Refused(f"its pattern {err}", e) from None
    ranges = sum(len(t[2]) for t in tokens if t[0] == "[")
    budget.take(len(value) * (1 + len(tokens) // 64 + ranges))
    from_end = op.startswith("%")
    text = value[::-1] if from_end else value
    if from_end:
        tokens = tokens[::-1]
    ends = _prefix_ends(tokens, text)
    if len(op) == 1:
        cut = next(ends, 0)
    else:
        cut = 0
        for cut in ends:  # noqa: B007 - the last one is the longest
            pass
    if not cut:
        return value
    return value[: len(value) - cut] if from_end else value[cut:]


# --- the type of a substituted scalar -------------------------------------------
def _written_plain(text: str) -> bool:
    """Whether go-yaml (kustomize's writer) writes `text` as a plain scalar,
    which Flux then reads again as YAML: not when it has surrounding blanks,
    a line break, a control character, `: ` or ` #`, ends in `:` or starts
    with an indicator."""
    if not text or text[0] in " \t" or text[-1] in " \t" or text.endswith(":"):
        return False
    if _LINE_BREAK.search(text) or _CONTROL.search(text):
        return False
    if text[0] in "#,[]{}&*!|>'\"%@`":
        return False
    if text[0] in "-?:" and (len(text) == 1 or text[1] in " \t"):
        return False
    if text.startswith(("---", "...")):
        return False
    return not any(s in text for s in (": ", ":\t", " #", "\t#"))


def _one_string(text: str) -> str | None:
    """The string that `text` stands for when it is one whole YAML scalar
    marked as a string: quoted (`"…"`, `'…'`) or tagged (`!!str …`); None
    when it is anything else."""
    try:
        events = list(yaml.parse(text, Loader=yaml.CSafeLoader))
    except yaml.YAMLError:
        return None
    if len(events) != 5:  # stream start, document start, the scalar, document end, stream end
        return None
    scalar = events[2]
    if not isinstance(scalar, yaml.ScalarEvent) or scalar.anchor is not None:
        return None
    if scalar.tag == scalars.STR or (scalar.tag in (None, "!") and scalar.style in ("'", '"')):
        return str(scalar.value)
    return None


class _NotJSON(Exception):
    pass


def _resolve(original: str, result: str) -> Any:
    """What Flux's re-parse makes of `result`, substituted into `original`."""
    if not _written_plain(original) or _LINE_BREAK.search(result):
        return result
    if result.startswith(("'", '"', "!!str")):
        string = _one_string(result)
        if string is not None:
            return string
    tag = scalars.resolve_plain(result)
    if tag not in (scalars.INT, scalars.FLOAT, scalars.BOOL, scalars.NULL):
        return result
    value = scalars.construct(tag, result)
    if isinstance(value, float) and not math.isfinite(value):
        raise _NotJSON()
    return value


# --- the walk ------------------------------------------------------------------
_WORD = re.compile(r"[A-Za-z0-9_-]+")
_TEXT_ONLY_HINT = (
    "; to keep it text, quote it in the value as Flux's docs show: "
    "${quote}${VAR}${quote} with quote: '\"'"
)


def _field(path: list[str | int]) -> str:
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        elif _WORD.fullmatch(step):
            out += f".{step}" if out else step
        else:
            out += f"[{json.dumps(step)}]"
    return out or "(the object)"


def _text_only(path: list[str | int]) -> bool:
    """Fields the API takes only as strings: a substituted one that reads as
    another type fails here, naming the field, instead of at the API server."""
    if len(path) == 1:
        return path[0] in ("apiVersion", "kind")
    if len(path) == 2:
        return path[0] == "metadata" and path[1] in ("name", "namespace")
    return len(path) == 3 and path[0] == "metadata" and path[1] in ("labels", "annotations")


class _Run:
    """One `substitute` call: the variables, the budget, and the object at hand."""

    def __init__(self, values: dict[str, str], strict: bool, budget: _Budget) -> None:
        self.evaluator = _Evaluator(values, strict, budget)
        self.source = ""
        self.label = ""

    def error(self, path: list[str | int], message: str, variable: str | None = None) -> NoReturn:
        raise SubstitutionError(
            f"{self.source}: {self.label}: {_field(path)}: {message}",
            source=self.source,
            obj=self.label,
            variable=variable,
        )

    def manifest(self, m: Manifest) -> Manifest:
        self.source, self.label = m.source, m.describe()
        obj = m.obj
        if m.string_data:
            obj = self.string_data(obj, m.string_data)
        new = self.walk(obj, [])
        if new is m.obj:
            return m
        self.check(new)
        return replace(m, obj=new)

    def string_data(self, obj: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
        """The Secret's data with the keys render folded from stringData
        substituted as text, as Flux substitutes stringData before the fold."""
        data = obj.get("data")
        if not isinstance(data, dict):
            return obj
        new_data = dict(data)
        for key in keys:
            encoded = data.get(key)
            if not isinstance(encoded, str):
                continue
            try:
                text = base64.b64decode(encoded, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                continue  # not what render wrote: leave it
            if "$" not in text:
                continue
            path: list[str | int] = ["stringData", key]
            value = self.string(text, path)
            if not isinstance(value, str):
                self.error(path, f"must be a string, but substituted it reads as {type_name(value)}"
                           + _TEXT_ONLY_HINT)  # fmt: skip
            if value is not text:
                new_data[key] = base64.b64encode(value.encode("utf-8")).decode("ascii")
        if new_data == data:
            return obj
        return {**obj, "data": new_data}

    def walk(self, value: Any, path: list[str | int]) -> Any:
        if isinstance(value, str):
            return self.string(value, path) if "$" in value else value
        if isinstance(value, dict):
            return self.mapping(value, path)
        if isinstance(value, list):
            out: list[Any] | None = None
            for i, item in enumerate(value):
                path.append(i)
                new = self.walk(item, path)
                path.pop()
                if new is not item and out is None:
                    out = list(value[:i])
                if out is not None:
                    out.append(new)
            return value if out is None else out
        return value

    def mapping(self, value: dict[Any, Any], path: list[str | int]) -> dict[Any, Any]:
        out: dict[Any, Any] | None = None
        renamed: dict[Any, Any] = {}  # substituted key -> the key as git has it
        for i, (key, item) in enumerate(value.items()):
            path.append(key)
            new = self.walk(item, path)
            new_key = self.key(key, path) if isinstance(key, str) and "$" in key else key
            path.pop()
            if out is None and (new is not item or new_key is not key):
                out = dict(list(value.items())[:i])
            if out is None:
                continue
            if new_key in out:
                # Name the substituted key as git writes it: the key it now
                # equals would show the value.
                path.append(key if new_key is not key else renamed[new_key])
                self.error(path, "substituted, this key repeats another key of the mapping")
            if new_key is not key:
                renamed[new_key] = key
            out[new_key] = new
        return value if out is None else out

    def key(self, key: str, path: list[str | int]) -> str:
        new = self.string(key, path, as_key=True)
        if isinstance(new, str) and new == key:
            return key
        try:
            return key_text(new)
        except ContentError:  # its message shows the key, which may hold a value
            self.error(path, f"substituted, this key reads as {type_name(new)} with no JSON form")

    def string(self, text: str, path: list[str | int], *, as_key: bool = False) -> Any:
        what = "key" if as_key else "value"
        try:
            parts = _Parser(text).template()
        except _SyntaxProblem as e:
            self.error(path, f"cannot substitute in this {what}: at character {e.at + 1}: {e}")
        try:
            result = self.evaluator.text(parts)
        except _Unset as e:
            self.error(
                path,
                f"{e.expr.shape()}: variable {e.expr.name} is not set and has no default "
                f"(set it in spec.postBuild, or write ${{{e.expr.name}:=default}})",
                e.expr.name,
            )
        except _Refused as e:
            self.error(path, f"{e.expr.shape()}: {e}", e.expr.name)
        except _TooBig:
            limit = human_size(self.evaluator.budget.limit)
            self.error(
                path,
                f"substitution writes more than {limit}, the limit for one sync "
                "(a large value, or one used many times)",
            )
        if result == text:
            return text
        try:
            value = _resolve(text, result)
        except _NotJSON:
            self.error(path, f"substituted, this {what} reads as a YAML infinity or NaN, "
                       "which JSON cannot carry")  # fmt: skip
        if not as_key and _text_only(path) and not isinstance(value, str):
            if path == ["metadata", "namespace"] and value is None:
                return ""  # no namespace: `check` drops it, as render does
            self.error(path, f"must be a string, but substituted it reads as {type_name(value)}"
                       + _TEXT_ONLY_HINT)  # fmt: skip
        return value

    def check(self, obj: dict[str, Any]) -> None:
        """The identity render checked may have changed: it must still be one."""
        for field in ("apiVersion", "kind"):
            if obj.get(field) == "":
                self.error([field], "is empty once substituted")
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            self.error(["metadata"], "must be a mapping")
        if meta.get("name") == "":
            self.error(["metadata", "name"], "is empty once substituted")
        if meta.get("namespace") == "":  # no namespace, as render reads an empty one
            obj["metadata"] = {k: v for k, v in meta.items() if k != "namespace"}
