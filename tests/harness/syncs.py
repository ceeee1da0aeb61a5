"""Helpers that read like the user's story: create a sync, wait for Ready."""

from __future__ import annotations

import json
from typing import Any

from tests.harness.cluster_fixtures import Cluster, wait_for

# A short interval keeps drift tests quick; tests that need "not before the
# interval" set their own.
FAST = "5s"


def sync_manifest(name: str, namespace: str, url: str, **spec: Any) -> dict[str, Any]:
    spec.setdefault("interval", FAST)
    spec.setdefault("retryInterval", "2s")
    return {
        "apiVersion": "gitferry.dev/v1alpha1",
        "kind": "GitRepositorySync",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"url": url, **spec},
    }


def create_sync(cluster: Cluster, name: str, namespace: str, url: str, **spec: Any) -> None:
    cluster.apply(sync_manifest(name, namespace, url, **spec))


def patch_sync(cluster: Cluster, name: str, namespace: str, patch: dict[str, Any]) -> None:
    cluster.kubectl("patch", "grs", name, "-n", namespace, "--type=merge", "-p", json.dumps(patch))


def condition(sync: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((sync or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return c  # type: ignore[no-any-return]
    return None


def wait_condition(
    cluster: Cluster,
    name: str,
    namespace: str,
    type_: str = "Ready",
    status: str = "True",
    reason: str | None = None,
    revision_sha: str | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    """The sync once its condition matches (and lastAppliedRevision ends in the sha)."""

    def check() -> dict[str, Any] | None:
        s = cluster.get("grs", name, namespace)
        c = condition(s, type_)
        if not s or not c or c.get("status") != status:
            return None
        if reason and c.get("reason") != reason:
            return None
        if c.get("observedGeneration") != s["metadata"]["generation"]:
            return None
        if revision_sha and not str(s["status"].get("lastAppliedRevision", "")).endswith(
            revision_sha
        ):
            return None
        return s

    what = f"{type_}={status}{' ' + reason if reason else ''} on grs/{name}"
    try:
        return wait_for(what, check, timeout)  # type: ignore[no-any-return]
    except AssertionError as e:
        s = cluster.get("grs", name, namespace)
        raise AssertionError(
            f"{e}\nstatus: {json.dumps((s or {}).get('status'), indent=1)}"
        ) from None


def events_for(cluster: Cluster, name: str, namespace: str) -> list[dict[str, Any]]:
    out = cluster.kubectl(
        "get", "events", "-n", namespace, "-o", "json",
        "--field-selector", f"involvedObject.name={name},involvedObject.kind=GitRepositorySync",
    ).stdout  # fmt: skip
    return json.loads(out)["items"]  # type: ignore[no-any-return]
