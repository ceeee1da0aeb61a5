"""Whatever a repository holds — a YAML bomb, symlinks out of the checkout, a huge
file — a sync fails with a message naming the culprit, nothing of that commit is
applied, and the operator keeps serving every other sync. A thousand reconciles
leave no git process and no temporary directory behind."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness.cluster_fixtures import Cluster, Operator, wait_for
from tests.harness.git_fixtures import RepoFactory
from tests.harness.gitserver import HttpGitServer, descendants
from tests.harness.manifests import config_map
from tests.harness.pki import CA
from tests.harness.syncs import (
    condition,
    create_git_auth_secret,
    create_sync,
    patch_sync,
    wait_condition,
)

pytestmark = pytest.mark.e2e

MB = 1_000_000
RSS_LIMIT = 400 * MB


def billion_laughs(levels: int = 9) -> str:
    """A ConfigMap whose data expands to 10**levels strings through nested aliases."""
    lines = ["apiVersion: v1", "kind: ConfigMap", "metadata:", "  name: lol", "data:"]
    lines.append("  l0: &l0 [" + ", ".join(['"lol"'] * 10) + "]")
    for n in range(1, levels):
        lines.append(f"  l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def memory_kb(pid: int, field: str) -> int:
    """A field of /proc/<pid>/status in KiB: VmRSS (now) or VmHWM (the peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def ready_message(cluster: Cluster, name: str, namespace: str, reason: str) -> str:
    sync = wait_condition(cluster, name, namespace, status="False", reason=reason)
    stalled = condition(sync, "Stalled")
    assert stalled is not None and stalled["reason"] == reason
    return str(condition(sync, "Ready")["message"])  # type: ignore[index]


def test_a_yaml_bomb_fails_its_sync_and_the_others_keep_working(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    assert operator.proc is not None
    good = repo_factory("good")
    sha = good.commit({"cm.yaml": config_map("settings", "1")}, "first")
    good.push()
    create_sync(cluster, "good", namespace, good.bare.file_url)
    wait_condition(cluster, "good", namespace, revision_sha=sha)

    bomb = repo_factory("bomb")
    bomb.commit(
        {"deploy/bomb.yaml": billion_laughs(), "deploy/cm.yaml": config_map("bystander", "1")},
        "lol",
    )
    bomb.push()
    create_sync(cluster, "bomb", namespace, bomb.bare.file_url, path="deploy")

    message = ready_message(cluster, "bomb", namespace, "RenderFailed")
    assert "deploy/bomb.yaml" in message and "limit" in message
    assert cluster.get("configmap", "lol", namespace) is None
    assert cluster.get("configmap", "bystander", namespace) is None
    assert operator.proc.poll() is None, "the operator died"
    assert memory_kb(operator.proc.pid, "VmHWM") * 1024 < RSS_LIMIT

    # The neighbour in the same namespace still follows its branch.
    sha2 = good.commit({"cm.yaml": config_map("settings", "2")}, "second")
    good.push()
    wait_condition(cluster, "good", namespace, revision_sha=sha2)
    assert cluster.get("configmap", "settings", namespace)["data"]["v"] == "2"  # type: ignore[index]
    assert operator.proc.poll() is None


@pytest.mark.parametrize(
    ("link", "target"),
    [("deploy/passwd.yaml", "/etc/passwd"), ("deploy/outside.yaml", "../../outside")],
    ids=["absolute", "relative"],
)
def test_a_symlink_out_of_the_repository_is_refused(
    operator: Operator, namespace: str, repo_factory: RepoFactory, link: str, target: str
) -> None:
    cluster = operator.cluster
    repo = repo_factory("links")
    repo.commit({"deploy/cm.yaml": config_map("settings", "1")}, "a ConfigMap")
    repo.symlink(link, target)
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, path="deploy")

    message = ready_message(cluster, "web", namespace, "RenderFailed")
    assert f"{link} -> {target}" in message and "outside the repository" in message
    assert "root:" not in message  # nothing of /etc/passwd
    assert cluster.get("configmap", "settings", namespace) is None


def test_a_50mb_file_is_refused_naming_the_size_limit(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    assert operator.proc is not None
    big = b"# comment\n" * (50 * MB // 10)
    repo = repo_factory("huge")
    repo.commit({"deploy/big.yaml": big, "deploy/cm.yaml": config_map("settings", "1")}, "big")
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, path="deploy")

    message = ready_message(cluster, "web", namespace, "RenderFailed")
    assert "deploy/big.yaml" in message and "limit for one file" in message
    assert cluster.get("configmap", "settings", namespace) is None
    assert operator.proc.poll() is None
    rss, peak = memory_kb(operator.proc.pid, "VmRSS"), memory_kb(operator.proc.pid, "VmHWM")
    assert peak * 1024 < RSS_LIMIT, f"operator RSS peaked at {peak} KiB (now {rss} KiB)"


# --- nothing leaks over many reconciles ---------------------------------------------------


def processes_of(operator: Operator, marks: list[str]) -> list[str]:
    """Command lines of processes below the operator, or anywhere with one of `marks` in
    their environment (a git process that outlived its parent is reparented away)."""
    assert operator.proc is not None
    pids = {p.pid for p in descendants(operator.proc.pid)}
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != operator.proc.pid:
            with contextlib.suppress(OSError):
                environ = Path(f"/proc/{d}/environ").read_bytes()
                if any(m.encode() in environ for m in marks):
                    pids.add(int(d))
    found = []
    for pid in sorted(pids):
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            # A zombie has no command line: one that stays is a child nobody waited for.
            found.append(cmd or f"zombie {Path(f'/proc/{pid}/stat').read_text().split()[1]}")
    return found


def entries(*dirs: Path) -> set[str]:
    return {str(p) for d in dirs if d.exists() for p in d.iterdir()}


def test_a_thousand_reconciles_leave_no_git_process_or_temp_dir(
    operator_factory: Callable[..., Operator],
    namespace: str,
    repo_factory: RepoFactory,
    https_git_server: HttpGitServer,
    test_ca: CA,
    tmp_path: Path,
) -> None:
    tmpdir = tmp_path / "operator-tmp"
    tmpdir.mkdir()
    operator = operator_factory(namespace, TMPDIR=str(tmpdir))
    cluster = operator.cluster
    [cache] = (operator.workdir / "cache").glob("gitferry-*")
    before = entries(tmpdir, cache / "tmp")
    repo = repo_factory("busy")
    names = [f"busy-{i}" for i in range(16)]
    sha = repo.commit({f"{n}/cm.yaml": config_map(n, "1") for n in names}, "first")
    repo.push()
    create_git_auth_secret(cluster, namespace, https_git_server, ca=test_ca)
    # Every reconcile asks git for the branch (max_age = interval = 1s, the shortest
    # interval admission allows): half the syncs read a local path, half go over
    # HTTPS with a private CA (a credential file per call).
    for name in names[:8]:
        create_sync(cluster, name, namespace, repo.bare.file_url, path=name, interval="1s")
    for name in names[8:]:
        url = https_git_server.url_for(repo.bare)
        create_sync(cluster, name, namespace, url, path=name, interval="1s",
                    secretRef={"name": "git-auth"})  # fmt: skip
    for name in names:
        wait_condition(cluster, name, namespace, revision_sha=sha)
    started, done = time.monotonic(), operator.log().count("action=reconcile result=ok")

    count = wait_for(
        "1000 reconciles",
        lambda: (n := operator.log().count("action=reconcile result=ok") - done) >= 1000 and n,
        timeout=300,
        interval=1,
    )
    elapsed = time.monotonic() - started
    asked = https_git_server.log.count("ls-refs")
    # Quiet the syncs down (one last reconcile for the spec change), then look.
    for name in names:
        patch_sync(cluster, name, namespace, {"spec": {"interval": "1h"}})
    for name in names:
        wait_condition(cluster, name, namespace, revision_sha=sha)
    assert operator.proc is not None and operator.proc.poll() is None
    assert "Traceback" not in operator.log()
    assert asked >= 20, f"only {asked} reconciles asked the HTTPS server"

    marks = [str(operator.workdir), str(tmpdir)]
    with contextlib.suppress(AssertionError):  # a process may be finishing: give it a moment
        wait_for("no process of the operator", lambda: not processes_of(operator, marks), 10)
    assert processes_of(operator, marks) == []
    with contextlib.suppress(AssertionError):
        wait_for("no new temporary entry", lambda: entries(tmpdir, cache / "tmp") == before, 10)
    assert entries(tmpdir, cache / "tmp") == before
    print(f"{count} reconciles in {elapsed:.1f}s, {asked} over HTTPS")
