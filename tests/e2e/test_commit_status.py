"""Commit statuses: Alerts of a forge type post `pending` when a revision starts
applying, `success` once it is applied and `failure` (with the reason) for a
revision that fails, on the revision's commit and under the stable key
`gitferry/<namespace>/<name>`, to a local server that checks every request
against the forge's documented API; each state once per commit however often
the sync reconciles, and the token shows nowhere."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.harness.alerts import assert_nowhere, create_alert, wait_alert
from tests.harness.cluster_fixtures import Operator
from tests.harness.git_fixtures import RepoFactory
from tests.harness.manifests import config_map
from tests.harness.receivers import FakeForge, wait_until
from tests.harness.syncs import create_sync, put_secret, request_reconcile, wait_condition

pytestmark = pytest.mark.e2e

TOKEN = "forge-t0ken-value"
# type, API base under the fake forge, repository, the forge's words for pending/success/failure
FORGES = [
    ("github", "/github", "org/app", ("pending", "success", "failure")),
    ("gitlab", "/gitlab/api/v4", "group/sub/app", ("running", "success", "failed")),
    ("gitea", "/gitea/api/v1", "org/app", ("pending", "success", "failure")),
    ("bitbucket", "/bitbucket/2.0", "team/app", ("INPROGRESS", "SUCCESSFUL", "FAILED")),
    ("azuredevops", "/azure/org", "Proj/app", ("pending", "succeeded", "failed")),
]


@pytest.fixture
def forge() -> Iterator[FakeForge]:
    server = FakeForge(TOKEN)
    server.start()
    yield server
    server.stop()


def test_the_forge_sees_pending_success_and_failure_on_the_right_commit(
    operator: Operator, namespace: str, repo_factory: RepoFactory, forge: FakeForge
) -> None:
    cluster = operator.cluster
    put_secret(cluster, namespace, {"token": TOKEN}, name="forge-token")
    for type_, base, repository, _ in FORGES:
        create_alert(cluster, type_, namespace, type=type_, syncs=[{"name": "web"}],
                     secretRef={"name": "forge-token"}, address=forge.url + base,
                     repository=repository)  # fmt: skip
    for type_, *_ in FORGES:
        wait_alert(cluster, type_, namespace)

    repo = repo_factory("statuses")
    good = repo.commit({"a.yaml": config_map("a")}, "one config map")
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, interval="1h", retryInterval="2s")
    wait_condition(cluster, "web", namespace, revision_sha=good)
    key = f"gitferry/{namespace}/web"
    for type_, _, repository, (pending, success, _) in FORGES:
        posted = wait_until(
            f"{type_}: two statuses",
            lambda t=type_: len(forge.statuses(t)) >= 2 and forge.statuses(t),
        )
        assert [(p.sha, p.state) for p in posted] == [(good, pending), (good, success)], type_
        assert {p.key for p in posted} == {key}, posted  # branch protection requires it
        assert {p.repo for p in posted} == {
            repository if type_ != "azuredevops" else "org/Proj/app"
        }
    assert forge.statuses("bitbucket")[0].body["name"] == key

    bad = repo.commit({"a.yaml": "data: [unclosed\n"}, "a broken file")
    repo.push()
    request_reconcile(cluster, "web", namespace)
    wait_condition(cluster, "web", namespace, status="False", reason="RenderFailed")
    for type_, _, _, (_, _, failure) in FORGES:
        third = wait_until(f"{type_}: a failure",
                           lambda t=type_: len(forge.statuses(t)) >= 3 and forge.statuses(t)[2])  # fmt: skip
        assert (third.sha, third.state) == (bad, failure), type_
        assert third.description.startswith("RenderFailed: "), third
    github = forge.statuses("github")[2]
    assert len(github.description) <= 140 and "a.yaml" in github.description

    time.sleep(6)  # retried at 2 s, 4 s: the same failure is not posted again
    assert len(forge.statuses()) == 3 * len(FORGES)
    assert forge.rejected == []
    assert_nowhere(operator, namespace, TOKEN)
