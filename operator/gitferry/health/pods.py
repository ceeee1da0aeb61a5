"""A workload and its Pods: why a rollout waits, and when it never will.

A Deployment whose only Pod crash-loops reports `0 of 1 replicas ready` for as
long as anyone waits; its Pod says why. The caller LISTs the Pods with
`pod_selector(workload)` and folds them in with `with_pods`, so the wait ends
early with the Pod's reason, or its timeout names the Pod that held it up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .kinds import group_kind, pod
from .status import Health, Status, failed, field, in_progress, text

WORKLOAD_KINDS = frozenset(
    {
        ("apps", "Deployment"),
        ("apps", "StatefulSet"),
        ("apps", "DaemonSet"),
        ("apps", "ReplicaSet"),
        ("batch", "Job"),
    }
)

# Label keys (with an optional DNS prefix) and values as the API server accepts
# them; anything else could not be written into a selector string unambiguously.
_LABEL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?")
_OPERATORS = {"In": "in", "NotIn": "notin"}


def _label(word: Any) -> str | None:
    return word if isinstance(word, str) and _LABEL.fullmatch(word) else None


def pod_selector(obj: Mapping[str, Any]) -> str | None:
    """The label selector of a workload's Pods, as kubectl writes one:
    `app=web,tier in (back,front),!canary`, requirements in key order.

    None for anything but a workload (WORKLOAD_KINDS), and for a selector that
    is empty (it would select every Pod of the namespace) or that cannot be
    written safely; the caller then judges the workload without its Pods.
    """
    if group_kind(obj) not in WORKLOAD_KINDS:
        return None
    selector = field(obj, "spec", "selector")
    if not isinstance(selector, Mapping):
        return None
    parts: list[tuple[str, str]] = []
    labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not isinstance(labels, Mapping) or not isinstance(expressions, list):
        return None
    for key, value in labels.items():
        if _label(key) is None or (value != "" and _label(value) is None):
            return None
        parts.append((key, f"{key}={value}"))
    for expr in expressions:
        if not isinstance(expr, Mapping) or _label(expr.get("key")) is None:
            return None
        key, operator, values = expr["key"], expr.get("operator"), expr.get("values") or []
        if not isinstance(values, list) or any(_label(v) is None for v in values):
            return None
        if operator in _OPERATORS and values:
            parts.append((key, f"{key} {_OPERATORS[operator]} ({','.join(sorted(values))})"))
        elif operator == "Exists" and not values:
            parts.append((key, key))
        elif operator == "DoesNotExist" and not values:
            parts.append((key, f"!{key}"))
        else:
            return None
    if not parts:
        return None
    return ",".join(part for _, part in sorted(parts))


def with_pods(health: Health, pods: Iterable[Mapping[str, Any]]) -> Health:
    """`health` of a workload, with its Pods' health folded in.

    Only an InProgress workload changes: a Pod that is Failed (a container in
    CrashLoopBackOff, an image that cannot be pulled…) makes it Failed with
    `pod <name>: container <name> <Reason>: <message>`; otherwise its message
    gains the first waiting Pod's reason (`0 of 1 replicas ready; pod web-5d9…:
    container web ContainerCreating`). Pods are taken in name order.

    Pods being deleted are skipped, and so are Pods that have finished
    (Succeeded or Failed): a ReplicaSet replaces an evicted Pod, which lingers
    in phase Failed, and a Job counts a failed Pod against its backoffLimit and
    says Failed itself when that is spent.
    """
    if health.status is not Status.IN_PROGRESS:
        return health
    waiting = ""
    for p in sorted(pods, key=lambda p: text(p, "metadata", "name")):
        if text(p, "metadata", "deletionTimestamp"):
            continue
        if text(p, "status", "phase") in ("Succeeded", "Failed"):
            continue
        judged = pod(p)
        name = text(p, "metadata", "name")
        if judged.is_failed:
            return failed(f"pod {name}: {judged.message}")
        if judged.status is Status.IN_PROGRESS and not waiting:
            waiting = f"pod {name}: {judged.message}"
    if waiting:
        return in_progress(f"{health.message}; {waiting}" if health.message else waiting)
    return health
