"""Prometheus sees what the operator does: /metrics shows a sync's reconciles timed,
its Ready state as it becomes Ready, fails and recovers, the objects it applied, the
git requests it made; a deleted sync leaves no series; /readyz answers 200 once the
operator started, and the port closes when it stops."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.cluster_fixtures import Operator, wait_for
from tests.harness.git_fixtures import RepoFactory
from tests.harness.manifests import config_map
from tests.harness.syncs import create_sync, request_reconcile, wait_condition

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_url(op: Operator) -> str:
    """Where this operator listens: the harness asks for any free loopback port, and
    the start line names the one it got."""
    found = re.findall(r"action=start .*metrics_addr=(\S+)", op.log())
    assert found, f"no metrics_addr in the start line:\n{op.log()[-2000:]}"
    return f"http://{found[-1]}"


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(op: Operator) -> Samples:
    """Every sample of /metrics, parsed as Prometheus parses the text format."""
    status, text = get(metrics_url(op) + "/metrics")
    assert status == 200, text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, metric: str, **labels: str) -> float | None:
    return samples.get((metric, frozenset(labels.items())))


def test_metrics_follow_a_sync_from_created_to_deleted(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    base = metrics_url(operator)
    assert wait_for("/readyz to answer 200", lambda: get(base + "/readyz")[0] == 200, 30)
    sync = {"namespace": namespace, "name": "web"}
    timed = {"kind": "GitRepositorySync", **sync}

    before = scrape(operator)
    assert sample(before, "gitferry_sync_ready", **sync) is None
    assert sample(before, "gotk_reconcile_duration_seconds_count", **timed) is None
    assert sample(before, "gitferry_reconcile_threads") == 4  # the default concurrency
    created_before = sample(before, "gitferry_objects_total", action="created") or 0

    repo = repo_factory("metrics")
    sha = repo.commit({"a.yaml": config_map("a"), "b.yaml": config_map("b")}, "two objects")
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, interval="1h")
    wait_condition(cluster, "web", namespace, revision_sha=sha)

    ready = scrape(operator)
    assert sample(ready, "gitferry_sync_ready", **sync) == 1
    assert sample(ready, "gitferry_sync_suspended", **sync) == 0
    assert (sample(ready, "gotk_reconcile_duration_seconds_count", **timed) or 0) >= 1
    assert (sample(ready, "gitferry_objects_total", action="created") or 0) >= created_before + 2
    assert (sample(ready, "gitferry_reconcile_total", result="success",
                   reason="ReconciliationSucceeded") or 0) >= 1  # fmt: skip
    assert (sample(ready, "gitferry_git_requests_total", operation="ls-remote",
                   outcome="ok") or 0) >= 1  # fmt: skip
    assert sample(ready, "gitferry_syncs") == 1
    # The drift watches: one per kind applied, holding the applied objects.
    assert (sample(ready, "gitferry_watches") or 0) >= 1
    assert (sample(ready, "gitferry_watched_objects") or 0) >= 1
    assert (sample(ready, "gitferry_watch_cache_bytes") or 0) > 0

    # A commit that does not render: the state gauge drops to 0, the failure is counted.
    repo.commit({"a.yaml": "data: [unclosed\n"}, "broken")
    repo.push()
    request_reconcile(cluster, "web", namespace)
    wait_condition(cluster, "web", namespace, status="False", reason="RenderFailed")
    failed = scrape(operator)
    assert sample(failed, "gitferry_sync_ready", **sync) == 0
    assert (sample(failed, "gitferry_reconcile_total", result="failure",
                   reason="RenderFailed") or 0) >= 1  # fmt: skip
    assert sample(failed, "gotk_reconcile_duration_seconds_count", **timed) > sample(  # type: ignore[operator]
        ready, "gotk_reconcile_duration_seconds_count", **timed
    )

    # Fixed: Ready again.
    fixed = repo.commit({"a.yaml": config_map("a", "2")}, "fixed")
    repo.push()
    wait_condition(cluster, "web", namespace, revision_sha=fixed)
    wait_for(
        "gitferry_sync_ready back to 1",
        lambda: sample(scrape(operator), "gitferry_sync_ready", **sync) == 1,
        10,
    )

    # Deleted: its series go with it (and its objects were counted as deleted).
    deleted_before = sample(scrape(operator), "gitferry_objects_total", action="deleted") or 0
    cluster.kubectl("delete", "grs", "web", "-n", namespace, "--wait=true", "--timeout=60s")
    gone = scrape(operator)
    per_sync = [(name, dict(labels)) for name, labels in gone if ("name", "web") in labels]
    assert per_sync == [], per_sync
    assert (sample(gone, "gitferry_objects_total", action="deleted") or 0) >= deleted_before + 2

    # Stopped: the port closes with the process.
    operator.stop()
    with pytest.raises(OSError):  # connection refused
        status, _ = get(base + "/readyz")
        raise AssertionError(f"/readyz still answered {status} after the operator stopped")
