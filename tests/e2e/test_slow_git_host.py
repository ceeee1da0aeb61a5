"""One slow git host starves nobody: eight syncs of a host that accepts
connections and never answers, and one healthy sync whose push is applied
within seconds; the stuck syncs say GitFetchFailed "timed out after …"."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.harness.cluster_fixtures import Operator
from tests.harness.git_fixtures import RepoFactory
from tests.harness.manifests import config_map
from tests.harness.syncs import condition, create_sync, request_reconcile, wait_condition

pytestmark = pytest.mark.e2e


class BlackHole:
    """A TCP server on loopback that accepts every connection and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)  # held open, never read from or written to

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    try:
        yield hole
    finally:
        hole.stop()


def test_a_host_that_never_answers_starves_no_other_sync(
    operator_factory: Callable[..., Operator],
    namespace: str,
    repo_factory: RepoFactory,
    black_hole: BlackHole,
) -> None:
    # Four reconcile threads (the default), git gives up on one process after 10s.
    operator = operator_factory(namespace, GITFERRY_FETCH_TIMEOUT="10")
    cluster = operator.cluster
    stuck = [f"stuck-{i}" for i in range(8)]
    for i, name in enumerate(stuck):
        url = f"http://127.0.0.1:{black_hole.port}/team-{i}/deploy.git"
        create_sync(cluster, name, namespace, url, interval="1m", retryInterval="5s")

    repo = repo_factory("healthy")
    repo.commit({"cm.yaml": config_map("healthy", "1")}, "first")
    repo.push()
    create_sync(cluster, "healthy", namespace, repo.bare.file_url, interval="1h")
    # The stuck syncs are at the black hole already; the healthy one still gets a turn.
    wait_condition(cluster, "healthy", namespace, timeout=30)

    sha = repo.commit({"cm.yaml": config_map("healthy", "2")}, "second")
    repo.push()
    started = time.monotonic()
    request_reconcile(cluster, "healthy", namespace)
    wait_condition(cluster, "healthy", namespace, revision_sha=sha, timeout=30)
    applied_in = time.monotonic() - started
    assert (cluster.get("configmap", "healthy", namespace) or {})["data"]["v"] == "2"
    assert applied_in < 15, f"the push took {applied_in:.1f}s to apply behind a black hole"

    for name in stuck:
        sync = wait_condition(
            cluster, name, namespace, status="False", reason="GitFetchFailed", timeout=90
        )
        message = condition(sync, "Ready")["message"]  # type: ignore[index]
        assert "timed out after 10s" in message, message
    print(f"healthy push applied in {applied_in:.1f}s; {len(black_hole.accepted)} connections")
