"""Fifty syncs of one repository share one mirror: the git server is asked for the
branch at most once per interval, and a new commit is downloaded once."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest

from tests.harness.cluster_fixtures import Cluster, Operator, wait_for
from tests.harness.git_fixtures import RepoFactory
from tests.harness.gitserver import HttpGitServer
from tests.harness.manifests import config_map
from tests.harness.syncs import condition, create_git_auth_secret, sync_manifest, wait_condition

pytestmark = pytest.mark.e2e

SYNCS = 50
INTERVAL = 20.0


def ready_at(cluster: Cluster, namespace: str, sha: str) -> list[str]:
    """Names of the syncs that are Ready with `sha` applied."""
    items: list[dict[str, Any]] = json.loads(
        cluster.kubectl("get", "grs", "-n", namespace, "-o", "json").stdout
    )["items"]
    ready = []
    for s in items:
        c = condition(s, "Ready")
        if (
            c is not None
            and c["status"] == "True"
            and c.get("observedGeneration") == s["metadata"]["generation"]
            and str(s["status"].get("lastAppliedRevision", "")).endswith(sha)
        ):
            ready.append(s["metadata"]["name"])
    return ready


def test_fifty_syncs_of_one_branch_ask_once_per_interval_and_fetch_once(
    operator: Operator,
    namespace: str,
    repo_factory: RepoFactory,
    http_git_server: HttpGitServer,
) -> None:
    cluster = operator.cluster
    repo = repo_factory("monorepo")
    names = [f"app-{i:02d}" for i in range(SYNCS)]
    sha = repo.commit({f"apps/{n}/cm.yaml": config_map(n, "1") for n in names}, "first")
    repo.push()
    create_git_auth_secret(cluster, namespace, http_git_server)
    url = http_git_server.url_for(repo.bare)
    syncs = [
        sync_manifest(
            n,
            namespace,
            url,
            path=f"apps/{n}",
            interval=f"{INTERVAL:.0f}s",
            secretRef={"name": "git-auth"},
        )  # fmt: skip
        for n in names
    ]
    cluster.apply("\n---\n".join(json.dumps(doc) for doc in syncs))
    wait_for(
        f"all {SYNCS} syncs Ready",
        lambda: len(ready_at(cluster, namespace, sha)) == SYNCS,
        timeout=240,
        interval=2,
    )

    # A quiet branch: at most one ref listing per interval, nothing downloaded.
    log = http_git_server.log
    log.clear()
    cleared = time.monotonic()
    time.sleep(INTERVAL + 5)
    asked, fetched = log.count("ls-refs"), log.count("fetch")
    intervals = math.ceil((time.monotonic() - cleared) / INTERVAL)
    assert asked <= intervals + 1, f"{asked} ref listings in {intervals} interval(s)"
    assert fetched == 0

    # A commit that changes one app: that sync applies it, with one download for all.
    sha2 = repo.commit({"apps/app-07/cm.yaml": config_map("app-07", "2")}, "bump app-07")
    repo.push()
    wait_condition(cluster, "app-07", namespace, revision_sha=sha2, timeout=INTERVAL * 3)
    assert cluster.get("configmap", "app-07", namespace)["data"]["v"] == "2"  # type: ignore[index]
    assert log.count("fetch") == 1
    wait_for(
        f"all {SYNCS} syncs at the new commit",
        lambda: len(ready_at(cluster, namespace, sha2)) == SYNCS,
        timeout=INTERVAL * 3,
        interval=2,
    )
    assert log.count("fetch") == 1
    assert cluster.get("configmap", "app-08", namespace)["data"]["v"] == "1"  # type: ignore[index]
