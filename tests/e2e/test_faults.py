"""Faults: nothing lost, nobody starved.

Each case breaks something under a running sync — the operator killed at random
points of a reconcile, the API server restarted, the git server down, slow or
resetting connections, the cache's disk full, the sync's own namespace deleted,
a CRD deleted under its custom resources — and ends with nothing lost and every
sync Ready again. Every process and mount a test starts is its own, on loopback,
stopped by pid or unmounted before the test ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import secrets
import select
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.harness.cluster_fixtures import Cluster, Operator, wait_for
from tests.harness.controlplane import ControlPlane
from tests.harness.git_fixtures import RepoFactory
from tests.harness.gitrepo import BareRepo, WorkRepo
from tests.harness.gitserver import HttpGitServer, ProcId, descendants, is_running
from tests.harness.manifests import config_map, in_namespace, widget, widget_crd
from tests.harness.syncs import (
    PART_OF,
    SYNC_NAME,
    SYNC_NAMESPACE,
    applyset_id,
    condition,
    create_git_auth_secret,
    create_sync,
    events_for,
    inventory_ids,
    labels_of,
    request_reconcile,
    wait_condition,
)

pytestmark = pytest.mark.e2e

CI = os.environ.get("CI") == "true"
SEED_ENV = "GITFERRY_FAULT_SEED"


def prerequisite_missing(why: str) -> None:
    """Under CI a missing prerequisite fails the test; elsewhere it is left out."""
    if CI:
        pytest.fail(f"CI=true: {why}")
    pytest.skip(why)


# --- what git holds ------------------------------------------------------------


def cm_name(i: int) -> str:
    return f"cm-{i:03d}"


def configmap_files(
    names: list[str], v: str, *, per_file: int = 50, prefix: str = ""
) -> dict[str, str]:
    """`names` as ConfigMaps holding `v`, `per_file` to a multi-document file."""
    files = {}
    for k in range(0, len(names), per_file):
        docs = [config_map(n, v) for n in names[k : k + per_file]]
        files[f"{prefix}part-{k // per_file}.yaml"] = "\n---\n".join(docs) + "\n"
    return files


def push(repo: WorkRepo, files: Mapping[str, str | bytes | None], message: str) -> str:
    sha = repo.commit(files, message)
    repo.push()
    return sha


# --- what the cluster says -----------------------------------------------------


ROOT_CA = "kube-root-ca.crt"


def live_configmaps(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    """Every ConfigMap of `namespace` by name, read at once (not one kubectl per object),
    but kube-root-ca.crt: kube-controller-manager publishes it into each namespace
    when it gets to it, seconds later on a busy machine (a fresh-clone CI run saw it
    appear between two reads)."""
    out = cluster.kubectl("get", "configmaps", "-n", namespace, "-o", "json").stdout
    items = json.loads(out)["items"]
    return {cm["metadata"]["name"]: cm for cm in items if cm["metadata"]["name"] != ROOT_CA}


def labelled_everywhere(cluster: Cluster, resource: str, sync: str, namespace: str) -> set[str]:
    """`namespace/name` of every `resource` in the cluster that carries the sync's labels."""
    selector = f"{SYNC_NAME}={sync},{SYNC_NAMESPACE}={namespace}"
    out = cluster.kubectl("get", resource, "-A", "-l", selector, "-o", "json").stdout
    return {
        f"{o['metadata'].get('namespace', '')}/{o['metadata']['name']}"
        for o in json.loads(out)["items"]
    }


def uids(objects: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: obj["metadata"]["uid"] for name, obj in objects.items()}


def cm_ids(namespace: str, names: Iterable[str]) -> set[str]:
    return {f"{namespace}_{n}__ConfigMap" for n in names}


def operator_deletes(cluster: Cluster, operator: Operator, since: float) -> list[str]:
    """`resource/namespace/name` of every delete gitferry's identity made since `since`
    (from the local control plane's audit log)."""
    out = []
    for e in cluster.audit_writes(operator.user, since):
        ref = e.get("objectRef") or {}
        if e["verb"] == "delete" and (e.get("responseStatus") or {}).get("code", 500) < 300:
            out.append(f"{ref.get('resource')}/{ref.get('namespace', '')}/{ref.get('name')}")
    return sorted(out)


def read_sync(cluster: Cluster, namespace: str) -> dict[str, Any]:
    """The sync `web` of `namespace`, as the API server has it now."""
    sync = cluster.get("grs", "web", namespace)
    assert sync is not None
    return sync


