"""The cluster: API calls, discovery, object references, kind policy and the
server-side apply engine.

A library: it knows nothing of GitRepositorySync and raises plain errors
(`KubeError`, `ApplyError`, `DeadlineExceeded`). Modules: `client` (one
connection pool, impersonation per request), `discovery`, `refs` (ObjRef),
`kinds` (apply order and recreate policy as data), `apply` (the engine: objects
in, a ChangeSet out).
"""

from __future__ import annotations

from .apply import Action, Change, ChangeSet, Engine, Item, Options
from .client import APPLY_PATCH, MERGE_PATCH, Kube, load_configuration
from .discovery import Discovery, Resource
from .errors import ApplyError, KubeError
from .refs import ObjRef, split_api_version

__all__ = [
    "APPLY_PATCH",
    "MERGE_PATCH",
    "Action",
    "ApplyError",
    "Change",
    "ChangeSet",
    "Discovery",
    "Engine",
    "Item",
    "Kube",
    "KubeError",
    "ObjRef",
    "Options",
    "Resource",
    "load_configuration",
    "split_api_version",
]
