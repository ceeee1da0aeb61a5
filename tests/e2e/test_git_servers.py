"""The git servers the end-to-end tests use are real: clone, auth, TLS, SSH, protocol v2.

Each test drives the real `git` CLI as a client against a real server and checks what
the server saw. Credentials reach git only through GIT_ASKPASS or env-passed config.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.harness.git_fixtures import RepoFactory
from tests.harness.gitrepo import WorkRepo, client_env, run_git, served_root
from tests.harness.gitserver import (
    HttpGitServer,
    SshGitServer,
    descendants,
    is_running,
    proc_id,
)
from tests.harness.pki import CA

pytestmark = pytest.mark.e2e


def _published(repo_factory: RepoFactory, name: str = "app") -> WorkRepo:
    repo = repo_factory(name)
    repo.commit({"README.md": "# app\n", "deploy/cm.yaml": "kind: ConfigMap\n"}, "initial")
    repo.push()
    return repo


def _http_env(home: Path, server: HttpGitServer, **config: str) -> dict[str, str]:
    return client_env(home, username=server.username, password=server.password, config=config)


def _http_clone(
    server: HttpGitServer, repo: WorkRepo, tmp_path: Path
) -> tuple[dict[str, str], Path]:
    """Clone `repo` from `server` as its user into `tmp_path/clone`; the client's env and
    the clone."""
    env = _http_env(tmp_path / "client", server)
    clone = tmp_path / "clone"
    run_git(["clone", "-q", server.url_for(repo.bare), str(clone)], env)
    return env, clone


def _refs(clone: Path, env: dict[str, str], pattern: str) -> dict[str, str]:
    out = run_git(["for-each-ref", "--format=%(refname) %(objectname)", pattern], env, cwd=clone)
    pairs = (line.split(" ", 1) for line in out.stdout.splitlines())
    return {name: sha for name, sha in pairs}


def test_clone_over_file_url(repo_factory: RepoFactory, tmp_path: Path) -> None:
    repo = _published(repo_factory)
    env = client_env(tmp_path / "client")
    run_git(["clone", "-q", repo.bare.file_url, str(tmp_path / "clone")], env)
    assert (tmp_path / "clone" / "deploy" / "cm.yaml").read_text() == "kind: ConfigMap\n"


def test_clone_over_http_with_basic_auth_speaks_protocol_v2(
    repo_factory: RepoFactory, http_git_server: HttpGitServer, tmp_path: Path
) -> None:
    repo = _published(repo_factory)
    env, clone = _http_clone(http_git_server, repo, tmp_path)

    assert run_git(["rev-parse", "HEAD"], env, cwd=clone).stdout.strip() == repo.head()
    records = http_git_server.log.records
    assert records[0].status == 401  # git asks for credentials only when challenged
    served = [r for r in records if r.status == 200]
    assert served and all(r.user == "gitferry" for r in served)
    assert all(r.git_protocol == "version=2" for r in records)
    assert http_git_server.log.count("ls-refs") == 1
    assert http_git_server.log.count("fetch") == 1


def test_wrong_password_is_refused(
    repo_factory: RepoFactory, http_git_server: HttpGitServer, tmp_path: Path
) -> None:
    repo = _published(repo_factory)
    env = client_env(tmp_path / "client", username="gitferry", password="not-the-password")
    result = run_git(
        ["clone", http_git_server.url_for(repo.bare), str(tmp_path / "clone")], env, check=False
    )
    assert result.returncode != 0
    assert "Authentication failed" in result.stderr
    assert {r.status for r in http_git_server.log.records} == {401}


def test_bearer_token_is_accepted_instead_of_basic_auth(
    repo_factory: RepoFactory, git_root: Path, tmp_path: Path
) -> None:
    repo = _published(repo_factory)
    with HttpGitServer(served_root(git_root), bearer_token="s3cr3t-token") as server:
        url = server.url_for(repo.bare)
        good = client_env(
            tmp_path / "good", config={"http.extraHeader": "Authorization: Bearer s3cr3t-token"}
        )
        run_git(["clone", "-q", url, str(tmp_path / "clone")], good)
        bad = client_env(
            tmp_path / "bad", config={"http.extraHeader": "Authorization: Bearer nope"}
        )
        result = run_git(["clone", url, str(tmp_path / "clone2")], bad, check=False)
        assert result.returncode != 0
        assert [r.user for r in server.log.records if r.status == 200] == ["bearer"] * 3
    assert not server.stray_pids()


def test_clone_over_https_trusts_only_the_test_ca(
    repo_factory: RepoFactory, https_git_server: HttpGitServer, test_ca: CA, tmp_path: Path
) -> None:
    repo = _published(repo_factory)
    for host in ("127.0.0.1", "localhost"):  # both are in the certificate's SANs
        env = _http_env(tmp_path / host, https_git_server, **{"http.sslCAInfo": str(test_ca.cert)})
        url = https_git_server.url_for(repo.bare, host=host)
        assert url.startswith("https://")
        run_git(["clone", "-q", url, str(tmp_path / f"clone-{host}")], env)

    untrusting = _http_env(tmp_path / "no-ca", https_git_server)
    result = run_git(
        ["clone", https_git_server.url_for(repo.bare), str(tmp_path / "clone-no-ca")],
        untrusting,
        check=False,
    )
    assert result.returncode != 0
    assert "certificate" in result.stderr.lower()


def test_clone_over_ssh_with_known_hosts(
    repo_factory: RepoFactory, ssh_git_server: SshGitServer, tmp_path: Path
) -> None:
    repo = _published(repo_factory)
    assert ssh_git_server.known_hosts_line.startswith(
        f"[127.0.0.1]:{ssh_git_server.port} ssh-ed25519 "
    )
    env = client_env(tmp_path / "client")
    env["GIT_SSH_COMMAND"] = ssh_git_server.ssh_command()
    env["GIT_TRACE_PACKET"] = "1"
    clone = tmp_path / "clone"
    result = run_git(["clone", ssh_git_server.url_for(repo.bare), str(clone)], env)
    assert run_git(["rev-parse", "HEAD"], env, cwd=clone).stdout.strip() == repo.head()
    # sshd's AcceptEnv GIT_PROTOCOL is what lets git speak v2 over SSH.
    assert "version 2" in result.stderr


def test_unknown_ssh_host_key_is_refused(
    repo_factory: RepoFactory, ssh_git_server: SshGitServer, tmp_path: Path
) -> None:
    repo = _published(repo_factory)
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    env = client_env(tmp_path / "client")
    env["GIT_SSH_COMMAND"] = ssh_git_server.ssh_command(known_hosts=empty)
    result = run_git(
        ["clone", ssh_git_server.url_for(repo.bare), str(tmp_path / "clone")], env, check=False
    )
    assert result.returncode != 0
    assert "host key" in result.stderr.lower()


def test_fetch_of_40_tags_counts_ls_refs_and_fetch_with_gzip(
    repo_factory: RepoFactory, http_git_server: HttpGitServer, tmp_path: Path
) -> None:
    repo = _published(repo_factory)
    env, clone = _http_clone(http_git_server, repo, tmp_path)
    for i in range(40):
        repo.commit({"version.txt": f"{i}\n"}, f"release {i}")
        repo.tag(f"v{i}", push=False)
    repo.push(tags=True)

    http_git_server.log.clear()
    run_git(["fetch", "-q", "--tags", "origin"], env, cwd=clone)
    assert len(_refs(clone, env, "refs/tags")) == 40
    assert http_git_server.log.count("ls-refs") == 1
    assert http_git_server.log.count("fetch") >= 1
    # 40 wants are > 1 KiB: git gzips the body and http-backend must inflate it.
    fetches = [r for r in http_git_server.log.records if r.command == "fetch"]
    assert any(r.content_encoding == "gzip" for r in fetches)

    # Up to date: one ls-refs, no fetch. This is how a test tells "checked" from "fetched".
    http_git_server.log.clear()
    run_git(["fetch", "-q", "--tags", "origin"], env, cwd=clone)
    assert http_git_server.log.count("ls-refs") == 1
    assert http_git_server.log.count("fetch") == 0


def test_large_chunked_request_is_dechunked(
    repo_factory: RepoFactory, http_git_server: HttpGitServer, tmp_path: Path
) -> None:
    repo = _published(repo_factory)
    # 2000 branches on distinct root commits: the clone's fetch request carries 2000 wants
    # (~100 KB), more than http.postBuffer, so git sends it chunked (and not gzipped).
    stream = "".join(
        f"commit refs/heads/b{i:04}\ncommitter T <t@t> 1700000000 +0000\ndata 5\nb{i:04}\n\n"
        for i in range(2000)
    )
    repo.git("fast-import", "--quiet", input=stream.encode())
    repo.git("push", "-q", "origin", "refs/heads/*:refs/heads/*")

    # 64 KiB: git clamps smaller values to 65520, which then trips a BUG() in remote-curl.
    env = _http_env(tmp_path / "client", http_git_server, **{"http.postBuffer": "65536"})
    clone = tmp_path / "clone"
    run_git(["clone", "-q", "--no-checkout", http_git_server.url_for(repo.bare), str(clone)], env)
    assert len(_refs(clone, env, "refs/remotes/origin/b*")) == 2000
    fetches = [r for r in http_git_server.log.records if r.command == "fetch"]
    assert any(r.chunked and r.body_bytes > 65536 for r in fetches)


@pytest.mark.parametrize("annotated", [False, True], ids=["lightweight", "annotated"])
def test_moved_tag_is_followed_only_with_a_forced_refspec(
    repo_factory: RepoFactory, http_git_server: HttpGitServer, tmp_path: Path, annotated: bool
) -> None:
    repo = _published(repo_factory)
    first = repo.tag("v1", annotated=annotated)
    env, clone = _http_clone(http_git_server, repo, tmp_path)

    second = repo.commit({"README.md": "# app v2\n"}, "second")
    repo.push()
    assert repo.move_tag("v1", second) == second

    def local_v1() -> str:
        return run_git(["rev-parse", "v1^{commit}"], env, cwd=clone).stdout.strip()

    # A plain tag fetch refuses to clobber an existing tag.
    run_git(["fetch", "-q", "--tags", "origin"], env, cwd=clone, check=False)
    assert local_v1() == first
    run_git(["fetch", "-q", "origin", "+refs/tags/v1:refs/tags/v1"], env, cwd=clone)
    assert local_v1() == second


def test_hold_keeps_a_fetch_in_flight_until_released(
    repo_factory: RepoFactory, http_git_server: HttpGitServer, tmp_path: Path
) -> None:
    repo = _published(repo_factory)
    env = _http_env(tmp_path / "client", http_git_server)
    clone = tmp_path / "clone"
    with http_git_server.hold():
        proc = subprocess.Popen(
            ["git", "clone", "-q", http_git_server.url_for(repo.bare), str(clone)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            http_git_server.wait_held()
            assert proc.poll() is None
            # What a later test does: look at the in-flight git processes' command lines.
            cmdlines = [Path(f"/proc/{p.pid}/cmdline").read_bytes() for p in descendants(proc.pid)]
            assert any(b"git-remote-http" in c for c in cmdlines)
            assert not any(str(http_git_server.password).encode() in c for c in cmdlines)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert (clone / "README.md").exists()


def test_stop_answers_held_requests_and_leaves_no_processes(
    repo_factory: RepoFactory, git_root: Path, tmp_path: Path
) -> None:
    repo = _published(repo_factory)
    server = HttpGitServer(served_root(git_root)).start()
    with server.hold():
        proc = subprocess.Popen(
            ["git", "clone", "-q", server.url_for(repo.bare), str(tmp_path / "clone")],
            env=client_env(tmp_path / "client"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server.wait_held()
        server.stop()
    assert proc.wait(timeout=120) != 0
    assert server.started_pids == []  # the held request never reached http-backend
    assert not server.stray_pids()


def test_down_refuses_connections_until_up(
    repo_factory: RepoFactory, http_git_server: HttpGitServer, tmp_path: Path
) -> None:
    repo = _published(repo_factory)
    env = _http_env(tmp_path / "client", http_git_server)
    port = http_git_server.port
    http_git_server.down()
    result = run_git(["ls-remote", http_git_server.url_for(repo.bare)], env, check=False)
    assert result.returncode != 0
    assert "connect" in result.stderr.lower()
    http_git_server.up()
    assert http_git_server.port == port
    result = run_git(["ls-remote", http_git_server.url_for(repo.bare)], env)
    assert repo.head() in result.stdout


def test_servers_leave_no_processes_after_stop(
    repo_factory: RepoFactory, git_root: Path, tmp_path: Path
) -> None:
    repo = _published(repo_factory)
    env = client_env(tmp_path / "client")

    http = HttpGitServer(served_root(git_root)).start()
    run_git(["clone", "-q", http.url_for(repo.bare), str(tmp_path / "c1")], env)
    http.stop()
    assert len(http.started_pids) >= 3  # info/refs, ls-refs, fetch
    assert not any(is_running(p) for p in http.started_pids)
    assert not http.stray_pids()

    ssh = SshGitServer(tmp_path / "sshd").start()
    assert ssh.pid is not None
    sshd = proc_id(ssh.pid)
    assert sshd is not None
    env["GIT_SSH_COMMAND"] = ssh.ssh_command()
    run_git(["clone", "-q", ssh.url_for(repo.bare), str(tmp_path / "c2")], env)
    ssh.stop()
    assert not ssh.stray_pids()
    assert not is_running(sshd)


def test_pki_issues_server_and_client_certificates(test_ca: CA, tmp_path: Path) -> None:
    server = test_ca.issue(tmp_path, "server", ["127.0.0.1", "localhost"])
    cert = x509.load_pem_x509_certificate(server.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert server.ca_cert == test_ca.cert
    assert oct(server.key.stat().st_mode & 0o777) == "0o600"

    client = test_ca.issue(tmp_path, "alice", client=True, organizations=["system:masters"])
    subject = x509.load_pem_x509_certificate(client.cert.read_bytes()).subject
    assert subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