def wait_failed(cluster: Cluster, namespace: str, reasons: tuple[str, ...]) -> dict[str, Any]:
    """The sync `web` once it is Ready=False for one of `reasons`."""

    def failed() -> dict[str, Any] | None:
        sync = cluster.get("grs", "web", namespace)
        c = condition(sync, "Ready")
        return sync if c and c["status"] == "False" and c["reason"] in reasons else None

    try:
        return wait_for(f"Ready=False with {'/'.join(reasons)}", failed, 60)  # type: ignore[no-any-return]
    except AssertionError as e:
        sync = cluster.get("grs", "web", namespace) or {}
        raise AssertionError(f"{e}\nstatus: {json.dumps(sync.get('status'), indent=1)}") from None


def assert_kept(
    cluster: Cluster,
    namespace: str,
    sync: dict[str, Any],
    sha: str,
    before: dict[str, dict[str, Any]],
    inventory: set[str],
) -> None:
    """The failing sync kept the last applied revision, its inventory and its objects
    (the same uid, the same data) as they were `before`."""
    assert sync["status"]["lastAppliedRevision"].endswith(sha), sync["status"]
    assert inventory_ids(sync) == inventory
    now = live_configmaps(cluster, namespace)
    changed = {
        n
        for n, obj in before.items()
        if n not in now
        or now[n]["metadata"]["uid"] != obj["metadata"]["uid"]
        or now[n].get("data") != obj.get("data")
    }
    assert not changed, f"objects of the last applied revision changed or went: {changed}"


def internal_errors(cluster: Cluster, name: str, namespace: str) -> list[str]:
    """Warnings that say gitferry itself failed (ReconciliationFailed: a bug)."""
    return [
        e["message"]
        for e in events_for(cluster, name, namespace)
        if e["reason"] == "ReconciliationFailed"
    ]


# --- processes -------------------------------------------------------------------


def kill_operator(op: Operator) -> None:
    """SIGKILL the operator, then whatever git it had started (new sessions of
    their own that outlive it), each by pid."""
    assert op.proc is not None
    children: list[ProcId] = descendants(op.proc.pid)
    op.stop(kill=True)
    for child in children:
        if is_running(child):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
    wait_for(
        "the killed operator's git processes to end",
        lambda: not any(is_running(c) for c in children),
        10,
        0.05,
    )


def reconcile_seconds(log: str, namespace: str) -> float:
    """How long the first successful reconcile in `log` took, from its fetch."""
    found = re.search(rf"sync={namespace}/\S+ action=reconcile result=ok .*duration_ms=(\d+)", log)
    assert found, f"no successful reconcile in the log:\n{log[-2000:]}"
    return int(found.group(1)) / 1000


def wait_logged(op: Operator, text: str) -> None:
    wait_for(f"the operator to log {text}", lambda: text in op.log(), 60, 0.005)


# The last stage logged → what was running when the operator was killed.
KILLED_DURING = {
    "start": "start-up or fetch",
    "fetch": "render",
    "render": "ownership or apply",
    "apply": "prune",
    "prune": "the status write",
    "ok": "nothing (the reconcile had ended)",
}


def stage_reached(log: str, namespace: str) -> str:
    """The last stage the operator logged for syncs of `namespace` (README's
    stages: fetch → render → apply → prune → ok)."""
    stage = "start"
    for line in log.splitlines():
        if f"sync={namespace}/" not in line:
            continue
        found = re.search(r"action=(fetch|render|apply|prune)\b|action=reconcile result=ok", line)
        if found:
            stage = found.group(1) or "ok"
    return stage


# --- 1. the operator killed twenty times ------------------------------------------

OBJECTS = 200
KILLS = 20
EXTRAS_PER_ROUND = 5


