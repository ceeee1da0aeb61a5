"""Push webhooks without a cluster: each forge's signature is checked as it signs,
its payload read as its documentation shapes it, a repository recognised however
its URL is written, and a push matched to the syncs whose repository, ref and
paths it moved. The receiver itself runs here too, over HTTP on loopback, against
the in-memory API: it refuses what is unsigned, badly signed or too large, and
its log never holds the secret."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from gitferry.api import Sync, SyncKey, parse_sync
from gitferry.context import Context
from gitferry.receiver import Match, Receiver, decide, match, ref_matches
from gitferry.scheduler import Scheduler
from gitferry.settings import Settings, SettingsError
from gitferry.source import GitRef
from gitferry.webhook import (
    FORGES,
    Kind,
    PayloadError,
    Push,
    UnknownForge,
    parse,
    repo_key,
    sign,
    signed,
    touches,
    verify,
)
from tests.harness import forges
from tests.harness.forges import Commit, Hook
from tests.unit.fakeapi import FakeKube, manifest

SECRET = "s3cr3t-webhook-value"
URL = "https://git.example.com/org/deploy.git"
SHA = "a" * 40
MAIN = "refs/heads/main"


def hooks(secret: str = SECRET) -> dict[str, Hook]:
    """One realistic push per forge, to `URL`'s repository, signed with `secret`."""
    change = [Commit(modified=["deploy/app.yaml"])]
    return {
        "github": forges.github_push(URL, MAIN, SHA, change, secret=secret),
        "gitlab": forges.gitlab_push(URL, MAIN, SHA, change, secret=secret),
        "gitea": forges.gitea_push(URL, MAIN, SHA, change, secret=secret),
        "bitbucket-server": forges.bitbucket_server_push(
            "git.example.com", "org", "deploy", [(MAIN, SHA)], secret=secret
        ),
        "bitbucket-cloud": forges.bitbucket_cloud_push(
            "org/deploy", [("branch", "main", SHA)], secret=secret
        ),
        "generic": forges.generic_push(
            URL, MAIN, secret=secret, paths=["deploy/app.yaml"], after=SHA
        ),
    }


# --- signatures ------------------------------------------------------------------

# The header that carries each forge's proof, as its documentation names it.
PROOF_HEADER = {
    "github": "X-Hub-Signature-256",
    "gitlab": "X-Gitlab-Token",
    "gitea": "X-Gitea-Signature",
    "bitbucket-server": "X-Hub-Signature",
    "bitbucket-cloud": "X-Hub-Signature",
    "generic": "X-Signature-256",
}


def test_every_forge_has_a_builder_and_a_proof_header() -> None:
    assert set(hooks()) == set(FORGES) == set(PROOF_HEADER)


@pytest.mark.parametrize("forge", FORGES)
def test_a_correct_signature_is_accepted(forge: str) -> None:
    hook = hooks()[forge]
    assert signed(forge, hook.headers)
    assert verify(forge, hook.headers, hook.body, SECRET)
    assert verify(forge, hook.headers, hook.body, SECRET.encode())


@pytest.mark.parametrize("forge", FORGES)
def test_another_secret_is_refused(forge: str) -> None:
    hook = hooks("not-the-secret")[forge]
    assert signed(forge, hook.headers)
    assert not verify(forge, hook.headers, hook.body, SECRET)


@pytest.mark.parametrize("forge", FORGES)
def test_a_request_without_its_proof_is_unsigned(forge: str) -> None:
    hook = hooks()[forge]
    bare = {k: v for k, v in hook.headers.items() if k.lower() not in _proof_headers(forge)}
    assert not signed(forge, bare)
    assert not verify(forge, bare, hook.body, SECRET)


def _proof_headers(forge: str) -> set[str]:
    names = {PROOF_HEADER[forge].lower()}
    if forge == "gitea":  # Gitea also signs GitHub's way
        names.add("x-hub-signature-256")
    return names


@pytest.mark.parametrize("forge", [f for f in FORGES if f != "gitlab"])
def test_the_signature_of_another_body_is_refused(forge: str) -> None:
    """A replay: a genuine signature moved onto another body."""
    hook = hooks()[forge]
    tampered = hook.body.replace(SHA.encode(), b"b" * 40)  # another commit
    assert tampered != hook.body
    assert not verify(forge, hook.headers, tampered, SECRET)


