"""Against a real Gitea (tests/harness/gitea.py, built by hack/gitea/build.sh):
a sync of a private repository hosted on it, cloned over HTTP with an access
token, and an Alert of `type: gitea` whose API address gitferry derives from the
sync's URL → Gitea's own API lists `pending` then `success` on the pushed commit
under the context `gitferry/<namespace>/<name>`, and its combined status (what
branch protection reads) is `success`; a commit with invalid YAML → `failure`
with the reason. And Gitea's own push webhook, pointed at gitferry's receiver,
makes a sync with `interval: 1h` apply the push within seconds."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.alerts import assert_nowhere, create_alert, wait_alert
from tests.harness.cluster_fixtures import Cluster, Operator, wait_for
from tests.harness.gitea import ADMIN, Gitea, free_port
from tests.harness.manifests import config_map
from tests.harness.syncs import create_sync, put_secret, request_reconcile, wait_condition

pytestmark = pytest.mark.e2e

WEBHOOK_SECRET = ("gitferry-system", "gitferry-webhook")  # the one manifests/ let it read
APPLIED_WITHIN = 10.0  # seconds from `git push` to applied, through the webhook


def statuses_of(gitea: Gitea, repo: str, sha: str, count: int) -> list[tuple[str, str]]:
    """(state, context) of the first `count` statuses on `sha`, once Gitea has them."""
    found = wait_for(
        f"{count} statuses on {sha[:12]} in Gitea",
        lambda: len(s := gitea.statuses(repo, sha)) >= count and s,
        timeout=60,
    )
    return [(s["status"], s["context"]) for s in found]


def sync_of(gitea: Gitea, cluster: Cluster, namespace: str, repo: str, **spec: Any) -> None:
    """The sync `web` of `repo` over HTTP, authenticated as Gitea's admin with the token."""
    put_secret(cluster, namespace, {"username": ADMIN, "password": gitea.token}, name="git-auth")
    create_sync(cluster, "web", namespace, gitea.clone_url(repo),
                secretRef={"name": "git-auth"}, **spec)  # fmt: skip


def test_gitea_shows_pending_then_success_and_failure_on_the_pushed_commits(
    operator: Operator, namespace: str, gitea: Gitea, tmp_path: Path
) -> None:
    cluster = operator.cluster
    repo = gitea.create_repo(f"deploy-{secrets.token_hex(3)}", private=True)
    work = gitea.work_repo(repo, tmp_path)
    good = work.commit({"a.yaml": config_map("a")}, "one config map")
    work.push()  # over HTTP, the token as password

    put_secret(cluster, namespace, {"token": gitea.token}, name="gitea-token")
    # No `address`: the API is http://127.0.0.1:<port>/api/v1, from the sync's URL.
    create_alert(cluster, "gitea", namespace, type="gitea", syncs=[{"name": "web"}],
                 secretRef={"name": "gitea-token"})  # fmt: skip
    wait_alert(cluster, "gitea", namespace)
    sync_of(gitea, cluster, namespace, repo, interval="1h", retryInterval="2s")
    wait_condition(cluster, "web", namespace, revision_sha=good)

    key = f"gitferry/{namespace}/web"
    assert statuses_of(gitea, repo, good, 2) == [("pending", key), ("success", key)]
    combined = gitea.combined_status(repo, "main")
    assert combined["sha"] == good and combined["state"] == "success", combined
    assert [s["context"] for s in combined["statuses"]] == [key]
    assert combined["statuses"][0]["creator"]["login"] == ADMIN

    bad = work.commit({"a.yaml": "data: [unclosed\n"}, "a broken file")
    work.push()
    request_reconcile(cluster, "web", namespace)
    wait_condition(cluster, "web", namespace, status="False", reason="RenderFailed")
    assert statuses_of(gitea, repo, bad, 1) == [("failure", key)]
    said = gitea.statuses(repo, bad)[0]["description"]
    assert said.startswith("RenderFailed: ") and "a.yaml" in said, said
    assert gitea.combined_status(repo, "main")["state"] == "failure"

    time.sleep(5)  # retried at 2 s, 4 s: the same failure is not posted again
    assert len(gitea.statuses(repo, bad)) == 1
    assert len(gitea.statuses(repo, good)) == 2
    assert_nowhere(operator, namespace, gitea.token)


@contextlib.contextmanager
def webhook_secret(cluster: Cluster, data: dict[str, str]) -> Iterator[None]:
    namespace, name = WEBHOOK_SECRET
    put_secret(cluster, namespace, data, name=name)
    try:
        yield
    finally:
        cluster.kubectl("delete", "secret", name, "-n", namespace, check=False)


def test_a_push_to_gitea_is_applied_within_seconds_through_its_own_webhook(
    operator_factory: Callable[..., Operator], namespace: str, gitea: Gitea, tmp_path: Path
) -> None:
    port = free_port()
    operator = operator_factory(
        namespace,
        GITFERRY_WEBHOOK_SECRET="/".join(WEBHOOK_SECRET),
        GITFERRY_WEBHOOK_ADDR=f"127.0.0.1:{port}",
    )
    cluster = operator.cluster
    wait_for("the webhook receiver to listen", lambda: "action=webhook-listen" in operator.log())

    repo = gitea.create_repo(f"hooked-{secrets.token_hex(3)}", private=True)
    work = gitea.work_repo(repo, tmp_path)
    first = work.commit({"cm.yaml": config_map("web", "1")}, "first")
    work.push()
    sync_of(gitea, cluster, namespace, repo, interval="1h")
    wait_condition(cluster, "web", namespace, revision_sha=first)

    secret = secrets.token_hex(24)
    with webhook_secret(cluster, {"gitea": secret}):
        # Gitea refuses hooks to loopback unless allowed ([webhook] ALLOWED_HOST_LIST).
        gitea.add_webhook(repo, f"http://127.0.0.1:{port}/hook/gitea", secret)
        second = work.commit({"cm.yaml": config_map("web", "2")}, "second")
        started = time.monotonic()
        work.push()
        wait_condition(cluster, "web", namespace, revision_sha=second, timeout=APPLIED_WITHIN)
        took = time.monotonic() - started
        data = (cluster.get("configmap", "web", namespace) or {}).get("data")
        assert data == {"v": "2"}, data

    # Gitea queues a push's webhooks: the first push may be delivered too, late.
    lines = [x for x in operator.log().splitlines() if "action=webhook " in x]
    line = next((x for x in lines if f"after={second}" in x), lines)
    assert "forge=gitea" in line and "status=202" in line and "matched=1" in line, line
    assert secret not in operator.log()
    print(f"\ngit push to Gitea → applied through its webhook in {took:.2f}s")
