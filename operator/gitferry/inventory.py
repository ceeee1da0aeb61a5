"""Inventory math: which objects a sync owns, as `status.inventory.entries`.

Plain data in, plain data out. The inventory grows to old ∪ new before anything
is written and shrinks only after a successful prune, so a crash at any moment
never leaves an object gitferry labelled outside of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .api import InventoryEntry
from .kube import ObjRef
from .kube.kinds import apply_rank


def entry(obj: dict[str, Any]) -> InventoryEntry:
    return InventoryEntry(id=ObjRef.of(obj).id, v=obj.get("apiVersion", "").rpartition("/")[2])


def union(
    old: Iterable[InventoryEntry], new: Iterable[InventoryEntry]
) -> tuple[InventoryEntry, ...]:
    """old ∪ new by id; the new version wins; sorted for a stable status."""
    by_id = {e.id: e for e in old}
    by_id.update({e.id: e for e in new})
    return tuple(sorted(by_id.values(), key=lambda e: e.id))


def stale(old: Iterable[InventoryEntry], new: Iterable[InventoryEntry]) -> list[InventoryEntry]:
    """What the previous inventory held and the new render does not, in prune
    order: the reverse of apply order (custom resources before their CRD,
    namespaced objects before their Namespace)."""
    keep = {e.id for e in new}
    gone = [e for e in old if e.id not in keep]

    def order(e: InventoryEntry) -> tuple[int, int, str]:
        ref = ObjRef.from_id(e.id)
        cluster_scoped_container = ref.kind in ("Namespace", "CustomResourceDefinition")
        return (1 if cluster_scoped_container else 0, -apply_rank(ref.kind), e.id)

    return sorted(gone, key=order)
