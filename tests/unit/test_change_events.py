"""Events name what a revision changed, Flux style, with who changed it and why;
the SyncReports carry the commit's author, subject and changed paths — driven
through the real pipeline on the in-memory API and a real git repository."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gitferry.api import SyncKey, sync_path
from gitferry.constants import KIND
from gitferry.context import Context
from gitferry.events import MAX_MESSAGE, EventRecorder, change_message, headline
from gitferry.kube import MERGE_PATCH, Action, Change, ChangeSet, Discovery, ObjRef
from gitferry.reconcile import reconcile
from gitferry.reports import Phase, SyncReport
from gitferry.settings import Settings
from gitferry.source import GitSource, SourceSettings
from gitferry.status import StatusWriter
from tests.harness.gitrepo import WorkRepo, make_repo
from tests.unit.fakeapi import FakeKube, manifest

WEB = SyncKey("apps", "web")
SHA = "3f2a9c4e" * 5


def ref(kind: str, name: str, ns: str = "apps", group: str = "") -> ObjRef:
    return ObjRef(group, kind, ns, name)


# --- the message ----------------------------------------------------------------------


def test_the_headline_says_revision_subject_and_author_when_known() -> None:
    rev = f"main@sha1:{SHA}"
    assert headline(rev, "Scale web to 3", "Ada Lovelace") == (
        f'main@sha1:{SHA}: "Scale web to 3" by Ada Lovelace'
    )
    assert headline(rev, "Scale web to 3") == f'main@sha1:{SHA}: "Scale web to 3"'
    assert headline(rev) == rev


def test_a_line_per_object_written_or_deleted_in_apply_order_then_the_counts() -> None:
    changes = ChangeSet(
        [
            Change(ref("Namespace", "apps", ns=""), Action.UNCHANGED),
            Change(ref("ConfigMap", "x"), Action.CREATED),
            Change(ref("Service", "web"), Action.UNCHANGED),
            Change(ref("Deployment", "web", group="apps"), Action.CONFIGURED),
            Change(ref("Job", "migrate", group="batch"), Action.RECREATED),
            Change(ref("ConfigMap", "once"), Action.SKIPPED),
            Change(ref("ClusterRole", "old", ns="", group="rbac.authorization.k8s.io"), Action.DELETED),
        ]
    )  # fmt: skip
    assert change_message("main@sha1:abc", changes).splitlines() == [
        "main@sha1:abc",
        "ConfigMap/apps/x created",
        "Deployment/apps/web configured",
        "Job/apps/migrate recreated",
        "ClusterRole/old deleted",
        "created 1, configured 1, recreated 1, unchanged 2, skipped 1, deleted 1",
    ]


def test_at_most_twenty_objects_then_how_many_more() -> None:
    changes = ChangeSet([Change(ref("ConfigMap", f"c{i:02}"), Action.CREATED) for i in range(45)])
    lines = change_message("head", changes).splitlines()
    assert lines[1] == "ConfigMap/apps/c00 created" and lines[20] == "ConfigMap/apps/c19 created"
    assert lines[21:] == ["and 25 more", "created 45"]


def test_the_message_fits_the_event_limit_in_bytes() -> None:
    long = "ü" * 120  # two bytes each
    changes = ChangeSet([Change(ref("ConfigMap", f"{long}{i}"), Action.CREATED) for i in range(20)])
    text = change_message(f"main@sha1:{SHA}", changes)
    assert len(text.encode()) <= MAX_MESSAGE
    lines = text.splitlines()
    assert (
        lines[-1] == "created 20" and lines[-2].startswith("and ") and lines[-2].endswith(" more")
    )
    shown = len(lines) - 3
    assert 0 < shown < 20 and lines[-2] == f"and {20 - shown} more"
    huge = change_message("ü" * 2000, changes)
    assert len(huge.encode()) <= MAX_MESSAGE and huge.endswith("…")


# --- through the pipeline ----------------------------------------------------------------


def config_map(name: str, value: str) -> str:
    return f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  v: '{value}'\n"


@pytest.fixture
def repo(tmp_path: Path) -> WorkRepo:
    repo = make_repo(tmp_path / "git", "app")
    repo.commit({"deploy/a.yaml": config_map("a", "1")}, "first")
    repo.push()
    return repo


@pytest.fixture
def fake() -> FakeKube:
    return FakeKube(namespaces=("default", "apps"))


@pytest.fixture
def reports() -> list[SyncReport]:
    return []


@pytest.fixture
def ctx(fake: FakeKube, tmp_path: Path, reports: list[SyncReport]) -> Iterator[Context]:
    discovery = Discovery(fake.kube)
    discovery.refresh()
    source = GitSource(SourceSettings(cache_dir=tmp_path / "cache", allow_file_urls=True))
    yield Context(
        kube=fake.kube,
        discovery=discovery,
        source=source,
        settings=Settings(cache_dir=tmp_path / "cache", allow_file_urls=True),
        status=StatusWriter(fake.kube),
        events=EventRecorder(fake.kube),
        reporters=[reports.append],
    )
    source.close()


def create_sync(fake: FakeKube, repo: WorkRepo, **spec: Any) -> None:
    fake.seed(
        manifest(
            "gitferry.dev/v1alpha1",
            KIND,
            WEB.name,
            WEB.namespace,
            finalizers=["gitferry.dev/finalizer"],
            spec={"url": repo.bare.file_url, "interval": "1h", "path": "deploy", **spec},
        )
    )


def ask_again(fake: FakeKube, stamp: str) -> None:
    """A user's request to reconcile now: git is asked afresh."""
    patch = {"metadata": {"annotations": {"gitferry.dev/requested-at": stamp}}}
    fake.kube.request("PATCH", sync_path(WEB), body=patch, content_type=MERGE_PATCH)