def test_operator_killed_twenty_times_mid_reconcile_loses_and_leaks_nothing(
    operator_factory: Callable[..., Operator], namespace: str, repo_factory: RepoFactory
) -> None:
    seed = int(os.environ.get(SEED_ENV) or secrets.randbits(32))
    print(f"seed={seed} (set {SEED_ENV}={seed} to repeat these kill points)")
    rng = random.Random(seed)
    names = [cm_name(i) for i in range(OBJECTS)]
    repo = repo_factory("killed")
    sha = push(repo, configmap_files(names, "0", prefix="deploy/"), "200 configmaps")

    first = operator_factory(namespace)
    cluster = first.cluster
    create_sync(cluster, "web", namespace, repo.bare.file_url, path="deploy")
    wait_condition(cluster, "web", namespace, revision_sha=sha, timeout=120)
    # How long one whole reconcile of every object takes here, from its fetch on.
    span = reconcile_seconds(first.log(), namespace)
    kill_operator(first)

    reached: Counter[str] = Counter()
    for round_ in range(1, KILLS + 1):
        # Every round changes all 200 objects and swaps five short-lived ones, so
        # that each start has a whole apply and a prune to do when it is killed.
        extras = [f"extra-{round_}-{j}" for j in range(EXTRAS_PER_ROUND)]
        files: dict[str, str | bytes | None] = {
            **configmap_files(names, str(round_), prefix="deploy/"),
            "deploy/extra.yaml": "\n---\n".join(config_map(n) for n in extras) + "\n",
        }
        push(repo, files, f"round {round_}")
        op = operator_factory(namespace)
        # A kill lands right after the start, anywhere from the fetch to the usual
        # end of the reconcile, or in the short prune and status writes after apply.
        when = rng.choices(["start", "fetch", "apply"], weights=[2, 5, 3])[0]
        delay = rng.uniform(0.0, {"start": 0.3, "fetch": span, "apply": 0.06}[when])
        if when != "start":
            wait_logged(op, f"action={when}")
        time.sleep(delay)
        during = KILLED_DURING[stage_reached(op.log(), namespace)]
        kill_operator(op)
        reached[during] += 1
        print(f"kill {round_:2d}: {delay:4.2f}s after its {when}, during {during}")
    print(f"one reconcile takes {span:.2f}s; the kills landed during: {dict(reached)}")

    final_sha = push(
        repo,
        {**configmap_files(names, "final", prefix="deploy/"), "deploy/extra.yaml": None},
        "final",
    )
    last = operator_factory(namespace)
    sync = wait_condition(cluster, "web", namespace, revision_sha=final_sha, timeout=120)

    # Every object exactly as git says, all 200 in the inventory, nothing else labelled.
    live = live_configmaps(cluster, namespace)
    wrong = [n for n in names if (live.get(n) or {}).get("data") != {"v": "final"}]
    assert not wrong, f"{len(wrong)} object(s) differ from git, e.g. {wrong[:5]}"
    for n in names:
        labels = labels_of(live[n])
        assert labels.get(SYNC_NAME) == "web" and labels.get(SYNC_NAMESPACE) == namespace, n
        assert labels.get(PART_OF) == applyset_id("web", namespace), n
    assert inventory_ids(sync) == cm_ids(namespace, names)
    stray = labelled_everywhere(cluster, "configmaps", "web", namespace) - {
        f"{namespace}/{n}" for n in names
    }
    assert not stray, f"objects outside git still carry the sync's labels: {sorted(stray)}"

    # A later commit that removes 50 prunes exactly those 50.
    removed = sorted(rng.sample(names, 50))
    kept = [n for n in names if n not in removed]
    before = uids(live)
    since = time.time()
    files = {f"deploy/part-{k}.yaml": None for k in range(OBJECTS // 50)}
    sha_150 = push(repo, {**files, **configmap_files(kept, "final", prefix="deploy/")}, "remove 50")
    sync = wait_condition(cluster, "web", namespace, revision_sha=sha_150, timeout=120)
    live = live_configmaps(cluster, namespace)
    assert not set(removed) & set(live), f"not pruned: {sorted(set(removed) & set(live))}"
    assert {n: live[n]["metadata"]["uid"] for n in kept if n in live} == {
        n: before[n] for n in kept
    }, "an object git still holds was deleted or replaced"
    assert inventory_ids(sync) == cm_ids(namespace, kept)
    if cluster.has_audit_log():
        assert operator_deletes(cluster, last, since) == sorted(
            f"configmaps/{namespace}/{n}" for n in removed
        )


# --- 2. the API server restarted ----------------------------------------------------


def local_control_plane(cluster: Cluster) -> ControlPlane:
    if cluster.control_plane is None:
        prerequisite_missing("restarting kube-apiserver needs the local control plane")
    assert cluster.control_plane is not None
    return cluster.control_plane


def test_api_server_restarted_mid_reconcile_recovers_and_prunes_only_what_left_git(
    operator_factory: Callable[..., Operator], namespace: str, repo_factory: RepoFactory
) -> None:
    names = [cm_name(i) for i in range(100)]
    repo = repo_factory("apiserver")
    sha = push(repo, configmap_files(names, "1"), "100 configmaps")
    operator = operator_factory(namespace)
    cluster = operator.cluster
    control_plane = local_control_plane(cluster)
    create_sync(cluster, "web", namespace, repo.bare.file_url)
    wait_condition(cluster, "web", namespace, revision_sha=sha, timeout=120)
    before = uids(live_configmaps(cluster, namespace))

    # A commit that changes 90 objects and removes 10; the API server goes away as
    # soon as gitferry has fetched it, and comes back about five seconds later.
    kept, removed = names[:90], names[90:]
    since = time.time()
    sha2 = push(repo, configmap_files(kept, "2"), "change 90, remove 10")
    request_reconcile(cluster, "web", namespace)
    wait_for(
        "gitferry to fetch the new commit",
        lambda: f"sha1:{sha2} action=fetch" in operator.log(),
        60,
        0.05,
    )
    down_at = time.monotonic()
    try:
        control_plane.stop_apiserver(grace=2)
        time.sleep(3)
    finally:
        control_plane.start_apiserver()
    print(f"kube-apiserver was down for {time.monotonic() - down_at:.1f}s")

    sync = wait_condition(cluster, "web", namespace, revision_sha=sha2, timeout=120)
    assert operator.proc is not None and operator.proc.poll() is None, "the operator exited"
    outcomes = re.findall(r"action=reconcile (?:reason=\w+|result=ok)", operator.log())
    print(f"reconciles since the start: {outcomes}")
    live = live_configmaps(cluster, namespace)
    assert {n: live[n]["data"] for n in kept if n in live} == {n: {"v": "2"} for n in kept}
    assert {n: live[n]["metadata"]["uid"] for n in kept} == {n: before[n] for n in kept}, (
        "an object git still holds was deleted and created again"
    )
    assert not set(removed) & set(live)
    assert inventory_ids(sync) == cm_ids(namespace, kept)
    assert operator_deletes(cluster, operator, since) == sorted(
        f"configmaps/{namespace}/{n}" for n in removed
    )
    assert not internal_errors(cluster, "web", namespace)


# --- 3. the git server down, slow, resetting connections ---------------------------

# Short so that the tests are: a git process gives up after 3s, and a failed ask of
# the remote is shared for 1s only (the retries below ask git again).
GIT_FAULT_ENV = {"GITFERRY_FETCH_TIMEOUT": "3", "GITFERRY_GIT_FAILURE_TTL": "1"}


class ResettingProxy:
    """A TCP proxy on loopback to `upstream_port`. While `resetting` is set, every
    new connection is accepted and at once reset (SO_LINGER 0: an RST, not a FIN)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.resetting = threading.Event()
        self.resets = 0
        self._stopped = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            if self.resetting.is_set():
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                self.resets += 1
                continue
            relay = threading.Thread(target=self._relay, args=(conn,), daemon=True)
            self._threads.append(relay)
            relay.start()

    def _relay(self, client: socket.socket) -> None:
        with contextlib.ExitStack() as stack:
            stack.enter_context(client)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), 10)
            except OSError:
                return
            stack.enter_context(upstream)
            peer = {client: upstream, upstream: client}
            open_ = [client, upstream]
            while open_ and not self._stopped.is_set():
                readable, _, _ = select.select(open_, [], [], 0.1)
                for s in readable:
                    try:
                        data = s.recv(65536)
                        if data:
                            peer[s].sendall(data)
                            continue
                        peer[s].shutdown(socket.SHUT_WR)
                    except OSError:
                        return
                    open_.remove(s)

    def stop(self) -> None:
        self._stopped.set()
        for t in self._threads:
            t.join(5)
        self.sock.close()


@pytest.fixture
def resetting_proxy(http_git_server: HttpGitServer) -> Iterator[ResettingProxy]:
    proxy = ResettingProxy(http_git_server.port)
    try:
        yield proxy
    finally:
        proxy.stop()


def synced_over_http(
    operator_factory: Callable[..., Operator],
    namespace: str,
    repo_factory: RepoFactory,
    server: HttpGitServer,
    url: Callable[[BareRepo], str] | None = None,
) -> tuple[Operator, WorkRepo, str]:
    """gitferry syncing a, b and c from `server` (basic auth), Ready; the operator,
    the repo and the applied commit."""
    operator = operator_factory(namespace, **GIT_FAULT_ENV)
    cluster = operator.cluster
    repo = repo_factory("web")
    sha = push(repo, {n + ".yaml": config_map(n) for n in "abc"}, "a, b and c")
    create_git_auth_secret(cluster, namespace, server)
    create_sync(
        cluster, "web", namespace, (url or server.url_for)(repo.bare),
        secretRef={"name": "git-auth"}, interval="2s", retryInterval="1s",
    )  # fmt: skip
    wait_condition(cluster, "web", namespace, revision_sha=sha)
    return operator, repo, sha


def push_a_change_that_would_prune(repo: WorkRepo) -> str:
    """a changes and b leaves git: applied, it would write a and delete b."""
    return push(repo, {"a.yaml": config_map("a", "2"), "b.yaml": None}, "a is 2, b goes")


def assert_recovers(
    cluster: Cluster, namespace: str, sha2: str, before: dict[str, dict[str, Any]]
) -> None:
    """The waiting push is applied: a is 2, b is pruned, c was never touched."""
    sync = wait_condition(cluster, "web", namespace, revision_sha=sha2, timeout=60)
    live = live_configmaps(cluster, namespace)
    assert live["a"]["data"] == {"v": "2"}
    assert "b" not in live
    assert uids({n: live[n] for n in "ac"}) == uids({n: before[n] for n in "ac"})
    assert inventory_ids(sync) == cm_ids(namespace, ["a", "c"])


def test_git_server_down_keeps_the_last_revision_even_across_an_operator_restart(
    operator_factory: Callable[..., Operator],
    namespace: str,
    repo_factory: RepoFactory,
    http_git_server: HttpGitServer,
) -> None:
    operator, repo, sha = synced_over_http(
        operator_factory, namespace, repo_factory, http_git_server
    )
    cluster = operator.cluster
    before = live_configmaps(cluster, namespace)

    http_git_server.down()
    sha2 = push_a_change_that_would_prune(repo)
    request_reconcile(cluster, "web", namespace)
    sync = wait_failed(cluster, namespace, ("GitFetchFailed",))
    message = condition(sync, "Ready")["message"]  # type: ignore[index]
    assert str(http_git_server.port) in message and "failed" in message, message
    assert_kept(cluster, namespace, sync, sha, before, cm_ids(namespace, "abc"))
    print(f"status: {message}")

    # A restart while git is down starts with an empty cache: still nothing pruned.
    operator.stop()
    restarted = operator_factory(namespace, **GIT_FAULT_ENV)
    wait_for(
        "the restarted operator to fail to fetch",
        lambda: "reason=GitFetchFailed" in restarted.log(),
        60,
    )
    assert_kept(cluster, namespace, read_sync(cluster, namespace), sha, before,
                cm_ids(namespace, "abc"))  # fmt: skip

    http_git_server.up()
    assert_recovers(cluster, namespace, sha2, before)


def test_slow_git_server_times_out_keeps_everything_and_a_push_lands_once_it_answers(
    operator_factory: Callable[..., Operator],
    namespace: str,
    repo_factory: RepoFactory,
    http_git_server: HttpGitServer,
) -> None:
    operator, repo, sha = synced_over_http(
        operator_factory, namespace, repo_factory, http_git_server
    )
    cluster = operator.cluster
    before = live_configmaps(cluster, namespace)

    with http_git_server.hold():
        sha2 = push_a_change_that_would_prune(repo)
        request_reconcile(cluster, "web", namespace)
        http_git_server.wait_held(1)
        sync = wait_failed(cluster, namespace, ("GitFetchFailed",))
        message = condition(sync, "Ready")["message"]  # type: ignore[index]
        assert "timed out after 3s" in message, message
        assert_kept(cluster, namespace, sync, sha, before, cm_ids(namespace, "abc"))
        print(f"held {http_git_server.held} request(s); status: {message}")
    assert_recovers(cluster, namespace, sha2, before)


def test_git_connections_reset_keep_everything_and_a_push_lands_once_they_stop(
    operator_factory: Callable[..., Operator],
    namespace: str,
    repo_factory: RepoFactory,
    http_git_server: HttpGitServer,
    resetting_proxy: ResettingProxy,
) -> None:
    def through_proxy(bare: BareRepo) -> str:
        return http_git_server.url_for(bare).replace(
            f":{http_git_server.port}/", f":{resetting_proxy.port}/"
        )

    operator, repo, sha = synced_over_http(
        operator_factory, namespace, repo_factory, http_git_server, through_proxy
    )
    cluster = operator.cluster
    before = live_configmaps(cluster, namespace)

    resetting_proxy.resetting.set()
    sha2 = push_a_change_that_would_prune(repo)
    request_reconcile(cluster, "web", namespace)
    sync = wait_failed(cluster, namespace, ("GitFetchFailed", "AuthenticationFailed"))
    message = condition(sync, "Ready")["message"]  # type: ignore[index]
    assert condition(sync, "Ready")["reason"] == "GitFetchFailed", message  # type: ignore[index]
    # curl's words depend on when the RST arrives: during the connect or after it.
    assert f":{resetting_proxy.port}/web.git" in message, message
    assert re.search(r"reset by peer|failed to connect|empty reply", message, re.I), message
    assert_kept(cluster, namespace, sync, sha, before, cm_ids(namespace, "abc"))
    print(f"{resetting_proxy.resets} connection(s) reset; status: {message}")

    resetting_proxy.resetting.clear()
    assert_recovers(cluster, namespace, sha2, before)


# --- 4. the cache's disk full ------------------------------------------------------


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` for the block; unmounted after it."""
    path.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if mounted.returncode != 0:
        prerequisite_missing(
            f"a small cache volume needs `mount -t tmpfs` (root): {mounted.stderr.strip()}"
        )
    try:
        yield path
    finally:
        unmount(path)


def unmount(path: Path) -> None:
    """Unmount `path`, waiting up to 10s while it is busy; past that, detach it
    lazily (so nothing stays mounted) and fail naming why."""
    why = ""
    for _ in range(20):
        done = subprocess.run(["umount", str(path)], capture_output=True, text=True, timeout=30)
        if done.returncode == 0:
            return
        why = done.stderr.strip()
        time.sleep(0.5)
    subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)
    raise AssertionError(f"{path} stayed busy ({why}); it was detached lazily")


MIB = 1 << 20


def largest(root: Path, count: int = 3) -> list[str]:
    """The biggest files under `root` with their sizes, for a failure message."""
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    files.sort(key=lambda p: p.stat().st_size, reverse=True)
    return [f"{p.relative_to(root)} ({p.stat().st_size / MIB:.1f} MiB)" for p in files[:count]]


def big_files(count: int) -> dict[str, str | bytes | None]:
    """`count` MiB of random bytes (git cannot compress them) outside spec.path."""
    return {f"assets/blob-{i}.bin": os.urandom(MIB) for i in range(count)}


def synced_with_cache(
    operator_factory: Callable[..., Operator],
    namespace: str,
    repo_factory: RepoFactory,
    cache: Path,
) -> tuple[Operator, WorkRepo, str]:
    operator = operator_factory(namespace, GITFERRY_CACHE_DIR=str(cache), **GIT_FAULT_ENV)
    repo = repo_factory("web")
    sha = push(repo, {"deploy/a.yaml": config_map("a"), "deploy/b.yaml": config_map("b")}, "1")
    create_sync(operator.cluster, "web", namespace, repo.bare.file_url, path="deploy",
                interval="2s", retryInterval="1s")  # fmt: skip
    wait_condition(operator.cluster, "web", namespace, revision_sha=sha)
    return operator, repo, sha


def fill_the_cache(cluster: Cluster, namespace: str, repo: WorkRepo, sha: str) -> dict[str, Any]:
    """Push 3 MiB beside a change that would prune, onto a 2 MiB cache: the sync says
    GitFetchFailed naming the full disk, and keeps everything of `sha`."""
    before = live_configmaps(cluster, namespace)
    push(repo, {**big_files(3), "deploy/a.yaml": config_map("a", "2"), "deploy/b.yaml": None},
         "3 MiB of assets; a is 2, b goes")  # fmt: skip
    request_reconcile(cluster, "web", namespace)
    sync = wait_failed(cluster, namespace, ("GitFetchFailed",))
    message = condition(sync, "Ready")["message"]  # type: ignore[index]
    assert "No space left on device" in message, message
    assert_kept(cluster, namespace, sync, sha, before, cm_ids(namespace, "ab"))
    print(f"status: {message}")
    return sync


def test_full_cache_disk_is_a_fetch_failure_that_keeps_everything(
    operator_factory: Callable[..., Operator],
    namespace: str,
    repo_factory: RepoFactory,
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "small-cache", "2m") as cache:
        operator, repo, sha = synced_with_cache(operator_factory, namespace, repo_factory, cache)
        try:
            fill_the_cache(operator.cluster, namespace, repo, sha)
            # And it stays so on the retries: nothing pruned, the operator still runs.
            time.sleep(4)
            sync = read_sync(operator.cluster, namespace)
            assert condition(sync, "Ready")["reason"] == "GitFetchFailed"  # type: ignore[index]
            assert inventory_ids(sync) == cm_ids(namespace, "ab")
            assert operator.proc is not None and operator.proc.poll() is None
        finally:
            operator.stop()  # before the unmount: it holds files in the cache


def test_full_cache_disk_recovers_once_the_big_commit_is_reverted(
    operator_factory: Callable[..., Operator],
    namespace: str,
    repo_factory: RepoFactory,
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "small-cache", "2m") as cache:
        operator, repo, sha = synced_with_cache(operator_factory, namespace, repo_factory, cache)
        try:
            cluster = operator.cluster
            before = uids(live_configmaps(cluster, namespace))
            fill_the_cache(cluster, namespace, repo, sha)
            repo.git("revert", "--no-edit", "HEAD")
            repo.push()
            sha3 = repo.head()
            try:
                sync = wait_condition(cluster, "web", namespace, revision_sha=sha3, timeout=30)
            except AssertionError as e:
                raise AssertionError(f"{e}\nthe cache's largest files: {largest(cache)}") from None
            assert uids(live_configmaps(cluster, namespace)) == before
            assert inventory_ids(sync) == cm_ids(namespace, "ab")
        finally:
            operator.stop()


# --- 5. the sync's namespace deleted under it ----------------------------------------


@contextlib.contextmanager
def cleaned_up(cluster: Cluster, *objects: tuple[str, str]) -> Iterator[None]:
    """Objects a test made outside its namespace, deleted at the end."""
    try:
        yield
    finally:
        for kind, name in objects:
            cluster.kubectl("delete", kind, name, "--wait=false", check=False)


def cluster_role(name: str) -> str:
    return json.dumps(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [],
        }
    )


