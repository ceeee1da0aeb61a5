"""spec.dependsOn: a sync fetches and applies only once the syncs it depends on
are Ready.

Flux's rule (kustomize-controller, "Kustomization dependencies"): a dependency
is ready when its Ready condition is True for its current generation and the
revision it last attempted is the one it applied; with `wait`, gitferry writes
Ready=True only once the objects are healthy, so "ready" includes healthy.
Flux does not look for cycles (its syncs wait for each other forever); here a
cycle is refused, naming it, because no order can satisfy it.

Pure policy over a `read(key) -> body | None` function: the caller decides how
syncs are read (the operator's own client, never a tenant's).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .api import SyncKey, SyncStatus
from .constants import READY
from .errors import DependencyCycle, DependencyNotReady, InvalidSpec

# Syncs read while looking for a cycle: bounds the work one sync's spec can cause.
MAX_WALK = 200

Reader = Callable[[SyncKey], dict[str, Any] | None]


def depends_on(body: dict[str, Any]) -> tuple[SyncKey, ...]:
    """The dependsOn keys of a raw sync body, as api.parse_spec reads them
    (a dependency naming no namespace is in the sync's own); never raises."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    raw = spec.get("dependsOn") if isinstance(spec, dict) else None
    if not isinstance(raw, list):
        return ()
    own = str(meta.get("namespace", ""))
    return tuple(
        SyncKey(str(d.get("namespace") or own), str(d["name"]))
        for d in raw
        if isinstance(d, dict) and d.get("name")
    )


def check(
    key: SyncKey,
    dependencies: tuple[SyncKey, ...],
    read: Reader,
    allow_cross_namespace: bool = True,
) -> None:
    """Return when every dependency of sync `key` is ready; raise otherwise.

    Raises InvalidSpec for a dependency in another namespace when
    `allow_cross_namespace` is False (Flux's --no-cross-namespace-refs),
    DependencyCycle naming the cycle (`a/x → a/y → a/x`), and
    DependencyNotReady naming the first dependency that is not ready and why."""
    if not dependencies:
        return
    if not allow_cross_namespace:
        foreign = [d for d in dependencies if d.namespace != key.namespace]
        if foreign:
            raise InvalidSpec(
                f"spec.dependsOn: {foreign[0]} is in another namespace, and this operator "
                "refuses cross-namespace references (GITFERRY_NO_CROSS_NAMESPACE_REFS)"
            )
    bodies: dict[SyncKey, dict[str, Any] | None] = {}

    def cached(k: SyncKey) -> dict[str, Any] | None:
        if k not in bodies:
            bodies[k] = read(k)
        return bodies[k]

    cycle = find_cycle(key, dependencies, cached)
    if cycle:
        raise DependencyCycle(
            "spec.dependsOn: dependency cycle " + " → ".join(str(k) for k in cycle)
            + "; remove one of these dependsOn entries"
        )  # fmt: skip
    for dep in dependencies:
        why = not_ready(cached(dep), detail=dep.namespace == key.namespace)
        if why:
            raise DependencyNotReady(f"dependency {dep} is not ready: {why}")


def find_cycle(
    key: SyncKey, dependencies: tuple[SyncKey, ...], read: Reader
) -> list[SyncKey] | None:
    """The shortest path `key → … → key` along dependsOn, or None. Reads at most
    MAX_WALK syncs; a graph larger than that is searched only that far."""
    # Breadth first: the cycle named is the shortest, the one a user fixes first.
    parent: dict[SyncKey, SyncKey] = {}
    frontier: list[SyncKey] = []
    for d in dict.fromkeys(dependencies):
        if d == key:
            return [key, key]
        parent[d] = key
        frontier.append(d)
    reads = 0
    while frontier:
        nxt: list[SyncKey] = []
        for node in frontier:
            if reads >= MAX_WALK:
                return None
            reads += 1
            body = read(node)
            for dep in depends_on(body) if body else ():
                if dep == key:
                    path = [node]
                    while path[-1] != key:
                        path.append(parent[path[-1]])
                    return [key, *reversed(path[:-1]), key]
                if dep not in parent:
                    parent[dep] = node
                    nxt.append(dep)
        frontier = nxt
    return None


def not_ready(body: dict[str, Any] | None, detail: bool = True) -> str | None:
    """Why a dependency (its raw body) is not ready, or None when it is.

    `detail`: quote its failure message (same namespace only: a tenant must not
    read another namespace's errors by naming its sync). A dependency that is
    still progressing is named by its reason alone, so that its progress does
    not rewrite the dependent's status at every step. A suspended dependency
    that applied a revision counts as ready, as in Flux (suspending a
    platform sync must not stop every app that needs it)."""
    if body is None:
        return "not found"
    meta = body.get("metadata") or {}
    generation = int(meta.get("generation") or 0)
    status = SyncStatus.from_dict(body.get("status"))
    ready = status.condition(READY)
    if (body.get("spec") or {}).get("suspend"):
        if status.last_applied_revision:
            return None
        return "suspended (spec.suspend is true) before it applied anything"
    if status.observed_generation != generation or ready is None:
        return f"generation {generation} has not been reconciled yet"
    if ready.status == "Unknown":
        return f"{ready.reason or 'Progressing'}"
    if ready.status != "True":
        return f"{ready.reason}: {_first_line(ready.message)}" if detail else ready.reason
    if (
        status.last_attempted_revision
        and status.last_applied_revision != status.last_attempted_revision
    ):
        return f"revision {status.last_attempted_revision} is not applied yet"
    return None


def _first_line(message: str, limit: int = 300) -> str:
    line = message.splitlines()[0] if message else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"