@pytest.mark.parametrize(
    ("forge", "value"),
    [
        ("github", "sha1={mac}"),  # GitHub's legacy X-Hub-Signature scheme
        ("github", "{mac}"),  # no algorithm
        ("github", "md5={mac}"),
        ("bitbucket-server", "sha1={mac}"),
        ("generic", "sha512={mac}"),
    ],
)
def test_another_algorithm_is_refused(forge: str, value: str) -> None:
    hook = hooks()[forge]
    mac = forges.hmac_hex(SECRET, hook.body)  # the right HMAC, under another name
    headers = {**hook.headers, PROOF_HEADER[forge]: value.format(mac=mac)}
    assert not verify(forge, headers, hook.body, SECRET)


def test_header_names_are_case_insensitive_and_hex_case_is_not_significant() -> None:
    hook = hooks()["github"]
    mac = forges.hmac_hex(SECRET, hook.body)
    assert verify("github", {"x-hub-signature-256": f"SHA256={mac.upper()}"}, hook.body, SECRET)


def test_gitea_checks_its_own_header_first_and_never_falls_back_past_a_bad_one() -> None:
    hook = hooks()["gitea"]
    good_hub = hook.headers["X-Hub-Signature-256"]
    assert verify("gitea", {"X-Hub-Signature-256": good_hub}, hook.body, SECRET)
    forgejo = {"X-Forgejo-Signature": hook.headers["X-Gitea-Signature"]}
    assert verify("gitea", forgejo, hook.body, SECRET)
    bad_own = {"X-Gitea-Signature": "0" * 64, "X-Hub-Signature-256": good_hub}
    assert not verify("gitea", bad_own, hook.body, SECRET)


def test_an_empty_secret_verifies_nothing() -> None:
    hook = forges.gitlab_push(URL, MAIN, SHA, [], secret="")
    assert not verify("gitlab", hook.headers, hook.body, "")


def test_non_ascii_proofs_are_refused_not_crashing() -> None:
    hook = hooks()["gitlab"]
    assert not verify("gitlab", {"X-Gitlab-Token": "sécret"}, hook.body, SECRET)
    assert not verify("github", {"X-Hub-Signature-256": "sha256=é"}, hook.body, SECRET)


def test_sign_is_what_the_generic_hook_expects() -> None:
    body = b'{"url": "x", "ref": "refs/heads/main"}'
    assert verify("generic", {"X-Signature-256": sign(body, SECRET)}, body, SECRET)


def test_an_unknown_forge_is_an_error() -> None:
    with pytest.raises(UnknownForge):
        verify("sourcehut", {}, b"", SECRET)
    with pytest.raises(UnknownForge):
        parse("sourcehut", {}, b"{}")


# --- payloads --------------------------------------------------------------------


def one(hook: Hook) -> Push:
    delivery = parse(hook.forge, hook.headers, hook.body)
    assert delivery.kind is Kind.PUSH
    (push,) = delivery.pushes
    return push


def test_github_push() -> None:
    commits = [Commit(added=["deploy/new.yaml"]), Commit(removed=["docs/old.md"])]
    push = one(forges.github_push(URL, MAIN, SHA, commits, secret=SECRET, default_branch="trunk"))
    assert push.ref == MAIN and push.branch == "main" and push.tag is None
    assert push.after == SHA
    assert push.default_branch == "trunk"
    assert push.changed_paths == {"deploy/new.yaml", "docs/old.md"}
    assert push.clone_urls == {
        URL,
        "https://git.example.com/org/deploy",
        "git@git.example.com:org/deploy.git",
        "git://git.example.com/org/deploy.git",
    }
    assert push.repo_keys == {"git.example.com/org/deploy"}


@pytest.mark.parametrize("flag", ["created", "deleted", "forced"])
def test_github_new_deleted_or_forced_refs_change_unknown_paths(flag: str) -> None:
    change = [Commit(modified=["docs/a.md"])]
    hook = forges.github_push(URL, MAIN, SHA, change, secret=SECRET, **{flag: True})
    assert one(hook).changed_paths is None