def test_deleting_the_syncs_namespace_orphans_its_objects_elsewhere(
    operator_factory: Callable[..., Operator], namespace: str, repo_factory: RepoFactory
) -> None:
    operator = operator_factory(namespace)
    cluster = operator.cluster
    apps = f"{namespace}-apps"
    role = f"gitferry-fault-{namespace}"
    cluster.kubectl("create", "namespace", apps)
    with cleaned_up(cluster, ("namespace", apps), ("clusterrole", role)):
        repo = repo_factory("web")
        sha = push(
            repo,
            {
                "here.yaml": config_map("here"),
                "there.yaml": in_namespace(config_map("there"), apps),
                "role.yaml": cluster_role(role),
            },
            "one object in each place",
        )
        create_sync(cluster, "web", namespace, repo.bare.file_url)
        wait_condition(cluster, "web", namespace, revision_sha=sha)
        elsewhere = {
            ("configmap", "there", apps): cluster.get("configmap", "there", apps),
            ("clusterrole", role, None): cluster.get("clusterrole", role),
        }

        # Deleting the sync's namespace is an uninstall of that sync, not a prune.
        since = time.time()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")
        wait_for(
            f"namespace {namespace} to finish deleting",
            lambda: cluster.get("namespace", namespace) is None,
            90,
        )
        for (kind, name, ns), obj in elsewhere.items():
            now = cluster.get(kind, name, ns)
            assert now is not None, f"{kind}/{name} was pruned with the sync's namespace"
            assert now["metadata"]["uid"] == obj["metadata"]["uid"]  # type: ignore[index]
            assert now["metadata"].get("deletionTimestamp") is None
            assert labels_of(now).get(SYNC_NAME) == "web", "orphaned objects keep the labels"
        if cluster.has_audit_log():
            assert operator_deletes(cluster, operator, since) == []
        assert re.search(r"action=delete orphaned=true why=its Namespace", operator.log())

        # The operator runs on, without a traceback, and serves the namespace again.
        time.sleep(3)
        assert operator.proc is not None and operator.proc.poll() is None, "the operator exited"
        cluster.kubectl("create", "namespace", namespace)
        again = repo_factory("again")
        sha_again = push(again, {"cm.yaml": config_map("again")}, "again")
        create_sync(cluster, "again", namespace, again.bare.file_url)
        wait_condition(cluster, "again", namespace, revision_sha=sha_again)
        assert "Traceback" not in operator.log(), operator.log()[-4000:]


