"""ApplySet (KEP-3659, as kubectl implements it): the sync is the parent.

`kubectl get <kind> -l applyset.kubernetes.io/part-of=<id>` then lists what a sync
owns, and kubectl's own `--applyset` refuses to take over a set that another
tool manages.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable

from . import __version__
from .constants import GROUP, KIND
from .kube import ObjRef

LABEL_ID = "applyset.kubernetes.io/id"
LABEL_PART_OF = "applyset.kubernetes.io/part-of"
ANNOTATION_TOOLING = "applyset.kubernetes.io/tooling"
ANNOTATION_GROUP_KINDS = "applyset.kubernetes.io/contains-group-kinds"
ANNOTATION_NAMESPACES = "applyset.kubernetes.io/additional-namespaces"
TOOLING = f"gitferry/v{__version__}"


def applyset_id(name: str, namespace: str) -> str:
    """kubectl's formula: applyset-<base64url(sha256(name.namespace.Kind.group))>-v1."""
    digest = hashlib.sha256(f"{name}.{namespace}.{KIND}.{GROUP}".encode()).digest()
    return f"applyset-{base64.urlsafe_b64encode(digest).decode().rstrip('=')}-v1"


def group_kinds(refs: Iterable[ObjRef]) -> str:
    """`Kind.group` per member (core kinds bare), sorted, comma-separated."""
    return ",".join(sorted({f"{r.kind}.{r.group}" if r.group else r.kind for r in refs}))


def additional_namespaces(refs: Iterable[ObjRef], parent_namespace: str) -> str:
    return ",".join(
        sorted({r.namespace for r in refs if r.namespace and r.namespace != parent_namespace})
    )


def parse_group_kinds(text: str | None) -> frozenset[tuple[str, str]]:
    """(group, kind) pairs from a contains-group-kinds annotation (`Kind.group`,
    core kinds bare); empty for a missing or empty annotation."""
    pairs = set()
    for item in (text or "").split(","):
        item = item.strip()
        if item:
            kind, _, group = item.partition(".")
            pairs.add((group, kind))
    return frozenset(pairs)


def parse_namespaces(text: str | None) -> frozenset[str]:
    """Namespaces from an additional-namespaces annotation; empty when missing."""
    return frozenset(n.strip() for n in (text or "").split(",") if n.strip())


def parent_metadata(name: str, namespace: str, refs: Iterable[ObjRef]) -> dict[str, dict[str, str]]:
    """Labels and annotations the parent carries for this set of members."""
    refs = list(refs)
    return {
        "labels": {LABEL_ID: applyset_id(name, namespace)},
        "annotations": {
            ANNOTATION_TOOLING: TOOLING,
            ANNOTATION_GROUP_KINDS: group_kinds(refs),
            ANNOTATION_NAMESPACES: additional_namespaces(refs, namespace),
        },
    }