def test_github_may_cut_a_long_commit_list_short() -> None:
    many = [Commit(modified=[f"docs/{i}.md"]) for i in range(20)]
    assert one(forges.github_push(URL, MAIN, SHA, many, secret=SECRET)).changed_paths is None
    files = [f"docs/{i}.md" for i in range(3000)]
    big = [Commit(modified=files)]
    assert one(forges.github_push(URL, MAIN, SHA, big, secret=SECRET)).changed_paths is None
    nineteen = many[:19]
    assert one(forges.github_push(URL, MAIN, SHA, nineteen, secret=SECRET)).changed_paths


def test_github_ping_and_other_events() -> None:
    ping = forges.github_ping(secret=SECRET)
    assert parse("github", ping.headers, ping.body).kind is Kind.PING
    issue = hooks()["github"].with_headers(X_GitHub_Event="issues")
    delivery = parse("github", issue.headers, issue.body)
    assert (delivery.kind, delivery.event, delivery.pushes) == (Kind.IGNORED, "issues", ())


def test_github_form_encoded_payload() -> None:
    from urllib.parse import urlencode

    hook = hooks()["github"]
    form = urlencode({"payload": hook.body.decode()}).encode()
    headers = {**hook.headers, "Content-Type": "application/x-www-form-urlencoded"}
    assert parse("github", headers, form).pushes[0].changed_paths == {"deploy/app.yaml"}


def test_gitlab_push_and_tag_push() -> None:
    push = one(hooks()["gitlab"])
    assert (push.ref, push.after, push.default_branch) == (MAIN, SHA, "main")
    assert push.changed_paths == {"deploy/app.yaml"}
    assert "git@git.example.com:org/deploy.git" in push.clone_urls
    assert push.repo_keys == {"git.example.com/org/deploy"}
    tag = one(forges.gitlab_push(URL, "refs/tags/v1.2.0", SHA, [], secret=SECRET, tag=True))
    assert tag.tag == "v1.2.0" and tag.changed_paths is None


def test_gitlab_lists_at_most_twenty_commits_and_says_how_many() -> None:
    commits = [Commit(modified=["docs/a.md"])] * 20
    hook = forges.gitlab_push(URL, MAIN, SHA, commits, secret=SECRET, total=21)
    assert one(hook).changed_paths is None
    hook = forges.gitlab_push(URL, MAIN, SHA, commits, secret=SECRET, total=20)
    assert one(hook).changed_paths == {"docs/a.md"}


@pytest.mark.parametrize("which", ["before", "after"])
def test_gitlab_and_gitea_new_or_deleted_refs_change_unknown_paths(which: str) -> None:
    change = [Commit(modified=["docs/a.md"])]
    zero = forges.ZERO
    for build in (forges.gitlab_push, forges.gitea_push):
        args: dict[str, Any] = {"before": zero} if which == "before" else {}
        hook = build(URL, MAIN, zero if which == "after" else SHA, change, secret=SECRET, **args)
        assert one(hook).changed_paths is None, build.__name__


def test_gitlab_system_hooks_carry_pushes_too() -> None:
    hook = hooks()["gitlab"].with_headers(X_Gitlab_Event="System Hook")
    assert one(hook).ref == MAIN
    other = hook.with_body(json.dumps({"object_kind": "merge_request"}).encode())
    assert parse("gitlab", other.headers, other.body).kind is Kind.IGNORED


def test_gitea_push() -> None:
    push = one(hooks()["gitea"])
    assert (push.ref, push.after, push.default_branch) == (MAIN, SHA, "main")
    assert push.changed_paths == {"deploy/app.yaml"}
    assert "ssh://git@git.example.com:2222/org/deploy.git" in push.clone_urls
    assert push.repo_keys == {"git.example.com/org/deploy"}


def test_gitea_caps_its_commits_and_older_versions_do_not_say_how_many() -> None:
    commits = [Commit(modified=["docs/a.md"])] * 5
    hook = forges.gitea_push(URL, MAIN, SHA, commits, secret=SECRET, total=6)
    assert one(hook).changed_paths is None
    doc = json.loads(hooks()["gitea"].body)
    del doc["total_commits"]  # before Gitea 1.18
    assert one(hooks()["gitea"].with_body(json.dumps(doc).encode())).changed_paths is None