# --- 6. a CRD deleted and created again --------------------------------------------


def widgets(cluster: Cluster, group: str, namespace: str) -> dict[str, dict[str, Any]]:
    out = cluster.kubectl("get", f"widgets.{group}", "-n", namespace, "-o", "json").stdout
    return {w["metadata"]["name"]: w for w in json.loads(out)["items"]}


def delete_crd(cluster: Cluster, crd: str) -> None:
    """What someone else does: the API server deletes its custom resources with it."""
    cluster.kubectl("delete", "crd", crd, "--wait=true", "--timeout=60s")


def assert_widgets_back(
    cluster: Cluster, namespace: str, group: str, old: dict[str, str], cm_uid: str
) -> None:
    def back() -> dict[str, dict[str, Any]] | None:
        found = widgets(cluster, group, namespace)
        return found if set(found) == {"w1", "w2"} else None

    found = wait_for("the sync to create its Widgets again", back, 60)
    assert all(found[n]["metadata"]["uid"] != old[n] for n in found), "not created anew?"
    assert {n: w["spec"]["size"] for n, w in found.items()} == {"w1": 1, "w2": 2}
    assert all(labels_of(w).get(SYNC_NAME) == "web" for w in found.values())
    sync = wait_condition(cluster, "web", namespace, timeout=60)
    assert live_configmaps(cluster, namespace)["settings"]["metadata"]["uid"] == cm_uid
    assert {f"{namespace}_w1_{group}_Widget", f"{namespace}_w2_{group}_Widget"} <= inventory_ids(
        sync
    )


