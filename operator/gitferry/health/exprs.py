"""healthCheckExprs: health rules for custom resources, written in CEL by the user.

Flux's semantics (kustomize-controller docs/spec/v1/kustomizations.md "Health
check expressions"; fluxcd/pkg runtime/cel status_reader.go and
status_evaluator.go):

- An entry is `{apiVersion, kind?, current, inProgress?, failed?}`. Only the
  group of `apiVersion` matters (every version matches); without `kind` the
  entry covers every kind of the group, and an entry naming the kind wins over
  it. Two entries for the same group and kind are an error.
- The expressions see the object's top-level fields as variables (`status`,
  `metadata`, `spec`…), only those the object has: `has(status.x)` is false
  while `status.x` is missing, but `status` itself is an error until it exists.
- First, if both `status.observedGeneration` and `metadata.generation` are
  integers and differ, the object is InProgress. Then `inProgress`, `failed` and
  `current` are evaluated in that order; the first that is true gives the
  status, and none true is InProgress.
- An expression that cannot be evaluated (a missing field, an overflow) or
  gives something other than a bool leaves the object Unknown with the error,
  and the wait goes on until its timeout (Flux returns the error to kstatus,
  which reports Unknown). A spec whose expressions do not parse is refused
  before anything is applied (Flux: InvalidCELExpression, Stalled).

The expressions are untrusted. Parsing stays here: the CEL runtime
(cel-expr-python, the CEL team's wrapper of cel-cpp) refuses nesting deeper than
32, we cap each expression at 2048 characters, a spec at 100 entries and at
64 KiB of expressions in all, and parsing is linear in its input (under 5 ms and
a few MiB for the worst expression of 2048 characters, 0.2 s for the worst spec,
done once per spec and never evaluating anything). Evaluating is not bounded
by the runtime (no memory or cost limit; it stops only comprehensions, after
10,000 iterations), so it runs in worker processes with a memory limit and a
timeout (`sandbox`). Every failure is an ExprError or an Unknown Health.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from cel_expr_python import cel
from cel_expr_python.ext import ext_encoders, ext_optional, ext_strings

from . import sandbox
from .errors import ExprError
from .kinds import group_kind
from .sandbox import CelError, NotBool
from .status import Health, Status, clip, in_progress, stale_generation

# Far above any expression in Flux's CEL cheatsheet (the longest is under 100
# characters); a bound on what one untrusted expression can ask of the runtime.
MAX_EXPR_CHARS = 2048
MAX_ENTRIES = 100
# All the expressions of one spec: bounds the time parsing takes in the
# operator's process (about 2 µs a character at worst, holding the GIL).
MAX_TOTAL_CHARS = 64 * 1024

_FIELDS = ("apiVersion", "kind", "current", "inProgress", "failed")
# Evaluation order (Flux RFC 0009): the first expression that is true decides.
_ORDER = (
    ("inProgress", Status.IN_PROGRESS),
    ("failed", Status.FAILED),
    ("current", Status.CURRENT),
)
_ORDER_FIELDS = tuple(field for field, _ in _ORDER)


@cache
def _env() -> Any:
    """One CEL environment with the extensions Flux enables that cel-cpp has:
    optional types (`status.?conditions.orValue([])`), strings, encoders. No
    variables are declared: expressions are parsed, not type-checked, as Flux
    does, because custom resources need not have the usual top-level fields.
    The worker (celworker.py) builds the same one."""
    return cel.NewEnv(
        extensions=[
            ext_optional.ExtOptional(),
            ext_strings.ExtStrings(),
            ext_encoders.ExtEncoders(),
        ]
    )


_STATUS_PREFIX = re.compile(r"^[A-Z_]+: ")
_STATUS_SUFFIX = re.compile(r"\s*\[[A-Z_]+\]$")
_POSITION = re.compile(r"^ERROR: <input>:(\d+:\d+: )?")


def _cel_words(error: str) -> str:
    """cel-cpp's error as one line: `1:47: Syntax error: missing ')' at '<EOF>'`.

    Its messages come as `INVALID_ARGUMENT: ERROR: <input>:1:47: …`, followed by
    the expression with a caret under the spot, and ` [INVALID_ARGUMENT]`.
    """
    body = _STATUS_SUFFIX.sub("", _STATUS_PREFIX.sub("", error.strip()))
    errors = []
    for line in body.splitlines():
        if line.startswith("ERROR: "):
            position = _POSITION.match(line)
            # cel-cpp gives position 4294967295:0 when it has none.
            where = position.group(1) if position and position.group(1) else ""
            if where.startswith("4294967295:"):
                where = ""
            errors.append(where + line[position.end() if position else len("ERROR: ") :])
    return clip("; ".join(dict.fromkeys(errors)) if errors else body)


@dataclass(frozen=True)
class Expr:
    path: str  # `healthCheckExprs[0].current`
    source: str

    def words(self, result: CelError | NotBool) -> str:
        """Why the expression gave no bool, in one line."""
        if isinstance(result, CelError):
            return _cel_words(result.text)
        return f"`{clip(self.source, 60)}` gave {result.type_name}, not a bool"


@dataclass(frozen=True)
class Check:
    """One healthCheckExprs entry, compiled."""

    index: int
    group: str
    kind: str  # "" covers every kind of the group
    exprs: tuple[tuple[Expr, Status], ...]  # in evaluation order

    def judge(self, obj: Mapping[str, Any]) -> Health:
        stale = stale_generation(obj)
        if stale is not None:
            return stale
        variables = {k: v for k, v in obj.items() if isinstance(k, str)}
        run = sandbox.pool().evaluate([expr.source for expr, _ in self.exprs], variables)
        for (expr, status), result in zip(self.exprs, run.results, strict=False):
            if result is True:
                return Health(status, f"{expr.path} is true")
            if not isinstance(result, bool):
                return Health(Status.UNKNOWN, clip(f"{expr.path}: {expr.words(result)}"))
        if run.stop is not None:
            expr = self.exprs[min(run.stop.at, len(self.exprs) - 1)][0]
            return Health(Status.UNKNOWN, clip(f"{expr.path}: {run.stop.reason}"))
        return in_progress(f"no expression of healthCheckExprs[{self.index}] is true yet")


class Exprs:
    """Compiled healthCheckExprs, by (group, kind). Build with compile_exprs."""

    def __init__(self, checks: Mapping[tuple[str, str], Check]) -> None:
        self._checks = dict(checks)

    def __len__(self) -> int:
        return len(self._checks)

    def check_for(self, obj: Mapping[str, Any]) -> Check | None:
        """The entry naming the object's kind, else its group's entry."""
        group, kind = group_kind(obj)
        return self._checks.get((group, kind)) or self._checks.get((group, ""))

    def judge(self, obj: Mapping[str, Any]) -> Health | None:
        """The object's health by its expressions; None when none covers it."""
        check = self.check_for(obj)
        return None if check is None else check.judge(obj)


