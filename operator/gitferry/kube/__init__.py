"""The cluster: API calls, discovery, object references, kind policy and the
server-side apply engine.

A library: it knows nothing of GitRepositorySync and raises plain errors
(`KubeError`, `ApplyError`, `DeadlineExceeded`). Modules: `client` (one
connection pool, impersonation per request), `discovery`, `refs` (ObjRef),
`kinds` (apply order and recreate policy as data), `apply` (the engine: objects
in, a ChangeSet out), `managedfields` (field ownership: taking it over, reading
it), `watch` (a metadata-only cache of labelled objects, fed by watches).
"""

from __future__ import annotations

from .apply import Action, Change, ChangeSet, Engine, Item, Options
from .client import APPLY_PATCH, MERGE_PATCH, Kube, load_configuration
from .discovery import Discovery, Resource
from .errors import ApplyError, KubeError
from .managedfields import field_paths, owners
from .refs import ObjRef, split_api_version
from .watch import Meta, Watcher, WatchEvent, WatchOptions, WatchStats

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
    "Meta",
    "ObjRef",
    "Options",
    "Resource",
    "WatchEvent",
    "WatchOptions",
    "WatchStats",
    "Watcher",
    "field_paths",
    "load_configuration",
    "owners",
    "split_api_version",
]