def widget_files(group: str) -> dict[str, str | bytes | None]:
    return {
        "w1.yaml": widget(group, "w1", 1),
        "w2.yaml": widget(group, "w2", 2),
        "settings.yaml": config_map("settings"),
    }


def test_crd_from_git_deleted_by_someone_is_created_again_with_its_resources(
    operator_factory: Callable[..., Operator], namespace: str, repo_factory: RepoFactory
) -> None:
    operator = operator_factory(namespace)
    cluster = operator.cluster
    group = f"{namespace}.example.com"
    crd = f"widgets.{group}"
    with cleaned_up(cluster, ("crd", crd)):
        repo = repo_factory("web")
        sha = push(repo, {"crd.yaml": widget_crd(group), **widget_files(group)}, "widgets")
        create_sync(cluster, "web", namespace, repo.bare.file_url)
        wait_condition(cluster, "web", namespace, revision_sha=sha)
        old = uids(widgets(cluster, group, namespace))
        cm_uid = live_configmaps(cluster, namespace)["settings"]["metadata"]["uid"]

        since = time.time()
        delete_crd(cluster, crd)
        wait_for("gitferry to create the CRD again", lambda: cluster.get("crd", crd), 60)
        assert_widgets_back(cluster, namespace, group, old, cm_uid)
        if cluster.has_audit_log():
            assert operator_deletes(cluster, operator, since) == []
        assert not internal_errors(cluster, "web", namespace)


