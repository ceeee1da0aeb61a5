"""Metrics: what /metrics says after syncs apply, fail, recover, drift, wait and
are deleted — driven through the real pipeline on the in-memory API and a real
git repository on disk — and the server that exposes them beside /readyz."""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from gitferry.api import SyncKey, sync_path
from gitferry.constants import KIND, Reason
from gitferry.context import Context
from gitferry.events import EventRecorder
from gitferry.finalizer import finalize
from gitferry.kube import MERGE_PATCH, Discovery
from gitferry.metrics import Metrics, MetricsServer, listen, parse_addr
from gitferry.reconcile import WAITING_REASON, reconcile
from gitferry.scheduler import Scheduler
from gitferry.settings import Settings, SettingsError
from gitferry.source import GitSource, SourceBusy, SourceSettings
from gitferry.status import StatusWriter
from tests.harness.gitrepo import WorkRepo, make_repo
from tests.unit.fakeapi import FakeKube, manifest

WEB = SyncKey("apps", "web")
API = "gitferry.dev/v1alpha1"


def config_map(name: str, value: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  v: '{value}'\n"


@pytest.fixture
def repo(tmp_path: Path) -> WorkRepo:
    repo = make_repo(tmp_path / "git", "app")
    repo.commit({"cm.yaml": config_map("c", "1")}, "first")
    repo.push()
    return repo


@pytest.fixture
def fake() -> FakeKube:
    return FakeKube(namespaces=("default", "apps"))


@pytest.fixture
def ctx(fake: FakeKube, tmp_path: Path) -> Iterator[Context]:
    discovery = Discovery(fake.kube)
    discovery.refresh()
    metrics = Metrics()
    source = GitSource(
        SourceSettings(cache_dir=tmp_path / "cache", allow_file_urls=True),
        observer=metrics.git_request,
    )
    yield Context(
        kube=fake.kube,
        discovery=discovery,
        source=source,
        settings=Settings(cache_dir=tmp_path / "cache", allow_file_urls=True),
        status=StatusWriter(fake.kube),
        events=EventRecorder(fake.kube),
        metrics=metrics,
    )
    source.close()


def create_sync(fake: FakeKube, key: SyncKey, url: str, **spec: Any) -> None:
    fake.seed(
        manifest(
            API,
            KIND,
            key.name,
            key.namespace,
            finalizers=["gitferry.dev/finalizer"],
            spec={"url": url, "interval": "1h", **spec},
        )
    )


def patch_sync(fake: FakeKube, key: SyncKey, patch: dict[str, Any]) -> None:
    fake.kube.request("PATCH", sync_path(key), body=patch, content_type=MERGE_PATCH)


def request_reconcile(fake: FakeKube, key: SyncKey) -> None:
    """What `gitferry.dev/requested-at` does: the next reconcile asks git afresh."""
    stamp = secrets.token_hex(4)
    patch_sync(fake, key, {"metadata": {"annotations": {"gitferry.dev/requested-at": stamp}}})


def value(ctx: Context, metric: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist."""
    return ctx.metrics.registry.get_sample_value(metric, labels) or 0.0


def sync_value(ctx: Context, name: str, key: SyncKey = WEB) -> float | None:
    return ctx.metrics.registry.get_sample_value(
        name, {"namespace": key.namespace, "name": key.name}
    )


def reconciles(ctx: Context, key: SyncKey = WEB) -> float:
    """How many reconciles of the sync the duration histogram saw."""
    labels = {"kind": KIND, "name": key.name, "namespace": key.namespace}
    return (
        ctx.metrics.registry.get_sample_value("gotk_reconcile_duration_seconds_count", labels) or 0
    )


def series(registry: CollectorRegistry) -> list[tuple[str, dict[str, str]]]:
    return [
        (sample.name, dict(sample.labels))
        for family in registry.collect()
        for sample in family.samples
    ]


# --- a sync's story, as the metrics tell it ---------------------------------------------------
def test_a_sync_that_applies_fails_and_recovers(
    ctx: Context, fake: FakeKube, repo: WorkRepo
) -> None:
    create_sync(fake, WEB, repo.bare.file_url)
    assert sync_value(ctx, "gitferry_sync_ready") is None  # nothing before its first reconcile

    assert reconcile(ctx, WEB).ok
    assert reconciles(ctx) == 1
    assert value(ctx, "gitferry_reconcile_total", result="success", reason=Reason.SUCCEEDED) == 1
    assert sync_value(ctx, "gitferry_sync_ready") == 1
    assert sync_value(ctx, "gitferry_sync_suspended") == 0
    assert value(ctx, "gitferry_objects_total", action="created") == 1
    assert value(ctx, "gitferry_git_requests_total", operation="ls-remote", outcome="ok") == 1
    assert value(ctx, "gitferry_git_requests_total", operation="fetch", outcome="ok") == 1
    assert value(ctx, "gitferry_git_request_duration_seconds_count",
                 operation="fetch", outcome="ok") == 1  # fmt: skip

    # A commit that does not render: Ready goes to 0, the failure is counted by reason.
    repo.commit({"cm.yaml": "data: [unclosed\n"}, "broken")
    repo.push()
    request_reconcile(fake, WEB)
    assert not reconcile(ctx, WEB).ok
    assert sync_value(ctx, "gitferry_sync_ready") == 0
    assert value(ctx, "gitferry_reconcile_total", result="failure", reason="RenderFailed") == 1
    assert reconciles(ctx) == 2

    # Fixed in git: Ready again, and the ConfigMap's new value is a change, not drift.
    repo.commit({"cm.yaml": config_map("c", "2")}, "fixed")
    repo.push()
    assert reconcile(ctx, WEB).ok
    assert sync_value(ctx, "gitferry_sync_ready") == 1
    assert value(ctx, "gitferry_objects_total", action="configured") == 1
    assert sync_value(ctx, "gitferry_drift_corrected_objects_total") is None
    assert value(ctx, "gitferry_reconcile_total", result="success", reason=Reason.SUCCEEDED) == 2


def test_a_hand_edit_put_back_counts_as_drift(ctx: Context, fake: FakeKube, repo: WorkRepo) -> None:
    create_sync(fake, WEB, repo.bare.file_url)
    assert reconcile(ctx, WEB).ok
    assert reconcile(ctx, WEB).ok  # nothing changed: nothing is drift
    assert sync_value(ctx, "gitferry_drift_corrected_objects_total") is None
    assert value(ctx, "gitferry_objects_total", action="unchanged") == 1

    fake.kube.request("PATCH", "/api/v1/namespaces/apps/configmaps/c",
                      body={"data": {"v": "by hand"}}, content_type=MERGE_PATCH)  # fmt: skip
    assert reconcile(ctx, WEB).ok
    assert sync_value(ctx, "gitferry_drift_corrected_objects_total") == 1
    assert value(ctx, "gitferry_objects_total", action="configured") == 1

    fake.remove("v1", "ConfigMap", "c", "apps")  # deleted by hand: created again, also drift
    assert reconcile(ctx, WEB).ok
    assert sync_value(ctx, "gitferry_drift_corrected_objects_total") == 2
    assert value(ctx, "gitferry_objects_total", action="created") == 2


def test_a_suspended_sync_says_so(ctx: Context, fake: FakeKube, repo: WorkRepo) -> None:
    create_sync(fake, WEB, repo.bare.file_url)
    assert reconcile(ctx, WEB).ok
    patch_sync(fake, WEB, {"spec": {"suspend": True}})
    assert reconcile(ctx, WEB).ok
    assert sync_value(ctx, "gitferry_sync_suspended") == 1
    assert sync_value(ctx, "gitferry_sync_ready") == 0  # Ready False, reason Suspended
    assert value(ctx, "gitferry_reconcile_total", result="success", reason=Reason.SUSPENDED) == 1
    patch_sync(fake, WEB, {"spec": {"suspend": False}})
    assert reconcile(ctx, WEB).ok
    assert sync_value(ctx, "gitferry_sync_suspended") == 0
    assert sync_value(ctx, "gitferry_sync_ready") == 1


class BusySource:
    """A git source whose repository another fetch holds."""

    def fetch(self, *_: Any, **__: Any) -> Any:
        raise SourceBusy("another fetch of the repository is in flight")


def test_a_reconcile_that_waits_is_counted_not_timed(ctx: Context, fake: FakeKube) -> None:
    create_sync(fake, WEB, "https://git.example.com/org/deploy.git")
    ctx.source = cast(GitSource, BusySource())
    assert reconcile(ctx, WEB).ok
    assert value(ctx, "gitferry_reconcile_total", result="waiting", reason=WAITING_REASON) == 1
    assert reconciles(ctx) == 0  # it did no work: a duration would only drag the quantiles down
    assert sync_value(ctx, "gitferry_sync_ready") == -1  # Ready Unknown: still progressing


def test_git_failures_are_counted_by_outcome(
    ctx: Context, fake: FakeKube, repo: WorkRepo, tmp_path: Path
) -> None:
    create_sync(fake, WEB, (tmp_path / "no-such-repo.git").as_uri())
    assert not reconcile(ctx, WEB).ok
    assert value(ctx, "gitferry_git_requests_total", operation="ls-remote", outcome="error") == 1
    assert value(ctx, "gitferry_reconcile_total", result="failure", reason="GitFetchFailed") == 1
    assert sync_value(ctx, "gitferry_sync_ready") == 0

    pinned = SyncKey("apps", "pinned")
    create_sync(fake, pinned, repo.bare.file_url, ref={"commit": "0123456789" * 4})
    assert not reconcile(ctx, pinned).ok
    assert value(ctx, "gitferry_git_requests_total", operation="fetch", outcome="not_found") == 1
    assert value(ctx, "gitferry_reconcile_total", result="failure", reason="RevisionNotFound") == 1


# --- cardinality ------------------------------------------------------------------------------
def test_label_values_stay_bounded(ctx: Context, fake: FakeKube, repo: WorkRepo) -> None:
    """Many reconciles and commits add no series: no revision, URL or message in a
    label; per-sync series only for syncs that exist."""
    keys = [SyncKey("apps", f"s{i}") for i in range(3)]
    for i, key in enumerate(keys):
        create_sync(fake, key, repo.bare.file_url, path=f"s{i}")

    def commit(value: str) -> None:
        repo.commit({f"s{i}/cm.yaml": config_map(f"c{i}", value) for i in range(3)}, value)
        repo.push()

    def run_all() -> set[tuple[str, tuple[tuple[str, str], ...]]]:
        for key in keys:
            request_reconcile(fake, key)
            reconcile(ctx, key)
        return {(n, tuple(sorted(labels.items()))) for n, labels in series(ctx.metrics.registry)}

    commit("1")
    first = run_all()
    for n in range(2, 6):  # new commits, new revisions, objects configured: the same series
        commit(str(n))
        assert run_all() == first
    assert value(ctx, "gitferry_objects_total", action="configured") == 3 * 4

    revisions = {repo.head(), repo.head()[:12]}
    for name, labels in series(ctx.metrics.registry):
        for label, text in labels.items():
            assert not any(r in text for r in revisions), (name, label, text)
            assert "/" not in text and " " not in text, (name, label, text)  # no URL, no message
        if "reason" in labels:
            assert labels["reason"] in {*vars(Reason).values(), WAITING_REASON}
    synced = {labels["name"] for _, labels in series(ctx.metrics.registry) if "name" in labels}
    assert synced == {k.name for k in keys}


def test_a_deleted_sync_leaves_no_series(ctx: Context, fake: FakeKube, repo: WorkRepo) -> None:
    other = SyncKey("apps", "other")
    create_sync(fake, WEB, repo.bare.file_url)
    create_sync(fake, other, repo.bare.file_url, targetNamespace="default")
    assert reconcile(ctx, WEB).ok and reconcile(ctx, other).ok
    fake.kube.request("PATCH", "/api/v1/namespaces/apps/configmaps/c",
                      body={"data": {"v": "by hand"}}, content_type=MERGE_PATCH)  # fmt: skip
    assert reconcile(ctx, WEB).ok  # a drift series too

    fake.kube.request("DELETE", sync_path(WEB))  # the finalizer holds it
    body = fake.object(API, KIND, WEB.name, WEB.namespace)
    assert body is not None
    finalize(ctx, WEB, body)

    left = [(n, labels) for n, labels in series(ctx.metrics.registry) if "name" in labels]
    assert left and all(labels["name"] == "other" for _, labels in left), left
    assert value(ctx, "gitferry_objects_total", action="deleted") == 1  # its ConfigMap
    assert fake.object("v1", "ConfigMap", "c", "apps") is None


# --- the queue gauges, read at each scrape ------------------------------------------------------
@dataclass(frozen=True)
class Out:
    next_in: float = 3600.0
    wake: tuple[str, ...] = ()


def test_queue_gauges_read_the_scheduler() -> None:
    """One thread, held by a reconcile: one running, the second sync's waits."""
    gate = threading.Event()
    metrics = Metrics()
    reg = metrics.registry

    def reconcile_(key: str) -> Out:
        gate.wait(10)
        return Out()

    async def story() -> None:
        scheduler: Scheduler[str] = Scheduler(reconcile_, 1)
        metrics.watch_scheduler(
            queued=lambda: scheduler.queued,
            running=lambda: scheduler.running,
            syncs=lambda: scheduler.workers,
            threads=1,
        )
        stop = asyncio.Event()
        workers = [asyncio.create_task(scheduler.run(k, stop)) for k in ("a", "b")]
        for _ in range(200):
            await asyncio.sleep(0.01)
            if reg.get_sample_value("gitferry_reconcile_queue_depth") == 1:
                break
        assert reg.get_sample_value("gitferry_reconciles_running") == 1
        assert reg.get_sample_value("gitferry_reconcile_queue_depth") == 1
        assert reg.get_sample_value("gitferry_syncs") == 2
        assert reg.get_sample_value("gitferry_reconcile_threads") == 1
        gate.set()
        stop.set()
        await asyncio.gather(*workers)
        scheduler.close(1)
        assert reg.get_sample_value("gitferry_syncs") == 0

    asyncio.run(story())


# --- the server ----------------------------------------------------------------------------------
def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_the_server_exposes_metrics_and_readiness_then_closes_its_port() -> None:
    metrics = Metrics.for_process()
    metrics.reconciled(KIND, "apps", "web", seconds=0.3, result="success", reason="X")
    metrics.sync_state("apps", "web", ready="True", suspended=False)
    stopping = False

    async def scenario() -> tuple[int, list[tuple[int, str]]]:
        sock = listen("127.0.0.1", 0)
        server = MetricsServer(sock, metrics.registry, lambda: "stopping" if stopping else None)
        await server.start()
        port = server.address[1]
        loop = asyncio.get_running_loop()
        answers = [
            await loop.run_in_executor(None, get, f"http://127.0.0.1:{port}{path}")
            for path in ("/metrics", "/readyz")
        ]
        nonlocal stopping
        stopping = True
        answers.append(await loop.run_in_executor(None, get, f"http://127.0.0.1:{port}/readyz"))
        await server.stop()
        return port, answers

    port, [(code, text), ready, not_ready] = asyncio.run(scenario())
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert "gotk_reconcile_duration_seconds" in families
    assert "process_resident_memory_bytes" in families  # the process collectors are there
    (ready_sample,) = families["gitferry_sync_ready"].samples
    assert ready_sample.labels == {"namespace": "apps", "name": "web"}
    assert ready_sample.value == 1
    assert not any(s.name.endswith("_created") for f in families.values() for s in f.samples)
    assert ready == (200, "ok\n")
    assert not_ready == (503, "not ready: stopping\n")
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # the port is closed


def test_a_taken_port_fails_at_once_naming_the_address() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            listen("127.0.0.1", port)


@pytest.mark.parametrize(
    ("text", "addr"),
    [
        ("0.0.0.0:8081", ("0.0.0.0", 8081)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        (":9090", ("0.0.0.0", 9090)),
        ("[::]:8081", ("::", 8081)),
    ],
)
def test_metrics_addresses(text: str, addr: tuple[str, int]) -> None:
    assert parse_addr(text) == addr


def test_the_metrics_address_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITFERRY_METRICS_ADDR", raising=False)
    assert Settings.from_env().metrics_addr == ("0.0.0.0", 8081)
    assert Settings(cache_dir=Path("/tmp")).metrics_addr is None  # a Runtime a test drives
    monkeypatch.setenv("GITFERRY_METRICS_ADDR", "off")
    assert Settings.from_env().metrics_addr is None
    for bad in ("8081", "host:http", "0.0.0.0:70000"):
        monkeypatch.setenv("GITFERRY_METRICS_ADDR", bad)
        with pytest.raises(SettingsError, match="GITFERRY_METRICS_ADDR"):
            Settings.from_env()