def messages(fake: FakeKube, reason: str, revision: str) -> list[str]:
    return [e["message"] for e in fake.events(reason) if e["message"].startswith(revision)]


def test_the_event_and_the_report_say_who_changed_what(
    ctx: Context, fake: FakeKube, repo: WorkRepo, reports: list[SyncReport]
) -> None:
    create_sync(fake, repo)
    assert reconcile(ctx, WEB).ok
    first = f"main@sha1:{repo.head()}"
    assert messages(fake, "ReconciliationSucceeded", first) == [
        f'{first}: "first" by Gitferry Test\nConfigMap/apps/a created\ncreated 1'
    ]
    assert reports[-1].paths == () and reports[-1].subject == "first"  # no earlier revision

    repo.commit(
        {"deploy/a.yaml": config_map("a", "2"), "deploy/x.yaml": config_map("x", "1")},
        "Scale web to 3\n\nThe body stays out.",
    )
    repo.git("commit", "-q", "--amend", "--no-edit", "--author=Ada Lovelace <ada@example.invalid>")
    repo.push()
    ask_again(fake, "1")
    assert reconcile(ctx, WEB).ok
    second = f"main@sha1:{repo.head()}"
    assert messages(fake, "ReconciliationSucceeded", second) == [
        f'{second}: "Scale web to 3" by Ada Lovelace\n'
        "ConfigMap/apps/a configured\nConfigMap/apps/x created\ncreated 1, configured 1"
    ]
    pending, done = [r for r in reports if r.revision == second]
    assert pending.phase == Phase.PENDING and done.phase == Phase.SUCCEEDED
    for report in (pending, done):
        assert (report.author, report.subject) == ("Ada Lovelace", "Scale web to 3")
        assert report.paths == ("deploy/a.yaml", "deploy/x.yaml")
    assert done.changes == ("ConfigMap/apps/a configured", "ConfigMap/apps/x created")
    assert "ada@example.invalid" not in repr(reports) + repr(fake.events())


def test_a_drift_correction_says_so_and_credits_no_commit(
    ctx: Context, fake: FakeKube, repo: WorkRepo
) -> None:
    create_sync(fake, repo)
    assert reconcile(ctx, WEB).ok
    # Someone deletes it by hand; the next reconcile puts it back.
    fake.kube.request("DELETE", "/api/v1/namespaces/apps/configmaps/a")
    ask_again(fake, "1")
    assert reconcile(ctx, WEB).ok
    revision = f"main@sha1:{repo.head()}"
    assert len(messages(fake, "ReconciliationSucceeded", f'{revision}: "first" by')) == 1
    assert messages(fake, "ReconciliationSucceeded", f"{revision}: drift corrected") == [
        f"{revision}: drift corrected\nConfigMap/apps/a created\ncreated 1"
    ]
