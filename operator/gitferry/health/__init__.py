"""Health: is this Kubernetes object done, still going, or stuck?

Judges objects given as plain dicts, as the API server returns them, with
kstatus's statuses (sigs.k8s.io/cli-utils pkg/kstatus/status). No Kubernetes
client: the caller GETs the objects (and LISTs a workload's Pods with
`pod_selector`). Pure functions, but for healthCheckExprs, which are evaluated
in worker processes bounded in memory and time (`configure` sets the limits,
`close` ends the workers at the operator's stop).

A library: it knows nothing of GitRepositorySync and raises one plain error,
`ExprError`, for healthCheckExprs that do not compile; judging never raises.
Its seams, a module each: `status` (Status, Health, careful field readers),
`kinds` (the table of rules per kind, and the generic rule), `pods` (a
workload's Pods), `exprs` (healthCheckExprs in CEL), `sandbox` (the worker
processes that evaluate them) and `celworker` (the worker itself), `errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import kinds
from .errors import ExprError
from .exprs import MAX_ENTRIES, MAX_EXPR_CHARS, MAX_TOTAL_CHARS, Exprs, compile_exprs
from .kinds import RULES
from .pods import WORKLOAD_KINDS, pod_selector, with_pods
from .sandbox import CelLimits, close, configure
from .status import Health, Status

__all__ = [
    "MAX_ENTRIES",
    "MAX_EXPR_CHARS",
    "MAX_TOTAL_CHARS",
    "RULES",
    "WORKLOAD_KINDS",
    "CelLimits",
    "ExprError",
    "Exprs",
    "Health",
    "Status",
    "assess",
    "close",
    "compile_exprs",
    "configure",
    "pod_selector",
    "with_pods",
]


def assess(obj: Mapping[str, Any], exprs: Exprs | None = None) -> Health:
    """The health of one object: the user's healthCheckExprs for the kinds they
    name, else the row of RULES for its kind, else the generic rule (deleting →
    Terminating; spec not yet observed, Reconciling → InProgress; Stalled →
    Failed; the Ready condition; no conditions → Current).

    Never raises; never returns NotFound (the caller's GET knows that).
    """
    if exprs is not None:
        judged = exprs.judge(obj)
        if judged is not None:
            return judged
    return kinds.judge(obj)