def test_bitbucket_server_refs_changed_one_push_per_ref() -> None:
    hook = forges.bitbucket_server_push(
        "bb.example.com", "proj", "deploy", [(MAIN, SHA), ("refs/tags/v2", "b" * 40)], secret=SECRET
    )
    delivery = parse(hook.forge, hook.headers, hook.body)
    assert [(p.ref, p.after, p.changed_paths) for p in delivery.pushes] == [
        (MAIN, SHA, None),
        ("refs/tags/v2", "b" * 40, None),
    ]
    assert delivery.pushes[0].repo_keys == {
        "bb.example.com/scm/proj/deploy",
        "bb.example.com/proj/deploy",
    }
    ping = hook.with_headers(X_Event_Key="diagnostics:ping")
    assert parse(hook.forge, ping.headers, b"{}").kind is Kind.PING


def test_bitbucket_cloud_push_branches_tags_and_deletions() -> None:
    hook = forges.bitbucket_cloud_push(
        "team/deploy",
        [("branch", "main", SHA), ("tag", "v3", "c" * 40), ("branch", "gone", None)],
        secret=SECRET,
    )
    pushes = parse(hook.forge, hook.headers, hook.body).pushes
    assert [(p.ref, p.after) for p in pushes] == [
        (MAIN, SHA),
        ("refs/tags/v3", "c" * 40),
        ("refs/heads/gone", None),
    ]
    assert all(p.changed_paths is None for p in pushes)
    assert pushes[0].repo_keys == {"bitbucket.org/team/deploy"}
    assert repo_key("git@bitbucket.org:team/deploy.git") in pushes[0].repo_keys


def test_generic_push() -> None:
    push = one(hooks()["generic"])
    assert (push.ref, push.changed_paths, push.after) == (MAIN, {"deploy/app.yaml"}, SHA)
    unknown = one(forges.generic_push(URL, MAIN, secret=SECRET))
    assert unknown.changed_paths is None


@pytest.mark.parametrize(
    ("forge", "body", "words"),
    [
        ("generic", b"not json", "not JSON"),
        ("generic", b"[1, 2]", "not a JSON object"),
        ("generic", b'{"ref": "refs/heads/main"}', "url"),
        ("generic", b'{"url": "x", "ref": "main"}', "full ref name"),
        ("generic", b'{"url": "x", "ref": "refs/heads/a\\nb"}', "full ref name"),
        ("generic", b'{"url": "x", "ref": "refs/heads/m", "paths": "deploy"}', "paths"),
        ("generic", b'{"url": "x", "ref": "refs/heads/m", "paths": [1]}', "paths"),
        ("generic", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        ("generic", b'{"url": "x", "ref": 1' + b"0" * 5000 + b"}", "not JSON"),
        ("generic", b"\xff\xfe", "not JSON"),
        ("github", b'{"ref": 7}', "full ref name"),
        ("github", b'"just a string"', "full ref name"),
        ("bitbucket-cloud", b'{"push": {"changes": [{"new": {"type": "x"}}]}}', "branch"),
    ],
)
def test_malformed_payloads_are_payload_errors(forge: str, body: bytes, words: str) -> None:
    headers = {
        "github": {"X-GitHub-Event": "push"},
        "bitbucket-cloud": {"X-Event-Key": "repo:push"},
        "generic": {},
    }[forge]
    with pytest.raises(PayloadError, match=words):
        parse(forge, headers, body)


def test_payload_errors_never_quote_the_body() -> None:
    with pytest.raises(PayloadError) as e:
        parse("generic", {}, b'{"url": "x", "ref": "SECRET-LOOKING-VALUE"}')
    assert "SECRET-LOOKING-VALUE" not in str(e.value)


def test_commits_without_file_lists_change_unknown_paths() -> None:
    doc = json.loads(hooks()["github"].body)
    del doc["commits"][0]["modified"]
    assert one(hooks()["github"].with_body(json.dumps(doc).encode())).changed_paths is None
    doc["commits"] = []
    assert one(hooks()["github"].with_body(json.dumps(doc).encode())).changed_paths is None


# --- URLs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://github.com/org/repo.git", "github.com/org/repo"),
        ("https://github.com/org/repo", "github.com/org/repo"),
        ("https://github.com/org/repo/", "github.com/org/repo"),
        ("https://github.com/org/repo.git/", "github.com/org/repo"),
        ("http://GitHub.COM/Org/Repo", "github.com/org/repo"),
        ("https://user:token@github.com/org/repo.git", "github.com/org/repo"),
        ("https://github.com:443/org/repo.git", "github.com/org/repo"),
        ("ssh://git@github.com/org/repo.git", "github.com/org/repo"),
        ("ssh://git@github.com:22/org/repo.git", "github.com/org/repo"),
        ("git@github.com:org/repo.git", "github.com/org/repo"),
        ("github.com:org/repo", "github.com/org/repo"),
        ("git://github.com/org/repo.git", "github.com/org/repo"),
        ("  https://github.com/org//repo.git  ", "github.com/org/repo"),
        ("https://gitlab.example.com/group/sub/proj.git", "gitlab.example.com/group/sub/proj"),
        (
            "ssh://git@gitlab.example.com:2222/group/sub/proj.git",
            "gitlab.example.com/group/sub/proj",
        ),
        ("https://host/scm/proj/repo%20x.git", "host/scm/proj/repo x"),
        ("git@[::1]:org/repo.git", "::1/org/repo"),
        ("https://[::1]:8443/org/repo.git", "::1/org/repo"),
        ("http://127.0.0.1:8080/deploy.git", "127.0.0.1/deploy"),
        ("file:///srv/git/deploy.git", "file:/srv/git/deploy"),
        ("https://github.com/", None),
        ("https://github.com/.git", None),
        ("git@github.com:", None),
        ("/srv/git/deploy.git", None),
        ("deploy", None),
        ("", None),
        ("https://github.com/org/repo%0a.git", None),
        ("https://github.com/org/re\npo.git", None),
        ("https://x/" + "a" * 3000, None),
    ],
)
def test_repo_keys(url: str, key: str | None) -> None:
    assert repo_key(url) == key


