"""The Notifier on the in-memory API: it matches reports to the Alerts of the
sync's namespace, reads each Alert's Secret at delivery time as the Alert's
identity, delivers off the caller's thread, and writes Ready (and
DeliveryFailed, naming no URL) on the Alert."""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gitferry.alerts import Notifier, NotifySettings
from gitferry.api import SyncKey
from gitferry.metrics import Metrics
from gitferry.notify.delivery import Policy
from gitferry.reports import Phase, SyncReport
from tests.harness.receivers import ChatReceiver, FakeForge
from tests.unit.fakeapi import GITFERRY_CRD, WIDGET_CRD, FakeKube, crd_manifest, manifest

ALERT_CRD = crd_manifest("gitferry.dev", "Alert", "alerts", versions=("v1alpha1",))
SHA = "ab" * 20
PASSWORD = "pw-s3cret-value"
FAST = Policy(attempts=2, base_delay=0.01, max_delay=0.02, timeout=5)


@pytest.fixture
def fake() -> FakeKube:
    return FakeKube(crds=(GITFERRY_CRD, WIDGET_CRD, ALERT_CRD), namespaces=("apps", "other"))


@pytest.fixture
def hook() -> Iterator[ChatReceiver]:
    server = ChatReceiver()
    server.start()
    yield server
    server.stop()


def _secret(fake: FakeKube, name: str, **data: str) -> None:
    fake.seed(manifest("v1", "Secret", name, "apps",
                       data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()}))  # fmt: skip


def _alert(fake: FakeKube, name: str = "chat", **spec: Any) -> dict[str, Any]:
    spec.setdefault("syncs", [{"name": "*"}])
    spec.setdefault("secretRef", {"name": "chat-url"})
    (body,) = fake.seed(manifest("gitferry.dev/v1alpha1", "Alert", name, "apps", spec=spec))
    return body


def _report(phase: Phase, reason: str = "ReconciliationSucceeded", message: str = "",
            namespace: str = "apps", changes: tuple[str, ...] = ("ConfigMap/apps/a created",)
            ) -> SyncReport:  # fmt: skip
    return SyncReport(SyncKey(namespace, "web"), "uid-1", "https://github.com/o/r",
                      f"main@sha1:{SHA}", phase, reason, message, changes)  # fmt: skip


def _ready(fake: FakeKube, name: str = "chat") -> dict[str, Any]:
    alert = fake.object("gitferry.dev/v1alpha1", "Alert", name, "apps") or {}
    conds = (alert.get("status") or {}).get("conditions") or []
    return next((c for c in conds if c["type"] == "Ready"), {})


def _notifier(fake: FakeKube, **kw: Any) -> tuple[Notifier, Metrics]:
    metrics = Metrics()
    return Notifier(fake.kube, NotifySettings(FAST, **kw), metrics), metrics


def test_reports_become_chat_messages_off_the_callers_thread(
    fake: FakeKube, hook: ChatReceiver
) -> None:
    _secret(
        fake, "chat-url", url=hook.apprise_url("json", "/a") + "\n" + hook.apprise_url("form", "/b")
    )
    notifier, metrics = _notifier(fake)
    notifier.upsert(_alert(fake))
    assert _ready(fake)["status"] == "True"
    start = time.monotonic()
    notifier.report(_report(Phase.PENDING))
    notifier.report(_report(Phase.SUCCEEDED))
    notifier.report(_report(Phase.SUCCEEDED, namespace="other"))  # another namespace: not ours
    assert time.monotonic() - start < 0.1  # report only enqueues
    assert notifier.idle(10)
    msgs = hook.wait(2)
    assert [m["type"] for m in msgs] == ["success", "success"]  # both targets, one message
    assert sorted(r.path for r in hook.received) == ["/a", "/b"]
    assert metrics.notifications.labels("delivered")._value.get() == 1
    notifier.close()


