"""Chat notifications: an Alert sends one message when a revision applies, one when
a revision fails (however often the failure is retried) and one when the sync is
Ready again, to Apprise's json:// and form:// targets at a local webhook; a target that
refuses connections turns the Alert's Ready False with DeliveryFailed, and the
URL's password shows nowhere."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness.alerts import assert_nowhere, create_alert, wait_alert
from tests.harness.cluster_fixtures import Operator, wait_for
from tests.harness.git_fixtures import RepoFactory
from tests.harness.manifests import config_map
from tests.harness.receivers import ChatReceiver
from tests.harness.syncs import create_sync, put_secret, request_reconcile, wait_condition

pytestmark = pytest.mark.e2e

PASSWORD = "s3cret-chat-pw"


@pytest.fixture
def hook() -> Iterator[ChatReceiver]:
    server = ChatReceiver()
    server.start()
    yield server
    server.stop()


def _chat(hook: ChatReceiver, count: int) -> list[dict[str, Any]]:
    """The first `count` messages the json:// target got (the form:// one gets the same)."""
    wait_for(f"{count} message(s) at each target", lambda: len(hook.received) >= 2 * count, 60)
    return [m for r, m in zip(hook.received, hook.messages(), strict=True)
            if r.path == "/chat"][:count]  # fmt: skip


def _failed_reconciles(op: Operator) -> int:
    return len(re.findall(r"sync=\S+/web action=reconcile reason=RenderFailed", op.log()))


def test_applied_failed_and_recovered_are_three_messages(
    operator: Operator, namespace: str, repo_factory: RepoFactory, hook: ChatReceiver
) -> None:
    cluster = operator.cluster
    url = hook.apprise_url("json", "/chat", user="bot", password=PASSWORD)
    form = hook.apprise_url("form", "/form")
    put_secret(cluster, namespace, {"url": f"{url}\n{form}"}, name="chat-url")
    create_alert(cluster, "team-chat", namespace, syncs=[{"name": "web"}],
                 secretRef={"name": "chat-url"}, summary="cluster e2e")  # fmt: skip
    wait_alert(cluster, "team-chat", namespace)

    repo = repo_factory("chat")
    first = repo.commit({"deploy/a.yaml": config_map("a")}, "one config map")
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, path="deploy", interval="1h",
                retryInterval="2s")  # fmt: skip
    wait_condition(cluster, "web", namespace, revision_sha=first)
    (applied,) = _chat(hook, 1)
    assert applied["title"] == f"{namespace}/web applied main@sha1:{first[:12]}"
    assert applied["type"] == "success"
    assert applied["message"].splitlines()[0] == "cluster e2e"
    assert f"main@sha1:{first}" in applied["message"]
    assert f"ConfigMap/{namespace}/a created" in applied["message"]

    bad = repo.commit({"deploy/bad.yaml": "data: [unclosed\n"}, "a broken file")
    repo.push()
    request_reconcile(cluster, "web", namespace)
    wait_condition(cluster, "web", namespace, status="False", reason="RenderFailed")
    wait_for("the failure retried three times", lambda: _failed_reconciles(operator) >= 3, 60)
    applied_, failed = _chat(hook, 2)
    assert failed["type"] == "failure"
    assert failed["title"] == f"{namespace}/web failed: RenderFailed"
    assert "bad.yaml" in failed["message"] and f"main@sha1:{bad}" in failed["message"]

    fixed = repo.commit({"deploy/bad.yaml": config_map("b")}, "fixed")
    repo.push()
    wait_condition(cluster, "web", namespace, revision_sha=fixed)
    *_, recovered = _chat(hook, 3)
    assert recovered["type"] == "success"
    assert re.match(rf"{namespace}/web is Ready again after \d+s$", recovered["title"])
    assert "failing (RenderFailed)" in recovered["message"]
    assert f"ConfigMap/{namespace}/b created" in recovered["message"]

    time.sleep(3)  # a retry or a periodic reconcile now must say nothing
    assert len(hook.received) == 6, hook.messages()  # three messages, to each target
    forms = [m for r, m in zip(hook.received, hook.messages(), strict=True) if r.path == "/form"]
    assert [(f["title"], f["type"]) for f in forms] == [
        (m["title"], m["type"]) for m in (applied, failed, recovered)
    ]
    assert {r.basic_auth for r in hook.received if r.path == "/chat"} == {("bot", PASSWORD)}
    assert_nowhere(operator, namespace, PASSWORD, url, form)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_target_that_refuses_turns_the_alert_not_ready_without_leaking_the_url(
    operator_factory: object, namespace: str, repo_factory: RepoFactory
) -> None:
    op = operator_factory(namespace, GITFERRY_NOTIFY_ATTEMPTS="2")  # type: ignore[operator]
    cluster = op.cluster
    url = f"json://bot:{PASSWORD}@127.0.0.1:{_closed_port()}/private-hook"
    put_secret(cluster, namespace, {"url": url}, name="chat-url")
    create_alert(cluster, "broken", namespace, syncs=[{"name": "*"}],
                 secretRef={"name": "chat-url"})  # fmt: skip
    wait_alert(cluster, "broken", namespace)
    repo = repo_factory("refused")
    sha = repo.commit({"a.yaml": config_map("a")}, "one config map")
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, interval="1h")
    wait_condition(cluster, "web", namespace, revision_sha=sha)
    alert = wait_alert(cluster, "broken", namespace, status="False", reason="DeliveryFailed")
    message = alert["status"]["conditions"][0]["message"]
    assert "target 1 of 1 (JSON)" in message and "after 2 attempt(s)" in message
    assert f"sync {namespace}/web" in message
    assert_nowhere(op, namespace, PASSWORD, url, "private-hook")


def test_the_secret_is_read_as_the_alerts_service_account(
    operator: Operator, namespace: str, repo_factory: RepoFactory, hook: ChatReceiver
) -> None:
    """A tenant's Alert cannot make the operator send a Secret the tenant's
    ServiceAccount may not read: the read is impersonated and refused."""
    cluster = operator.cluster
    cluster.kubectl("create", "serviceaccount", "no-secrets", "-n", namespace)
    put_secret(cluster, namespace, {"url": hook.apprise_url()}, name="chat-url")
    create_alert(cluster, "tenant", namespace, syncs=[{"name": "*"}],
                 secretRef={"name": "chat-url"}, serviceAccountName="no-secrets")  # fmt: skip
    wait_alert(cluster, "tenant", namespace)
    repo = repo_factory("tenant")
    sha = repo.commit({"a.yaml": config_map("a")}, "one config map")
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, interval="1h")
    wait_condition(cluster, "web", namespace, revision_sha=sha)
    alert = wait_alert(cluster, "tenant", namespace, status="False", reason="DeliveryFailed")
    message = alert["status"]["conditions"][0]["message"]
    assert "forbidden" in message and f"system:serviceaccount:{namespace}:no-secrets" in message
    assert hook.received == []