def test_crd_deleted_and_created_again_by_someone_else_gets_its_resources_back(
    operator_factory: Callable[..., Operator], namespace: str, repo_factory: RepoFactory
) -> None:
    operator = operator_factory(namespace)
    cluster = operator.cluster
    group = f"{namespace}.example.com"
    crd = f"widgets.{group}"
    with cleaned_up(cluster, ("crd", crd)):
        cluster.apply(widget_crd(group))  # another team's CRD: not in this sync's git
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{crd}")
        repo = repo_factory("web")
        sha = push(repo, widget_files(group), "widgets")
        create_sync(cluster, "web", namespace, repo.bare.file_url)
        wait_condition(cluster, "web", namespace, revision_sha=sha)
        old = uids(widgets(cluster, group, namespace))
        cm_uid = live_configmaps(cluster, namespace)["settings"]["metadata"]["uid"]

        since = time.time()
        delete_crd(cluster, crd)
        # While the kind does not exist the sync cannot apply, and deletes nothing.
        sync = wait_failed(cluster, namespace, ("ApplyFailed", "RenderFailed"))
        print(f"without the CRD: {condition(sync, 'Ready')}")
        assert live_configmaps(cluster, namespace)["settings"]["metadata"]["uid"] == cm_uid
        assert {f"{namespace}_w1_{group}_Widget", f"{namespace}_settings__ConfigMap"} <= (
            inventory_ids(sync)
        )

        cluster.apply(widget_crd(group))
        assert_widgets_back(cluster, namespace, group, old, cm_uid)
        if cluster.has_audit_log():
            assert operator_deletes(cluster, operator, since) == []
        assert not internal_errors(cluster, "web", namespace)