def test_a_delivery_that_keeps_failing_sets_delivery_failed_and_names_no_url(
    fake: FakeKube, hook: ChatReceiver
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    _secret(fake, "chat-url", url=f"json://bot:{PASSWORD}@127.0.0.1:{closed}/hook")
    notifier, metrics = _notifier(fake)
    notifier.upsert(_alert(fake))
    notifier.report(_report(Phase.FAILED, "RenderFailed", "deploy/a.yaml: bad"))
    assert notifier.idle(20)
    ready = _ready(fake)
    assert (ready["status"], ready["reason"]) == ("False", "DeliveryFailed")
    assert "target 1 of 1 (JSON)" in ready["message"] and "2 attempt(s)" in ready["message"]
    assert PASSWORD not in str(fake.calls)
    assert metrics.notifications.labels("failed")._value.get() == 1
    # Fixed: the next delivery turns Ready back to True.
    _secret(fake, "chat-url", url=hook.apprise_url())
    notifier.report(_report(Phase.SUCCEEDED))
    assert notifier.idle(10)
    assert _ready(fake)["status"] == "True"
    notifier.close()


def test_the_secret_is_read_as_the_alerts_service_account(
    fake: FakeKube, hook: ChatReceiver
) -> None:
    _secret(fake, "chat-url", url=hook.apprise_url())
    notifier, _ = _notifier(fake, default_service_account="tenant-default")
    notifier.upsert(_alert(fake, "a1", serviceAccountName="notifier"))
    notifier.upsert(_alert(fake, "a2"))
    notifier.report(_report(Phase.FAILED, "RenderFailed", "deploy/a.yaml: bad"))
    assert notifier.idle(10)
    readers = {c.user for c in fake.calls if c.path.endswith("/secrets/chat-url")}
    assert readers == {"system:serviceaccount:apps:notifier",
                       "system:serviceaccount:apps:tenant-default"}  # fmt: skip
    notifier.close()


def test_a_forbidden_secret_fails_the_delivery_at_once(fake: FakeKube) -> None:
    fake.fail("GET", "/api/v1/namespaces/apps/secrets/chat-url", 403,
              'secrets "chat-url" is forbidden', times=None)  # fmt: skip
    notifier, _ = _notifier(fake)
    notifier.upsert(_alert(fake))
    notifier.report(_report(Phase.FAILED, "RenderFailed", "x"))
    assert notifier.idle(10)
    ready = _ready(fake)
    assert ready["reason"] == "DeliveryFailed" and "1 attempt(s)" in ready["message"]
    assert "forbidden" in ready["message"]
    notifier.close()


def test_commit_statuses_go_to_the_forge(fake: FakeKube) -> None:
    forge = FakeForge("gh-token-value")
    forge.start()
    try:
        _secret(fake, "gh", token="gh-token-value")
        notifier, metrics = _notifier(fake, cluster_name="prod")
        notifier.upsert(_alert(fake, "status", type="github", secretRef={"name": "gh"},
                               address=forge.url + "/github"))  # fmt: skip
        for phase in (Phase.PENDING, Phase.SUCCEEDED, Phase.SUCCEEDED):
            notifier.report(_report(phase))
        assert notifier.idle(10)
        assert [(p.state, p.key, p.repo, p.sha) for p in forge.statuses()] == [
            ("pending", "gitferry/prod/apps/web", "o/r", SHA),
            ("success", "gitferry/prod/apps/web", "o/r", SHA),
        ]
        assert forge.rejected == []
        assert metrics.commit_statuses.labels("delivered")._value.get() == 2
        notifier.close()
    finally:
        forge.stop()


def test_an_invalid_alert_says_why_and_is_not_used(fake: FakeKube, hook: ChatReceiver) -> None:
    notifier, _ = _notifier(fake)
    body = _alert(fake, severity="loud")
    notifier.upsert(body)
    ready = _ready(fake)
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.severity" in ready["message"]
    notifier.report(_report(Phase.FAILED, "RenderFailed", "x"))
    assert notifier.idle(5) and hook.received == []
    notifier.close()


def test_a_suspended_or_deleted_alert_sends_nothing(fake: FakeKube, hook: ChatReceiver) -> None:
    _secret(fake, "chat-url", url=hook.apprise_url())
    notifier, _ = _notifier(fake)
    notifier.upsert(_alert(fake, suspend=True))
    assert _ready(fake)["reason"] == "Suspended"
    notifier.report(_report(Phase.FAILED, "RenderFailed", "x"))
    notifier.upsert(_alert(fake, "gone"))
    from gitferry.alerts import AlertKey

    notifier.remove(AlertKey("apps", "gone"))
    notifier.report(_report(Phase.FAILED, "ApplyFailed", "y"))
    assert notifier.idle(5) and hook.received == []
    notifier.close()


def test_the_cluster_name_setting_is_a_dns_label(monkeypatch: pytest.MonkeyPatch) -> None:
    from gitferry.settings import Settings, SettingsError

    monkeypatch.setenv("GITFERRY_CLUSTER_NAME", "prod-eu.1")
    assert Settings.from_env().cluster_name == "prod-eu.1"
    monkeypatch.setenv("GITFERRY_CLUSTER_NAME", "Prod/EU")
    with pytest.raises(SettingsError, match="GITFERRY_CLUSTER_NAME"):
        Settings.from_env()
    monkeypatch.setenv("GITFERRY_CLUSTER_NAME", "")
    monkeypatch.setenv("GITFERRY_NOTIFY_ATTEMPTS", "0")
    with pytest.raises(SettingsError, match="GITFERRY_NOTIFY_ATTEMPTS"):
        Settings.from_env()
