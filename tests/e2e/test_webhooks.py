"""Push webhooks: a push to the git server and a signed GitHub- or GitLab-style
webhook make the syncs that push changed apply it within seconds, though their
interval is an hour — and only they: not a sync of another repository, of another
branch, or of a path the push did not touch. A badly signed or unsigned webhook
is refused and changes nothing, an oversized one is refused, and the secret
appears in no log line, command line or environment of the operator."""

from __future__ import annotations

import contextlib
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.harness import forges
from tests.harness.cluster_fixtures import Cluster, Operator, wait_for
from tests.harness.forges import Commit
from tests.harness.git_fixtures import RepoFactory
from tests.harness.gitrepo import WorkRepo
from tests.harness.gitserver import HttpGitServer
from tests.harness.manifests import config_map
from tests.harness.syncs import create_git_auth_secret, create_sync, put_secret, wait_condition

pytestmark = pytest.mark.e2e

SECRET_NAMESPACE = "gitferry-system"
SECRET_NAME = "gitferry-webhook"  # the one Secret manifests/webhook.yaml lets it read
MAIN = "refs/heads/main"
APPLIED_WITHIN = 10.0  # seconds: a generous bound; the p50 is printed


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def webhook_secret(cluster: Cluster, data: dict[str, str]) -> Iterator[None]:
    put_secret(cluster, SECRET_NAMESPACE, data, name=SECRET_NAME)
    try:
        yield
    finally:
        cluster.kubectl("delete", "secret", SECRET_NAME, "-n", SECRET_NAMESPACE, check=False)


def revisions(cluster: Cluster, namespace: str) -> Callable[[str], str]:
    """A quick reader of a sync's lastAppliedRevision (the API client, not a kubectl
    process per poll: the latency measured is gitferry's, not kubectl's)."""
    api = k8s.CustomObjectsApi(k8s_config.new_client_from_config(str(cluster.kubeconfig)))

    def read(name: str) -> str:
        obj: dict[str, Any] = api.get_namespaced_custom_object(
            "gitferry.dev", "v1alpha1", namespace, "gitrepositorysyncs", name
        )
        return str((obj.get("status") or {}).get("lastAppliedRevision", ""))

    return read


def commit_and_push(repo: WorkRepo, files: dict[str, str | bytes | None], branch: str) -> str:
    sha = repo.commit(files, f"change {sorted(files)}")
    repo.push(branch)
    return sha