def test_every_form_a_forge_gives_is_one_repository() -> None:
    for forge, hook in hooks().items():
        keys = set().union(*(p.repo_keys for p in parse(forge, hook.headers, hook.body).pushes))
        if forge == "bitbucket-server":  # /scm/ in its http clone URL, not in its ssh one
            assert keys == {"git.example.com/scm/org/deploy", "git.example.com/org/deploy"}
        elif forge == "bitbucket-cloud":
            assert keys == {"bitbucket.org/org/deploy"}
        else:
            assert keys == {"git.example.com/org/deploy"}, forge


# --- paths -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("directory", "changed", "touched"),
    [
        (".", ["docs/x"], True),
        ("", ["README.md"], True),
        ("./", ["a/b/c.yaml"], True),
        (".", [], False),
        ("deploy", ["deploy/a.yaml"], True),
        ("deploy/", ["deploy/a.yaml"], True),
        ("./deploy", ["deploy/a.yaml"], True),
        ("deploy", ["deploy/sub/dir/a.yaml"], True),
        ("deploy", ["deployment.yaml"], False),
        ("deploy", ["deploy.yaml"], False),
        ("deploy", ["docs/x"], False),
        ("deploy", ["docs/deploy/a.yaml"], False),
        ("deploy", ["deploy"], True),  # the directory itself: replaced by a file or a link
        ("deploy/prod", ["deploy"], True),  # a parent replaced
        ("deploy/prod", ["deploy/staging/a.yaml"], False),
        ("deploy/prod", ["deploy/prod/a.yaml", "docs/x"], True),
        ("deploy", ["/deploy/a.yaml"], True),
        ("deploy", ["./deploy/a.yaml"], True),
        ("Deploy", ["deploy/a.yaml"], False),  # git paths are case-sensitive
        ("deploy", None, True),  # unknown
    ],
)
def test_path_matching(directory: str, changed: list[str] | None, touched: bool) -> None:
    assert touches(None if changed is None else frozenset(changed), directory) is touched


# --- refs and matching -------------------------------------------------------------


def push(ref: str = MAIN, default: str | None = "main", paths: list[str] | None = None) -> Push:
    changed = frozenset(paths) if paths is not None else None
    return Push(frozenset({URL}), ref, changed, SHA, default)


