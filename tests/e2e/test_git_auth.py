"""A sync reads private repositories with the credentials of its Secret — HTTPS with
basic auth and a private CA, a bearer token, SSH with a key and known_hosts — and
follows the ref it names (a semver range, a pinned commit, a moved tag). Wrong
credentials change nothing in the cluster, and no credential ever shows up in the
log, the status, an Event, a command line or the operator's disk."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness.cluster_fixtures import Cluster, Operator, wait_for
from tests.harness.git_fixtures import GIT_USERNAME, RepoFactory
from tests.harness.gitrepo import served_root
from tests.harness.gitserver import HttpGitServer, SshGitServer, descendants
from tests.harness.manifests import config_map
from tests.harness.pki import CA
from tests.harness.syncs import (
    condition,
    create_git_auth_secret,
    create_sync,
    events_for,
    put_secret,
    request_reconcile,
    wait_condition,
)

pytestmark = pytest.mark.e2e

SECRET = "git-auth"


# --- helpers --------------------------------------------------------------------------


def wait_handled(cluster: Cluster, name: str, namespace: str, value: str) -> dict[str, Any]:
    """The sync once the reconcile asked for with `value` has written its status."""
    return wait_for(  # type: ignore[no-any-return]
        f"grs/{name} to handle requested-at={value}",
        lambda: (
            (s := cluster.get("grs", name, namespace))
            and s.get("status", {}).get("lastHandledReconcileAt") == value
            and not condition(s, "Reconciling")
            and s
        ),
        60,
    )


def configmap_value(cluster: Cluster, name: str, namespace: str) -> str | None:
    cm = cluster.get("configmap", name, namespace)
    return None if cm is None else str(cm["data"]["v"])


def wait_applied(
    cluster: Cluster, namespace: str, ref: str, sha: str, configmap: str, value: str
) -> None:
    """Sync `web` is Ready with `<ref>@sha1:<sha>` applied: `configmap` holds `value`."""
    sync = wait_condition(cluster, "web", namespace, revision_sha=sha)
    assert sync["status"]["lastAppliedRevision"] == f"{ref}@sha1:{sha}"
    assert configmap_value(cluster, configmap, namespace) == value


def reconciles_ok(operator: Operator, name: str, namespace: str) -> int:
    return operator.log().count(f"sync={namespace}/{name} action=reconcile result=ok")


def all_cmdlines() -> str:
    """The command line of every process on the machine."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError):
                out.append(Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ").decode())
    return "\n".join(out)


def git_children(pid: int) -> list[str]:
    """Command lines of the git (and ssh) processes below `pid`."""
    found = []
    for p in descendants(pid):
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{p.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if Path(cmd.split(" ")[0]).name.startswith(("git", "ssh")):
                found.append(cmd)
    return found


def files_containing(root: Path, needles: list[str]) -> list[Path]:
    """Regular files under `root` whose bytes contain one of `needles`."""
    hits = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            with contextlib.suppress(OSError):  # removed while we walk
                if path.is_symlink() or not path.is_file():
                    continue
                data = path.read_bytes()
                if any(n.encode() in data for n in needles):
                    hits.append(path)
    return hits


def everything_users_see(cluster: Cluster, operator: Operator, namespace: str) -> dict[str, str]:
    """The operator's log, every sync's status and every Event of the namespace."""
    syncs = json.loads(cluster.kubectl("get", "grs", "-n", namespace, "-o", "json").stdout)
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    return {
        "log": operator.log(),
        "status": json.dumps([s.get("status") for s in syncs["items"]]),
        "events": events,
    }


def leaks(haystacks: dict[str, str], needles: list[str]) -> list[str]:
    return [where for where, text in haystacks.items() if any(n in text for n in needles)]


# --- each transport with its credentials ----------------------------------------------


def test_https_with_basic_auth_and_the_secrets_ca(
    operator: Operator,
    namespace: str,
    repo_factory: RepoFactory,
    https_git_server: HttpGitServer,
    test_ca: CA,
) -> None:
    cluster = operator.cluster
    repo = repo_factory("private")
    sha = repo.commit({"deploy/cm.yaml": config_map("settings", "https")}, "first")
    repo.push()
    create_git_auth_secret(cluster, namespace, https_git_server, ca=test_ca)
    url = https_git_server.url_for(repo.bare)
    create_sync(cluster, "web", namespace, url, path="deploy", secretRef={"name": SECRET})

    wait_applied(cluster, namespace, "main", sha, "settings", "https")
    served = {r.user for r in https_git_server.log.records if r.status == 200}
    assert served == {GIT_USERNAME}


def test_http_with_a_bearer_token(
    operator: Operator, namespace: str, repo_factory: RepoFactory, git_root: Path
) -> None:
    cluster = operator.cluster
    repo = repo_factory("tokened")
    sha = repo.commit({"cm.yaml": config_map("settings", "bearer")}, "first")
    repo.push()
    token = f"tok-{secrets.token_urlsafe(16)}"
    with HttpGitServer(served_root(git_root), bearer_token=token) as server:
        put_secret(cluster, namespace, {"bearerToken": token})
        create_sync(
            cluster, "web", namespace, server.url_for(repo.bare), secretRef={"name": SECRET}
        )
        wait_condition(cluster, "web", namespace, revision_sha=sha)
        assert configmap_value(cluster, "settings", namespace) == "bearer"
        assert {r.user for r in server.log.records if r.status == 200} == {"bearer"}
    assert not server.stray_pids()


def test_ssh_with_identity_and_known_hosts(
    operator: Operator,
    namespace: str,
    repo_factory: RepoFactory,
    ssh_git_server: SshGitServer,
) -> None:
    cluster = operator.cluster
    repo = repo_factory("over-ssh")
    sha = repo.commit({"cm.yaml": config_map("settings", "ssh")}, "first")
    repo.push()
    identity = ssh_git_server.client_key_path.read_text()
    put_secret(
        cluster,
        namespace,
        {"identity": identity, "known_hosts": ssh_git_server.known_hosts_line + "\n"},
    )
    create_sync(
        cluster,
        "web",
        namespace,
        ssh_git_server.url_for(repo.bare),
        ref={"branch": "main"},
        interval="1h",  # no fetch runs while the cache is inspected below
        secretRef={"name": SECRET},
    )

    wait_applied(cluster, namespace, "main", sha, "settings", "ssh")
    # The key went to git through a private file that is gone once the fetch is done.
    key_lines = [ln for ln in identity.splitlines() if len(ln) >= 8 and "PRIVATE KEY" not in ln]
    assert files_containing(operator.workdir / "cache", ["PRIVATE KEY", *key_lines]) == []
    assert leaks(everything_users_see(cluster, operator, namespace), key_lines) == []
    assert git_children(operator.proc.pid) == []  # type: ignore[union-attr]


# --- wrong credentials ----------------------------------------------------------------


def test_wrong_password_changes_nothing_until_the_secret_is_fixed(
    operator: Operator,
    namespace: str,
    repo_factory: RepoFactory,
    http_git_server: HttpGitServer,
) -> None:
    cluster = operator.cluster
    repo = repo_factory("guarded")
    sha = repo.commit({"cm.yaml": config_map("settings", "1")}, "first")
    repo.push()
    assert http_git_server.password is not None
    create_git_auth_secret(cluster, namespace, http_git_server)
    # A long interval: only the reconciles this test asks for run (and retries).
    create_sync(
        cluster,
        "web",
        namespace,
        http_git_server.url_for(repo.bare),
        interval="1h",
        secretRef={"name": SECRET},
    )
    wait_condition(cluster, "web", namespace, revision_sha=sha)

    # Someone rotates the password in the Secret to a wrong one; git moves on meanwhile.
    sha2 = repo.commit({"cm.yaml": config_map("settings", "2")}, "second")
    repo.push()
    wrong = f"wrong-{secrets.token_hex(8)}"
    put_secret(cluster, namespace, {"username": GIT_USERNAME, "password": wrong})
    asked = request_reconcile(cluster, "web", namespace)  # a Secret change waits for this

    sync = wait_condition(cluster, "web", namespace, status="False", reason="AuthenticationFailed")
    message = condition(sync, "Ready")["message"]  # type: ignore[index]
    assert http_git_server.url_for(repo.bare) in message and "authentication" in message
    assert condition(sync, "Stalled") is None  # a retry can help: the Secret may be fixed
    assert sync["status"]["lastAppliedRevision"] == f"main@sha1:{sha}"
    assert sync["status"].get("lastHandledReconcileAt") == asked
    assert configmap_value(cluster, "settings", namespace) == "1"
    warnings = [e for e in events_for(cluster, "web", namespace) if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["AuthenticationFailed"]
    secret_values = [wrong, http_git_server.password]
    assert leaks(everything_users_see(cluster, operator, namespace), secret_values) == []

    # Fixing the Secret is enough: the next retry (retryInterval 2s) applies what the
    # branch holds now, not what it held before the failure.
    create_git_auth_secret(cluster, namespace, http_git_server)
    wait_condition(cluster, "web", namespace, revision_sha=sha2, timeout=30)
    assert configmap_value(cluster, "settings", namespace) == "2"


@pytest.mark.parametrize(
    "known_hosts",
    ["another key for this host", "keys of other hosts only", "empty"],
)
def test_unknown_ssh_host_key_is_refused(
    operator: Operator,
    namespace: str,
    repo_factory: RepoFactory,
    ssh_git_server: SshGitServer,
    known_hosts: str,
) -> None:
    cluster = operator.cluster
    repo = repo_factory("unknown-host")
    repo.commit({"cm.yaml": config_map("settings", "1")}, "first")
    repo.push()
    lines = {
        # The client's public key posing as the server's: a host key that "has changed".
        "another key for this host": f"[127.0.0.1]:{ssh_git_server.port} "
        f"{ssh_git_server.client_public_key}\n",
        "keys of other hosts only": f"[127.0.0.1]:1 {ssh_git_server.host_public_key}\n",
        "empty": "",
    }
    put_secret(
        cluster,
        namespace,
        {
            "identity": ssh_git_server.client_key_path.read_text(),
            "known_hosts": lines[known_hosts],
        },
    )
    create_sync(
        cluster, "web", namespace, ssh_git_server.url_for(repo.bare), secretRef={"name": SECRET}
    )

    sync = wait_condition(cluster, "web", namespace, status="False", reason="AuthenticationFailed")
    message = condition(sync, "Ready")["message"]  # type: ignore[index]
    if known_hosts == "empty":
        assert "known_hosts is required" in message
    else:
        assert "host key" in message and "not in the Secret's known_hosts" in message
    assert cluster.get("configmap", "settings", namespace) is None


# --- credentials stay secret ----------------------------------------------------------


@dataclass
class AuthServer:
    server: HttpGitServer
    secret_data: dict[str, str]
    secret_values: list[str]  # what must appear nowhere


@pytest.fixture(params=["basic", "bearer"])
def auth_server(
    request: pytest.FixtureRequest, http_git_server: HttpGitServer, git_root: Path
) -> Iterator[AuthServer]:
    if request.param == "basic":
        assert http_git_server.password is not None
        password = http_git_server.password
        header = base64.b64encode(f"{GIT_USERNAME}:{password}".encode()).decode()
        yield AuthServer(
            http_git_server,
            {"username": GIT_USERNAME, "password": password},
            [password, header],
        )
        return
    token = f"tok-{secrets.token_urlsafe(16)}"
    with HttpGitServer(served_root(git_root), bearer_token=token) as server:
        yield AuthServer(server, {"bearerToken": token}, [token])
    assert not server.stray_pids()


def test_credentials_appear_nowhere(
    operator: Operator,
    namespace: str,
    repo_factory: RepoFactory,
    auth_server: AuthServer,
) -> None:
    cluster = operator.cluster
    server, needles = auth_server.server, auth_server.secret_values
    repo = repo_factory("secretive")
    sha = repo.commit({"cm.yaml": config_map("settings", "1")}, "first")
    repo.push()
    put_secret(cluster, namespace, auth_server.secret_data)
    create_sync(
        cluster,
        "web",
        namespace,
        server.url_for(repo.bare),
        interval="1h",
        secretRef={"name": SECRET},
    )
    wait_condition(cluster, "web", namespace, revision_sha=sha)

    # While git talks to the server, its command lines and the cache hold no secret.
    with server.hold():
        asked = request_reconcile(cluster, "web", namespace)
        server.wait_held(1)
        in_flight = git_children(operator.proc.pid)  # type: ignore[union-attr]
        cmdlines = all_cmdlines()
        cache_hits = files_containing(operator.workdir / "cache", needles)
    assert in_flight, "a git process of the operator should be waiting on the server"
    assert [n for n in needles if n in cmdlines] == []
    assert cache_hits == []
    wait_handled(cluster, "web", namespace, asked)
    wait_condition(cluster, "web", namespace, revision_sha=sha)

    assert leaks(everything_users_see(cluster, operator, namespace), needles) == []
    assert files_containing(operator.workdir / "cache", needles) == []


def test_url_with_credentials_is_refused_and_never_echoed(
    operator: Operator, namespace: str
) -> None:
    cluster = operator.cluster
    password = f"pw-{secrets.token_hex(8)}"
    create_sync(cluster, "web", namespace, f"https://user:{password}@127.0.0.1:1/repo.git")

    sync = wait_condition(cluster, "web", namespace, status="False", reason="URLInvalid")
    stalled = condition(sync, "Stalled")
    assert stalled is not None and stalled["reason"] == "URLInvalid"
    message = condition(sync, "Ready")["message"]  # type: ignore[index]
    assert "credentials" in message and "secretRef" in message
    wait_for("the Warning Event", lambda: events_for(cluster, "web", namespace), 30)
    assert leaks(everything_users_see(cluster, operator, namespace), [password]) == []


def test_ext_transport_url_never_runs_a_command(operator: Operator, namespace: str) -> None:
    cluster = operator.cluster
    pwned = Path(f"/tmp/pwned-{secrets.token_hex(6)}")
    create_sync(cluster, "web", namespace, f"ext::sh -c touch% {pwned}")

    sync = wait_condition(cluster, "web", namespace, status="False", reason="URLInvalid")
    assert condition(sync, "Stalled") is not None
    assert not pwned.exists()


# --- which revision ---------------------------------------------------------------------


def test_semver_range_picks_the_highest_release_and_follows_a_new_one(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("released")
    for version in ("1.9.0", "1.10.0-rc.1", "2.0.0"):
        repo.commit({"cm.yaml": config_map("release", version)}, version)
        repo.tag(f"v{version}")
    repo.push()
    create_sync(
        cluster,
        "web",
        namespace,
        repo.bare.file_url,
        ref={"semver": ">=1.0.0 <2.0.0"},
        interval="2s",
    )

    sync = wait_condition(cluster, "web", namespace)
    assert sync["status"]["lastAppliedRevision"].startswith("v1.9.0@sha1:")
    assert configmap_value(cluster, "release", namespace) == "1.9.0"

    repo.commit({"cm.yaml": config_map("release", "1.10.0")}, "1.10.0")
    sha = repo.tag("v1.10.0")
    wait_applied(cluster, namespace, "v1.10.0", sha, "release", "1.10.0")


def test_commit_pin_stays_while_the_branch_moves_on(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("pinned")
    pinned = repo.commit({"cm.yaml": config_map("settings", "pinned")}, "first")
    repo.push()
    create_sync(
        cluster,
        "web",
        namespace,
        repo.bare.file_url,
        ref={"branch": "main", "commit": pinned},
        interval="2s",
    )
    sync = wait_condition(cluster, "web", namespace, revision_sha=pinned)
    assert sync["status"]["lastAppliedRevision"] == f"main@sha1:{pinned}"

    repo.commit({"cm.yaml": config_map("settings", "newer")}, "second")
    repo.push()
    seen = reconciles_ok(operator, "web", namespace)
    wait_for(
        "two more reconciles after the push",
        lambda: reconciles_ok(operator, "web", namespace) >= seen + 2,
        30,
    )
    wait_applied(cluster, namespace, "main", pinned, "settings", "pinned")


def test_a_moved_tag_is_followed(
    operator: Operator, namespace: str, repo_factory: RepoFactory
) -> None:
    cluster = operator.cluster
    repo = repo_factory("retagged")
    repo.commit({"cm.yaml": config_map("settings", "one")}, "first")
    first = repo.tag("v1")
    repo.push()
    create_sync(cluster, "web", namespace, repo.bare.file_url, ref={"tag": "v1"}, interval="2s")
    wait_condition(cluster, "web", namespace, revision_sha=first)
    assert configmap_value(cluster, "settings", namespace) == "one"

    second = repo.commit({"cm.yaml": config_map("settings", "two")}, "second")
    repo.push()
    assert repo.move_tag("v1", second) == second
    wait_applied(cluster, namespace, "v1", second, "settings", "two")
