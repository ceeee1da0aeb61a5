"""Pytest fixtures for real git servers; `from tests.harness.git_fixtures import *`."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.gitrepo import WorkRepo, make_repo, served_root
from tests.harness.gitserver import HttpGitServer, SshGitServer
from tests.harness.pki import CA, make_ca

__all__ = [
    "GIT_USERNAME",
    "RepoFactory",
    "git_root",
    "http_git_server",
    "https_git_server",
    "repo_factory",
    "ssh_git_server",
    "test_ca",
]

GIT_USERNAME = "gitferry"

RepoFactory = Callable[[str], WorkRepo]


@pytest.fixture
def git_root(tmp_path: Path) -> Path:
    """Holds the served bare repos (`served_root(git_root)`), work trees and git's HOME."""
    root = tmp_path / "git"
    served_root(root).mkdir(parents=True)
    return root


@pytest.fixture
def repo_factory(git_root: Path) -> RepoFactory:
    """`repo_factory("app")` -> a WorkRepo pushing to `<served>/app.git`."""

    def factory(name: str) -> WorkRepo:
        return make_repo(git_root, name)

    return factory


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return make_ca(tmp_path_factory.mktemp("pki"), "gitferry-test-ca")


def _serve_http(server: HttpGitServer) -> Iterator[HttpGitServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
    # A leak here is a harness bug that would slowly starve the machine: fail loudly.
    assert not server.stray_pids(), f"processes left by {server.url}: {server.stray_pids()}"


@pytest.fixture
def http_git_server(git_root: Path) -> Iterator[HttpGitServer]:
    """Smart HTTP with Basic auth as `gitferry` and a random password."""
    server = HttpGitServer(
        served_root(git_root), username=GIT_USERNAME, password=secrets.token_urlsafe(16)
    )
    yield from _serve_http(server)


@pytest.fixture
def https_git_server(git_root: Path, test_ca: CA, tmp_path: Path) -> Iterator[HttpGitServer]:
    """Like http_git_server over TLS; the cert (127.0.0.1, localhost) is signed by test_ca."""
    cert = test_ca.issue(tmp_path / "tls", "git-server", ["127.0.0.1", "localhost"])
    server = HttpGitServer(
        served_root(git_root),
        username=GIT_USERNAME,
        password=secrets.token_urlsafe(16),
        tls=cert,
    )
    yield from _serve_http(server)


@pytest.fixture
def ssh_git_server(tmp_path: Path) -> Iterator[SshGitServer]:
    """sshd on 127.0.0.1; `.ssh_command()` is a GIT_SSH_COMMAND trusting only its host key."""
    server = SshGitServer(tmp_path / "sshd")
    server.start()
    try:
        yield server
    finally:
        server.stop()
    assert not server.stray_pids(), f"processes left by sshd: {server.stray_pids()}"
