"""Health: is this Kubernetes object done, still going, or stuck?

Judges objects given as plain dicts, as the API server returns them, with
kstatus's statuses (sigs.k8s.io/cli-utils pkg/kstatus/status). Pure functions:
no I/O, no Kubernetes client; the caller GETs the objects (and LISTs a
workload's Pods with `pod_selector`).

A library: it knows nothing of GitRepositorySync; judging never raises.
Its seams, a module each: `status` (Status, Health, careful field readers),
`kinds` (the table of rules per kind, and the generic rule), `pods` (a
workload's Pods).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import kinds
from .kinds import RULES
from .pods import WORKLOAD_KINDS, pod_selector, with_pods
from .status import Health, Status

__all__ = [
    "RULES",
    "WORKLOAD_KINDS",
    "Health",
    "Status",
    "assess",
    "pod_selector",
    "with_pods",
]


def assess(obj: Mapping[str, Any]) -> Health:
    """The health of one object: the row of RULES for its kind, else the generic
    rule (deleting → Terminating; spec not yet observed, Reconciling →
    InProgress; Stalled → Failed; the Ready condition; no conditions → Current).

    Never raises; never returns NotFound (the caller's GET knows that).
    """
    return kinds.judge(obj)