@pytest.mark.parametrize(
    ("ref", "pushed", "default", "matches"),
    [
        (GitRef(branch="main"), MAIN, "main", True),
        (GitRef(branch="main"), "refs/heads/staging", "main", False),
        (GitRef(branch="main"), "refs/tags/main", "main", False),
        (GitRef(branch="feature/x"), "refs/heads/feature/x", "main", True),
        (GitRef(), MAIN, "main", True),  # no ref: the default branch
        (GitRef(), "refs/heads/staging", "main", False),
        (GitRef(), "refs/heads/staging", None, True),  # the default unknown: any branch
        (GitRef(), "refs/tags/v1", None, False),
        (GitRef(tag="v1"), "refs/tags/v1", "main", True),
        (GitRef(tag="v1"), "refs/tags/v1.1", "main", False),
        (GitRef(tag="v1"), "refs/heads/v1", "main", False),
        (GitRef(semver=">=1.0.0"), "refs/tags/v1.2.0", "main", True),
        (GitRef(semver=">=1.0.0"), "refs/tags/anything", "main", True),  # git is asked
        (GitRef(semver=">=1.0.0"), MAIN, "main", False),
        (GitRef(commit=SHA), MAIN, "main", False),  # a pin never moves
        (GitRef(branch="main", commit=SHA), MAIN, "main", False),
    ],
)
def test_ref_matching(ref: GitRef, pushed: str, default: str | None, matches: bool) -> None:
    assert ref_matches(ref, push(pushed, default)) is matches


def sync(name: str, url: str = URL, path: str = ".", **spec: Any) -> Sync:
    body = manifest("gitferry.dev/v1alpha1", "GitRepositorySync", name, "apps")
    body["spec"] = {"url": url, "path": path, **spec}
    return parse_sync(body)


def test_a_sync_matches_whichever_url_form_it_uses() -> None:
    p = one(hooks()["github"])
    for url in (URL, "git@git.example.com:org/deploy.git", "https://git.example.com/org/deploy/"):
        assert decide(sync("a", url, ref={"branch": "main"}), p, True) is Match.YES, url
    assert decide(sync("b", "https://git.example.com/org/other.git"), p, True) is Match.NO


def test_matching_by_path_skips_untouched_syncs_only_when_their_render_stayed_inside() -> None:
    p = push(paths=["deploy/app.yaml"])
    assert decide(sync("d", path="deploy"), p, confined=True) is Match.YES
    assert decide(sync("docs", path="docs"), p, confined=True) is Match.UNTOUCHED
    # A kustomization may read ../base; no render since the start says nothing.
    assert decide(sync("docs", path="docs"), p, confined=False) is Match.YES
    # The checkout's ignore file changes what every plain render reads.
    ignore = push(paths=[".gitferryignore"])
    assert decide(sync("docs", path="docs"), ignore, confined=True) is Match.YES
    assert decide(sync("docs", path="docs", suspend=True), p, confined=False) is Match.NO


def test_match_sorts_syncs_and_takes_any_of_several_pushes() -> None:
    syncs = [
        sync("web", path="deploy", ref={"branch": "main"}),
        sync("docs", path="docs", ref={"branch": "main"}),
        sync("staging", path="deploy", ref={"branch": "staging"}),
        sync("other", url="https://git.example.com/org/other.git"),
        sync("release", ref={"tag": "v2"}),
    ]
    pushes = [push(paths=["deploy/a.yaml"]), push("refs/tags/v2", paths=None)]
    matched, untouched = match(pushes, syncs, lambda key: True)
    assert [k.name for k in matched] == ["web", "release"]
    assert [k.name for k in untouched] == ["docs"]


# --- settings ----------------------------------------------------------------------------


def test_webhook_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GITFERRY_WEBHOOK_SECRET", "GITFERRY_WEBHOOK_ADDR"):
        monkeypatch.delenv(name, raising=False)
    s = Settings.from_env()
    assert (s.webhook_secret, s.webhook_addr, s.webhook_max_body_bytes) == (
        None,
        ("0.0.0.0", 9292),
        1 << 20,
    )
    monkeypatch.setenv("GITFERRY_WEBHOOK_SECRET", "gitferry-system/gitferry-webhook")
    monkeypatch.setenv("GITFERRY_WEBHOOK_ADDR", "[::]:8443")
    s = Settings.from_env()
    assert s.webhook_secret == ("gitferry-system", "gitferry-webhook")
    assert s.webhook_addr == ("::", 8443)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GITFERRY_WEBHOOK_SECRET", "gitferry-webhook"),
        ("GITFERRY_WEBHOOK_SECRET", "Bad_NS/x"),
        ("GITFERRY_WEBHOOK_SECRET", "ns/"),
        ("GITFERRY_WEBHOOK_ADDR", "9292"),
        ("GITFERRY_WEBHOOK_ADDR", "0.0.0.0:http"),
        ("GITFERRY_WEBHOOK_ADDR", "0.0.0.0:70000"),
        ("GITFERRY_WEBHOOK_MAX_BODY_BYTES", "10"),
    ],
)
def test_bad_webhook_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        Settings.from_env()