def test_signed_pushes_apply_only_the_syncs_they_changed(
    operator_factory: Callable[..., Operator],
    namespace: str,
    repo_factory: RepoFactory,
    http_git_server: HttpGitServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    github_secret, gitlab_secret = "gh-" + "q7Kx2mVp9Lw4" * 3, "gl-" + "Zr8Tn3Hc6Bd1" * 3
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    operator = operator_factory(
        namespace,
        GITFERRY_WEBHOOK_SECRET=f"{SECRET_NAMESPACE}/{SECRET_NAME}",
        GITFERRY_WEBHOOK_ADDR=f"127.0.0.1:{port}",
    )
    cluster = operator.cluster
    wait_for("the webhook receiver to listen", lambda: "action=webhook-listen" in operator.log())

    # Repository `apps`: two apps, docs and a staging branch; repository `other`.
    apps, other = repo_factory("apps"), repo_factory("other")
    first = apps.commit(
        {
            "apps/web/cm.yaml": config_map("web", "1"),
            "apps/root/cm.yaml": config_map("root", "1"),
            "docs/cm.yaml": config_map("docs", "1"),
            "staging/cm.yaml": config_map("staging", "1"),
        },
        "first",
    )
    apps.push()
    apps.git("push", "-q", "origin", "refs/heads/main:refs/heads/staging")
    other_first = other.commit({"cm.yaml": config_map("other", "1")}, "first")
    other.push()
    create_git_auth_secret(cluster, namespace, http_git_server)
    url = http_git_server.url_for(apps.bare)
    common: dict[str, Any] = {"interval": "1h", "secretRef": {"name": "git-auth"}}
    create_sync(cluster, "web", namespace, url, path="apps/web", ref={"branch": "main"}, **common)
    create_sync(cluster, "root", namespace, url, path="apps/root", **common)  # default branch
    create_sync(cluster, "docs", namespace, url, path="docs", ref={"branch": "main"}, **common)
    create_sync(
        cluster, "staging", namespace, url, path="staging", ref={"branch": "staging"}, **common
    )
    create_sync(
        cluster, "other", namespace, http_git_server.url_for(other.bare), ref={"branch": "main"},
        **common,
    )  # fmt: skip
    for name in ("web", "root", "docs", "staging"):
        wait_condition(cluster, name, namespace, revision_sha=first)
    wait_condition(cluster, "other", namespace, revision_sha=other_first)
    applied = revisions(cluster, namespace)

    def wait_applied(name: str, sha: str, timeout: float = APPLIED_WITHIN) -> float:
        started = time.monotonic()
        wait_for(f"grs/{name} to apply {sha[:12]}", lambda: applied(name).endswith(sha),
                 timeout=timeout, interval=0.05)  # fmt: skip
        return time.monotonic() - started

    with webhook_secret(cluster, {"github": github_secret, "gitlab": gitlab_secret}):
        # Commits the interval (1h) would be the first to see: on the staging branch
        # and in the other repository. No webhook names them.
        apps.git("checkout", "-q", "-b", "staging")
        commit_and_push(apps, {"staging/cm.yaml": config_map("staging", "2")}, "staging")
        apps.checkout("main")
        commit_and_push(other, {"cm.yaml": config_map("other", "2")}, "main")

        # 1. GitHub: a push to main changing apps/web and apps/root.
        files = ["apps/web/cm.yaml", "apps/root/cm.yaml"]
        second = commit_and_push(apps, {f: config_map(f.split("/")[1], "2") for f in files}, "main")
        hook = forges.github_push(
            url, MAIN, second, [Commit(id=second, modified=files)], secret=github_secret
        )
        http_git_server.log.clear()
        assert forges.post(base, hook) == (202, {"event": "push", "kind": "push", "matched": 2})
        wait_applied("web", second)
        wait_applied("root", second)
        # Both asked git afresh, and one answer served both: one ref listing, one fetch.
        assert (http_git_server.log.count("ls-refs"), http_git_server.log.count("fetch")) == (1, 1)
        assert cluster.get("configmap", "web", namespace)["data"]["v"] == "2"  # type: ignore[index]
        time.sleep(3)  # time enough for a wrong match to show
        assert applied("docs").endswith(first), "docs: the push touched none of its path"
        assert applied("staging").endswith(first), "staging: another branch"
        assert applied("other").endswith(other_first), "other: another repository"
        line = [x for x in operator.log().splitlines() if "action=webhook " in x][-1]
        assert "forge=github" in line and "matched=2 untouched=1" in line, line

        # 2. GitLab: a push to main changing apps/web only; root is not reapplied.
        third = commit_and_push(apps, {"apps/web/cm.yaml": config_map("web", "3")}, "main")
        hook = forges.gitlab_push(
            url, MAIN, third, [Commit(id=third, modified=["apps/web/cm.yaml"])],
            secret=gitlab_secret, before=second,
        )  # fmt: skip
        assert forges.post(base, hook)[0] == 202
        wait_applied("web", third)
        time.sleep(2)
        assert applied("root").endswith(second) and applied("docs").endswith(first)

        # 3. Refused: another secret, no signature, GitHub's hook at GitLab's door.
        fourth = commit_and_push(apps, {"apps/web/cm.yaml": config_map("web", "4")}, "main")
        good = forges.github_push(
            url, MAIN, fourth, [Commit(id=fourth, modified=["apps/web/cm.yaml"])],
            secret=github_secret,
        )  # fmt: skip
        bad = forges.github_push(
            url, MAIN, fourth, [Commit(id=fourth, modified=["apps/web/cm.yaml"])],
            secret="not-" + github_secret,
        )  # fmt: skip
        assert forges.post(base, bad)[0] == 403
        assert forges.post(base, good.with_headers(X_Hub_Signature_256=None))[0] == 401
        assert forges.post(base, good, forge="gitlab")[0] == 401
        assert forges.post(base, good.with_body(good.body.replace(b"main", b"mein")))[0] == 403
        assert forges.post(base, good, forge="sourcehut")[0] == 404
        assert forges.post(base, good.with_body(b"x" * (1024 * 1024 + 1)))[0] == 413
        time.sleep(3)
        assert applied("web").endswith(third), "a refused webhook changed something"
        assert forges.post(base, good)[0] == 202
        wait_applied("web", fourth)

        # 4. Latency: push → applied, ten times.
        took = []
        for n in range(5, 15):
            started = time.monotonic()
            sha = commit_and_push(apps, {"apps/web/cm.yaml": config_map("web", str(n))}, "main")
            hook = forges.github_push(
                url, MAIN, sha, [Commit(id=sha, modified=["apps/web/cm.yaml"])],
                secret=github_secret,
            )  # fmt: skip
            assert forges.post(base, hook)[0] == 202
            wait_applied("web", sha)
            took.append(time.monotonic() - started)
        with capsys.disabled():
            print(
                f"\npush → applied over {len(took)} webhooks: p50 {statistics.median(took):.2f}s, "
                f"min {min(took):.2f}s, max {max(took):.2f}s"
            )
        assert max(took) < APPLIED_WITHIN

    # The secrets are in no log line, command line or environment of the operator.
    log = operator.log()
    assert github_secret not in log and gitlab_secret not in log
    assert operator.proc is not None
    for what in ("cmdline", "environ"):
        raw = open(f"/proc/{operator.proc.pid}/{what}", "rb").read()  # noqa: SIM115
        assert github_secret.encode() not in raw and gitlab_secret.encode() not in raw, what


def test_an_address_it_cannot_listen_on_stops_the_operator_saying_so(
    gitferry_installed: Cluster, namespace: str, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {
            "GITFERRY_WEBHOOK_SECRET": f"{SECRET_NAMESPACE}/{SECRET_NAME}",
            "GITFERRY_WEBHOOK_ADDR": f"127.0.0.1:{taken.getsockname()[1]}",
        }
        operator = Operator(gitferry_installed, tmp_path, namespace=namespace, env=env)
        try:
            with contextlib.suppress(AssertionError):  # it may be gone before start() looks
                operator.start()
            assert operator.proc is not None
            wait_for("the operator to exit", lambda: operator.proc.poll() is not None, 60)  # type: ignore[union-attr]
        finally:
            operator.stop()
    assert "GITFERRY_WEBHOOK_ADDR: cannot listen" in operator.log()