def _compile(path: str, source: Any) -> Expr:
    if not isinstance(source, str) or not source.strip():
        raise ExprError(path, "must be a non-empty CEL expression")
    if len(source) > MAX_EXPR_CHARS:
        raise ExprError(path, f"longer than {MAX_EXPR_CHARS} characters")
    try:  # parsed to refuse a bad spec up front; the workers compile their own
        _env().compile(source, disable_check=True)
    except Exception as e:  # RuntimeError from the parser; anything else is as fatal
        raise ExprError(path, _cel_words(str(e))) from None
    return Expr(path, source)


def compile_exprs(entries: Sequence[Any] | None, name: str = "healthCheckExprs") -> Exprs:
    """Parse a spec's healthCheckExprs, so a bad one is refused before anything
    is applied. `name` starts each field path in errors.

    Raises ExprError naming the field (`healthCheckExprs[0].current`) and the
    parser's words.
    """
    if entries is None:
        return Exprs({})
    if not isinstance(entries, Sequence) or isinstance(entries, str | bytes):
        raise ExprError(name, "must be a list")
    if len(entries) > MAX_ENTRIES:
        raise ExprError(name, f"more than {MAX_ENTRIES} entries")
    sources = [e.get(f) for e in entries if isinstance(e, Mapping) for f in _ORDER_FIELDS]
    if sum(len(s) for s in sources if isinstance(s, str)) > MAX_TOTAL_CHARS:
        raise ExprError(name, f"more than {MAX_TOTAL_CHARS} characters of expressions in all")
    checks: dict[tuple[str, str], Check] = {}
    for i, entry in enumerate(entries):
        at = f"{name}[{i}]"
        if not isinstance(entry, Mapping):
            raise ExprError(at, "must be an object")
        unknown = sorted(str(k) for k in entry if k not in _FIELDS)
        if unknown:
            raise ExprError(at, f"unknown field {unknown[0]!r} (known: {', '.join(_FIELDS)})")
        api_version = entry.get("apiVersion")
        if not isinstance(api_version, str) or not api_version:
            raise ExprError(f"{at}.apiVersion", "required")
        kind = entry.get("kind") or ""
        if not isinstance(kind, str):
            raise ExprError(f"{at}.kind", "must be a string")
        if entry.get("current") in (None, ""):
            raise ExprError(f"{at}.current", "required")
        key = (api_version.rpartition("/")[0], kind)
        if key in checks:
            what = f"{kind or 'every kind'} in group {key[0] or 'core'}"
            raise ExprError(at, f"a second entry for {what} (first: {name}[{checks[key].index}])")
        exprs = tuple(
            (_compile(f"{at}.{field}", entry[field]), status)
            for field, status in _ORDER
            if entry.get(field) not in (None, "")  # Flux: an empty expression is no expression
        )
        checks[key] = Check(i, key[0], kind, exprs)
    return Exprs(checks)