# --- the receiver over HTTP, on the in-memory API ------------------------------------------

NS = "apps"
WEBHOOK_SECRET = ("gitferry-system", "gitferry-webhook")


class Requests:
    """Stands in for the scheduler: which syncs run here, what was asked."""

    def __init__(self, watched: set[SyncKey]) -> None:
        self._watched = watched
        self.asked: list[tuple[SyncKey, str]] = []

    def watched(self) -> frozenset[SyncKey]:
        return frozenset(self._watched)

    def request(self, key: SyncKey, why: str) -> None:
        self.asked.append((key, why))


def fake_cluster(secret_data: dict[str, str] | None) -> FakeKube:
    fake = FakeKube(namespaces=("default", NS, WEBHOOK_SECRET[0]))
    if secret_data is not None:
        secret = manifest("v1", "Secret", WEBHOOK_SECRET[1], WEBHOOK_SECRET[0])
        secret["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in secret_data.items()}
        fake.seed(secret)
    for name, path, ref in [("web", "deploy", "main"), ("docs", "docs", "main"),
                            ("staging", "deploy", "staging")]:  # fmt: skip
        body = manifest("gitferry.dev/v1alpha1", "GitRepositorySync", name, NS)
        body["spec"] = {"url": URL, "path": path, "ref": {"branch": ref}}
        fake.seed(body)
    return fake


Exchange = Callable[[Hook], tuple[int, dict[str, Any]]]


def serve(
    fake: FakeKube,
    steps: Callable[[Exchange, Context, Requests], None],
    max_body: int = 1 << 20,
) -> None:
    """Run the receiver on a loopback port, then `steps` with a function that POSTs
    one hook to it and returns the status and JSON answer."""
    ctx = Context(
        kube=fake.kube,
        discovery=None,  # type: ignore[arg-type]
        source=None,  # type: ignore[arg-type]
        settings=Settings(cache_dir=Path("/nonexistent")),
        status=None,  # type: ignore[arg-type]
        events=None,  # type: ignore[arg-type]
    )
    requests = Requests({SyncKey(NS, n) for n in ("web", "docs", "staging")})
    settings = Settings(
        cache_dir=Path("/nonexistent"),
        webhook_secret=WEBHOOK_SECRET,
        webhook_addr=("127.0.0.1", 0),
        webhook_max_body_bytes=max_body,
    )

    async def main() -> None:
        receiver = Receiver(ctx, cast(Scheduler[SyncKey], requests), settings)
        await receiver.start()
        loop = asyncio.get_running_loop()
        base = f"http://127.0.0.1:{receiver.port}"
        try:
            # The test's blocking client runs in a thread; the receiver in this loop.
            await loop.run_in_executor(
                None, steps, lambda hook: forges.post(base, hook), ctx, requests
            )
        finally:
            await receiver.stop()

    asyncio.run(main())


def test_a_signed_push_pokes_the_matching_syncs_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    def steps(post: Exchange, ctx: Context, requests: Requests) -> None:
        # Until a sync rendered here, its render may have read beyond its path.
        assert post(hooks()["github"])[1]["matched"] == 2
        requests.asked.clear()
        for key in requests.watched():
            ctx.unpoke(key, ctx.poked(key))
            ctx.remember_sources(key, [f"{key.name}/cm.yaml"])
        assert post(hooks()["github"]) == (202, {"event": "push", "kind": "push", "matched": 1})
        assert requests.asked == [(SyncKey(NS, "web"), "webhook")]
        assert ctx.poked(SyncKey(NS, "web")) is not None
        assert ctx.poked(SyncKey(NS, "docs")) is None

    serve(fake_cluster({"token": SECRET}), steps)
    line = [r.getMessage() for r in caplog.records if "action=webhook " in r.getMessage()][-1]
    assert "status=202" in line and "matched=1" in line and "untouched=1" in line
    assert f"ref={MAIN}" in line and "repo=git.example.com/org/deploy" in line
    assert SECRET not in caplog.text


def test_refusals(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    good = hooks()["github"]

    def steps(post: Exchange, ctx: Context, requests: Requests) -> None:
        unsigned = good.with_headers(X_Hub_Signature_256=None)
        assert post(unsigned)[0] == 401
        assert post(good.with_headers(X_Hub_Signature_256="sha256=" + "0" * 64))[0] == 403
        assert post(good.with_body(good.body + b" "))[0] == 403  # a replay onto another body
        assert post(hooks("wrong")["gitlab"])[0] == 403
        assert post(forges.Hook("sourcehut", good.headers, good.body))[0] == 404
        garbage = forges.generic_push(URL, "main", secret=SECRET)
        status, answer = post(garbage)
        assert status == 400 and "full ref name" in answer["detail"]
        too_big = good.with_body(b"x" * (64 * 1024 + 1))
        assert post(too_big)[0] == 413
        assert post(forges.github_ping(secret=SECRET)) == (200, {"event": "ping", "kind": "ping"})
        assert post(good.with_headers(X_GitHub_Event="issues"))[0] == 200
        assert requests.asked == []  # nothing refused asked for a reconcile
        assert ctx.poked(SyncKey(NS, "web")) is None

    serve(fake_cluster({"github": SECRET, "gitlab": SECRET, "generic": SECRET}), steps, 64 * 1024)
    assert SECRET not in caplog.text
    statuses = [r.getMessage() for r in caplog.records if "action=webhook " in r.getMessage()]
    assert len(statuses) == 9  # one line per request


def test_the_secret_is_read_from_its_secret_by_forge_and_a_missing_one_refuses() -> None:
    def only_github(post: Exchange, ctx: Context, requests: Requests) -> None:
        assert post(hooks()["github"])[0] == 202
        assert post(hooks()["gitlab"])[0] == 404  # no key for it, and no `token`

    serve(fake_cluster({"github": SECRET + "\n"}), only_github)  # whitespace trimmed

    def missing(post: Exchange, ctx: Context, requests: Requests) -> None:
        assert post(hooks()["github"])[0] == 404

    serve(fake_cluster(None), missing)

    def forbidden(post: Exchange, ctx: Context, requests: Requests) -> None:
        assert post(hooks()["github"])[0] == 503

    fake = fake_cluster({"token": SECRET})
    fake.fail("GET", "/api/v1/namespaces/gitferry-system/secrets", 403, "forbidden", times=None)
    serve(fake, forbidden)


def test_a_push_is_refused_when_the_syncs_cannot_be_listed() -> None:
    def steps(post: Exchange, ctx: Context, requests: Requests) -> None:
        assert post(hooks()["github"])[0] == 503
        assert requests.asked == []

    fake = fake_cluster({"token": SECRET})
    fake.fail("GET", "/apis/gitferry.dev", 500, "etcd is down", times=None)
    serve(fake, steps)


# --- the poke, as the fetch stage reads it -----------------------------------------------


def test_a_poke_lasts_until_a_fetch_heard_the_remote_after_it(tmp_path: Path) -> None:
    ctx = Context(
        kube=None,  # type: ignore[arg-type]
        discovery=None,  # type: ignore[arg-type]
        source=None,  # type: ignore[arg-type]
        settings=Settings(cache_dir=tmp_path),
        status=None,  # type: ignore[arg-type]
        events=None,  # type: ignore[arg-type]
    )
    key = SyncKey(NS, "web")
    assert ctx.poked(key) is None
    ctx.poke(key)
    first = ctx.poked(key)
    assert first is not None
    ctx.poke(key)  # a second push while the first reconcile fetched
    ctx.unpoke(key, first)
    assert ctx.poked(key) not in (None, first)  # the newer poke stays
    ctx.unpoke(key, ctx.poked(key))
    assert ctx.poked(key) is None
    ctx.remember_sources(key, ["deploy/a.yaml"])
    assert ctx.confined(key)
    ctx.remember_sources(key, ["deploy/kustomization.yaml"])
    assert not ctx.confined(key)
    ctx.forget(key)
    assert not ctx.confined(key)
