"""Plain YAML scalars resolved as kubectl resolves them.

kubectl reads manifests with sigs.k8s.io/yaml, whose parser is a fork of
go-yaml v2 (`resolve.go`), not PyYAML's YAML 1.1 tables. The differences that
change an object: PyYAML reads `1:30:00` as the base-60 integer 5400 and
`1e3` as a string; go-yaml keeps `1:30:00` a string and reads `1e3` as the
float 1000. Timestamps stay strings in both (go-yaml v2 keeps them strings
when decoding into interface{}, for backward compatibility). The rules below
are go-yaml v2's; tests/e2e/test_yaml_scalars.py compares them with
`kubectl create --dry-run=client -o json` on the same file.
"""

from __future__ import annotations

import math
import re

STR = "tag:yaml.org,2002:str"
BOOL = "tag:yaml.org,2002:bool"
NULL = "tag:yaml.org,2002:null"
INT = "tag:yaml.org,2002:int"
FLOAT = "tag:yaml.org,2002:float"
MERGE = "tag:yaml.org,2002:merge"

# go-yaml v2 resolveMapList.
_SPECIAL: dict[str, tuple[str, object]] = {}
for _words, _tag, _value in (
    ("y Y yes Yes YES true True TRUE on On ON", BOOL, True),
    ("n N no No NO false False FALSE off Off OFF", BOOL, False),
    ("~ null Null NULL", NULL, None),
    (".nan .NaN .NAN", FLOAT, math.nan),
    (".inf .Inf .INF +.inf +.Inf +.INF", FLOAT, math.inf),
    ("-.inf -.Inf -.INF", FLOAT, -math.inf),
    ("<<", MERGE, None),
):
    for _word in _words.split():
        _SPECIAL[_word] = (_tag, _value)
_SPECIAL[""] = (NULL, None)

# go-yaml v2's yamlStyleFloat.
_FLOAT_RE = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_INT64 = 1 << 63
_UINT64 = 1 << 64


def _go_int(text: str) -> int | None:
    """strconv.ParseInt(text, 0, 64), then ParseUint: Go's base prefixes 0x, 0o,
    0b, a leading 0 for octal; None when it is no integer or out of range."""
    sign = 1
    body = text
    if body[:1] in "+-":
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    if not body:
        return None
    lowered = body.lower()
    base = 10
    if lowered.startswith(("0x", "0o", "0b")):
        base = {"x": 16, "o": 8, "b": 2}[lowered[1]]
        digits = body[2:]
    elif len(body) > 1 and body[0] == "0":
        base, digits = 8, body[1:]
    else:
        digits = body
    allowed = "0123456789abcdef"[:base]
    if not digits or not all(c in allowed for c in digits.lower()):
        return None
    value = sign * int(digits, base)
    if -_INT64 <= value < _UINT64 and not (sign < 0 and value < -_INT64):
        return value
    return None


def resolve_plain(value: str) -> str:
    """The tag go-yaml v2 gives a plain (unquoted) scalar."""
    special = _SPECIAL.get(value)
    if special is not None:
        return special[0]
    if value[:1] in "+-.0123456789":
        plain = value.replace("_", "")
        if _go_int(plain) is not None:
            return INT
        # A float that overflows float64 stays text in go-yaml (ParseFloat's
        # ErrRange): "1e400" is a string for kubectl, not infinity.
        if _FLOAT_RE.match(plain) and math.isfinite(float(plain)):
            return FLOAT
    return STR


def construct(tag: str, value: str) -> object:
    """The value of a plain scalar that `resolve_plain` tagged `tag`."""
    if tag in (BOOL, NULL):
        if value not in _SPECIAL:
            raise ValueError(f"{value!r} is not a {tag.rsplit(':', 1)[1]}")
        return _SPECIAL[value][1]
    plain = value.replace("_", "")
    if tag == INT:
        number = _go_int(plain)
        if number is None:
            raise ValueError(f"{value!r} is not an integer")
        return number
    if tag == FLOAT:
        if value in _SPECIAL:
            return _SPECIAL[value][1]
        return float(plain)  # ValueError when it is no number
    return value
