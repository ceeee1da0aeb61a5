"""Commit statuses: which repository a sync's git URL names on each forge, the
request each forge documents, and what the client does with its answers — sent
to a local server that checks every request against the forge's API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gitferry.notify import NotifyError
from gitferry.notify.forges import (
    Forge,
    Repo,
    Status,
    bitbucket_key,
    build,
    post,
    repo_for,
    sha_of,
    truncate,
)
from tests.harness.receivers import FakeForge

SHA = "3f2a9c4e" * 5
TOKEN = "tok-Secr3t-value"


@pytest.fixture
def forge() -> Iterator[FakeForge]:
    server = FakeForge(TOKEN)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("forge", "url", "api", "path"),
    [
        (Forge.GITHUB, "https://github.com/org/app.git", "https://api.github.com", "org/app"),
        (Forge.GITHUB, "git@github.com:org/app.git", "https://api.github.com", "org/app"),
        (Forge.GITHUB, "ssh://git@github.com/org/app", "https://api.github.com", "org/app"),
        (Forge.GITHUB, "https://ghe.example.com/org/app.git", "https://ghe.example.com/api/v3",
         "org/app"),
        (Forge.GITLAB, "https://gitlab.com/group/sub/app.git", "https://gitlab.com/api/v4",
         "group/sub/app"),
        (Forge.GITLAB, "git@gitlab.example.com:group/app.git",
         "https://gitlab.example.com/api/v4", "group/app"),
        (Forge.GITEA, "http://127.0.0.1:3000/org/app.git", "http://127.0.0.1:3000/api/v1",
         "org/app"),
        (Forge.BITBUCKET, "git@bitbucket.org:team/app.git", "https://api.bitbucket.org/2.0",
         "team/app"),
        (Forge.BITBUCKET_SERVER, "https://bb.example.com/scm/PROJ/app.git",
         "https://bb.example.com", "PROJ/app"),
        (Forge.BITBUCKET_SERVER, "https://bb.example.com/bitbucket/scm/PROJ/app.git",
         "https://bb.example.com/bitbucket", "PROJ/app"),
        (Forge.BITBUCKET_SERVER, "ssh://git@bb.example.com:7999/PROJ/app.git",
         "https://bb.example.com", "PROJ/app"),
        (Forge.AZURE_DEVOPS, "https://org@dev.azure.com/org/Proj/_git/app",
         "https://dev.azure.com/org", "Proj/app"),
        (Forge.AZURE_DEVOPS, "git@ssh.dev.azure.com:v3/org/Proj/app",
         "https://dev.azure.com/org", "Proj/app"),
        (Forge.AZURE_DEVOPS, "https://org.visualstudio.com/Proj/_git/app",
         "https://org.visualstudio.com", "Proj/app"),
    ],
)  # fmt: skip
def test_the_repository_a_git_url_names(forge: Forge, url: str, api: str, path: str) -> None:
    repo = repo_for(forge, url)
    assert (repo.api, repo.path) == (api, path)


def test_address_and_repository_override_the_url() -> None:
    repo = repo_for(Forge.GITHUB, "file:///srv/git/app.git", "http://127.0.0.1:9/github/", "o/r")
    assert (repo.api, repo.path) == ("http://127.0.0.1:9/github", "o/r")
    with pytest.raises(NotifyError, match="set the repository and address") as e:
        repo_for(Forge.GITHUB, "file:///srv/git/app.git")
    assert not e.value.retryable
    with pytest.raises(NotifyError, match="not a repository path"):
        repo_for(Forge.GITHUB, "https://github.com/only-one.git")


def test_sha_of_a_revision() -> None:
    assert sha_of(f"main@sha1:{SHA}") == SHA
    assert sha_of(f"sha1:{SHA}") == SHA
    assert sha_of(SHA) == SHA
    assert sha_of("main@sha1:abc") is None
    assert sha_of("") is None


def test_descriptions_are_cut_to_each_forges_limit() -> None:
    long = "RenderFailed: " + "x" * 500
    status = Status("failure", "gitferry/apps/web", long)
    repo = repo_for(Forge.GITHUB, "https://github.com/o/r")
    desc = build(repo, SHA, status, TOKEN).body["description"]
    assert len(desc) == 140 and desc.endswith("…")
    gitlab = build(repo_for(Forge.GITLAB, "https://gitlab.com/o/r"), SHA, status, TOKEN)
    assert len(gitlab.body["description"]) == 255
    assert truncate("a\nb   c", 10) == "a b c"


def test_bitbucket_keys_fit_forty_characters_and_stay_stable() -> None:
    assert bitbucket_key("gitferry/apps/web") == "gitferry/apps/web"
    long = "gitferry/prod-eu/a-long-namespace/a-long-sync-name"
    assert len(bitbucket_key(long)) == 40
    assert bitbucket_key(long) == bitbucket_key(long) != bitbucket_key(long + "x")


def _status(state: str = "pending") -> Status:
    return Status(state, "gitferry/apps/web", f"{state} main@sha1:{SHA[:12]}")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("forge_", "address", "repository", "states"),
    [
        (Forge.GITHUB, "/github", "org/app", ("pending", "success", "failure")),
        (Forge.GITLAB, "/gitlab/api/v4", "group/sub/app", ("running", "success", "failed")),
        (Forge.GITEA, "/gitea/api/v1", "org/app", ("pending", "success", "failure")),
        (Forge.BITBUCKET, "/bitbucket/2.0", "team/app",
         ("INPROGRESS", "SUCCESSFUL", "FAILED")),
        (Forge.BITBUCKET_SERVER, "/bbs", "PROJ/app", ("INPROGRESS", "SUCCESSFUL", "FAILED")),
        (Forge.AZURE_DEVOPS, "/azure/org", "Proj/app", ("pending", "succeeded", "failed")),
    ],
)  # fmt: skip
def test_each_forge_accepts_what_the_client_sends(
    forge: FakeForge, forge_: Forge, address: str, repository: str, states: tuple[str, ...]
) -> None:
    repo = repo_for(forge_, "", forge.url + address, repository)
    for state in ("pending", "success", "failure"):
        post(repo, SHA, _status(state), TOKEN, timeout=5)
    assert forge.rejected == []
    posted = forge.statuses()
    assert [p.state for p in posted] == list(states)
    assert {p.sha for p in posted} == {SHA}
    assert {p.key for p in posted} == {"gitferry/apps/web"}


def test_bitbucket_takes_user_and_app_password_as_basic_auth(forge: FakeForge) -> None:
    forge.token = "me:app-pass-word"
    repo = repo_for(Forge.BITBUCKET, "", forge.url + "/bitbucket/2.0", "team/app")
    post(repo, SHA, _status(), "me:app-pass-word", timeout=5)
    assert [p.auth for p in forge.statuses()] == ["Basic"]


def test_a_refused_token_fails_at_once_and_the_message_hides_it(forge: FakeForge) -> None:
    repo = repo_for(Forge.GITHUB, "", forge.url + "/github", "org/app")
    with pytest.raises(NotifyError) as e:
        post(repo, SHA, _status(), "wrong-token-value", timeout=5)
    assert not e.value.retryable
    assert "HTTP 401" in e.value.message and "Bad credentials" in e.value.message
    assert "wrong-token-value" not in e.value.message


def test_server_errors_and_timeouts_are_retried(forge: FakeForge) -> None:
    repo = repo_for(Forge.GITHUB, "", forge.url + "/github", "org/app")
    forge.fail_next = [503]
    with pytest.raises(NotifyError, match="HTTP 503") as e:
        post(repo, SHA, _status(), TOKEN, timeout=5)
    assert e.value.retryable
    closed = Repo(Forge.GITHUB, "http://127.0.0.1:9", "org/app", "")
    with pytest.raises(NotifyError) as e:
        post(closed, SHA, _status(), TOKEN, timeout=2)
    assert e.value.retryable and TOKEN not in e.value.message


def test_gitlab_taking_the_same_state_again_is_no_error(forge: FakeForge) -> None:
    repo = repo_for(Forge.GITLAB, "", forge.url + "/gitlab/api/v4", "group/app")
    post(repo, SHA, _status("pending"), TOKEN, timeout=5)
    post(repo, SHA, _status("pending"), TOKEN, timeout=5)  # GitLab answers 400 "Cannot transition"
    assert [p.state for p in forge.statuses()] == ["running"]


def test_a_redirect_is_not_followed(forge: FakeForge) -> None:
    # The fake answers 404 for unknown paths; a redirect would carry the token away.
    repo = repo_for(Forge.GITHUB, "", forge.url + "/elsewhere", "org/app")
    with pytest.raises(NotifyError, match="HTTP 404") as e:
        post(repo, SHA, _status(), TOKEN, timeout=5)
    assert not e.value.retryable


def test_the_request_shapes() -> None:
    gh = build(repo_for(Forge.GITHUB, "https://github.com/o/r"), SHA, _status(), TOKEN)
    assert (gh.method, gh.url) == ("POST", f"https://api.github.com/repos/o/r/statuses/{SHA}")
    assert gh.headers["Authorization"] == f"Bearer {TOKEN}"
    assert gh.body == {"state": "pending", "context": "gitferry/apps/web",
                       "description": f"pending main@sha1:{SHA[:12]}"}  # fmt: skip
    gl = build(repo_for(Forge.GITLAB, "https://gitlab.com/g/s/r"), SHA, _status(), TOKEN)
    assert gl.url == f"https://gitlab.com/api/v4/projects/g%2Fs%2Fr/statuses/{SHA}"
    assert gl.headers["PRIVATE-TOKEN"] == TOKEN and gl.body["name"] == "gitferry/apps/web"
    az = build(repo_for(Forge.AZURE_DEVOPS, "https://dev.azure.com/org/P/_git/r"), SHA,
               _status("success"), TOKEN)  # fmt: skip
    assert az.url.endswith(
        f"/org/P/_apis/git/repositories/r/commits/{SHA}/statuses?api-version=7.1"
    )
    assert az.body["context"] == {"genre": "gitferry", "name": "apps/web"}
    assert az.body["state"] == "succeeded"
    bb = build(repo_for(Forge.BITBUCKET, "https://bitbucket.org/t/r"), SHA, _status(), TOKEN)
    assert bb.body["url"] == "https://bitbucket.org/t/r"  # Bitbucket requires a url
