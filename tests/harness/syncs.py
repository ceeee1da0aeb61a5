"""Helpers that read like the user's story: create a sync and its Secret, wait for
Ready, read what the cluster says about it (labels, inventory, Events)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from typing import Any

from tests.harness.cluster_fixtures import Cluster, wait_for
from tests.harness.gitserver import HttpGitServer
from tests.harness.pki import CA

# A short interval keeps drift tests quick; tests that need "not before the
# interval" set their own.
FAST = "5s"

# The labels gitferry puts on every object it applies.
SYNC_NAME = "gitferry.dev/sync-name"
SYNC_NAMESPACE = "gitferry.dev/sync-namespace"
PART_OF = "applyset.kubernetes.io/part-of"
GITFERRY_LABELS = (SYNC_NAME, SYNC_NAMESPACE, PART_OF)


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


def request_reconcile(cluster: Cluster, name: str, namespace: str) -> str:
    """What a user does to skip the interval: set `gitferry.dev/requested-at`; returns
    the value, which the sync echoes in status.lastHandledReconcileAt."""
    value = secrets.token_hex(8)
    cluster.kubectl(
        "annotate", "grs", name, "-n", namespace,
        f"gitferry.dev/requested-at={value}", "--overwrite",
    )  # fmt: skip
    return value


def put_secret(
    cluster: Cluster, namespace: str, data: dict[str, str], name: str = "git-auth"
) -> None:
    """Create or replace the Secret. Server-side apply through stdin: the values are on
    no command line and in no last-applied annotation; keys left out are removed."""
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }
    cluster.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=test", "-f", "-",
        input=json.dumps(secret),
    )  # fmt: skip


def create_git_auth_secret(
    cluster: Cluster,
    namespace: str,
    server: HttpGitServer,
    name: str = "git-auth",
    ca: CA | None = None,
) -> None:
    """The Secret for a sync's secretRef: `server`'s basic-auth credentials, and the
    `ca` that signed its certificate when given."""
    assert server.username is not None and server.password is not None
    data = {"username": server.username, "password": server.password}
    if ca is not None:
        data["ca.crt"] = ca.cert.read_text()
    put_secret(cluster, namespace, data, name)


def applyset_id(name: str, namespace: str) -> str:
    """kubectl's ApplySet id for the sync `namespace/name` (KEP-3659)."""
    digest = hashlib.sha256(f"{name}.{namespace}.GitRepositorySync.gitferry.dev".encode()).digest()
    return "applyset-" + base64.urlsafe_b64encode(digest).decode().rstrip("=") + "-v1"


def inventory_ids(sync: dict[str, Any] | None) -> set[str]:
    inv = ((sync or {}).get("status") or {}).get("inventory") or {}
    return {e["id"] for e in inv.get("entries") or []}


def labels_of(obj: dict[str, Any] | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("labels") or {}


def annotations_of(obj: dict[str, Any] | None) -> dict[str, str]:
    return ((obj or {}).get("metadata") or {}).get("annotations") or {}


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


def wait_event(
    cluster: Cluster, sync: str, namespace: str, pattern: str, type_: str | None = None
) -> dict[str, Any]:
    """The first Event on the sync (of `type_`, when given) whose message matches
    `pattern` (a regex)."""

    def find() -> dict[str, Any] | None:
        for e in events_for(cluster, sync, namespace):
            if (type_ is None or e["type"] == type_) and re.search(pattern, e["message"]):
                return e
        return None

    what = f"{'a ' + type_ if type_ else 'an'} Event on grs/{sync} matching {pattern!r}"
    try:
        return wait_for(what, find, 60)  # type: ignore[no-any-return]
    except AssertionError as e:
        seen = [
            (x["type"], x["reason"], x["message"]) for x in events_for(cluster, sync, namespace)
        ]
        raise AssertionError(f"{e}\nevents: {json.dumps(seen, indent=1)}") from None
