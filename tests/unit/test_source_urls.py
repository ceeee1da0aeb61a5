"""The fetch stage's pure parts: which URLs and refs reach git, which semver tag wins,
and what a user reads when git fails. No git process runs here."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from gitferry.deadline import Deadline
from gitferry.source import (
    AuthError,
    FetchError,
    GitCredentials,
    GitRef,
    GitSource,
    InvalidRef,
    InvalidURL,
    RevisionMissing,
    SourceSettings,
    parse_url,
    redact_url,
    validate_ref,
)
from gitferry.source.refs import ref_name_problem, select_semver_tag
from gitferry.source.runner import classify_git_error, scrub

# --- URLs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "scheme", "host"),
    [
        ("https://git.example.com/org/deploy.git", "https", "git.example.com"),
        ("http://127.0.0.1:8080/deploy.git", "http", "127.0.0.1"),
        ("ssh://git@git.example.com:2222/org/deploy.git", "ssh", "git.example.com"),
        ("ssh://git.example.com/deploy", "ssh", "git.example.com"),
        ("git@github.com:org/deploy.git", "ssh", "github.com"),
        ("github.com:org/deploy.git", "ssh", "github.com"),
        ("git@[::1]:org/deploy.git", "ssh", "::1"),
        ("https://[::1]:8443/deploy.git", "https", "::1"),
    ],
)
def test_accepted_urls(url: str, scheme: str, host: str) -> None:
    parsed = parse_url(url)
    assert (parsed.scheme, parsed.host, parsed.url) == (scheme, host, url)


def test_file_urls_only_when_allowed() -> None:
    assert parse_url("file:///srv/git/deploy.git", allow_file_urls=True).scheme == "file"
    with pytest.raises(InvalidURL, match="file:// URLs are not allowed"):
        parse_url("file:///srv/git/deploy.git")
    with pytest.raises(InvalidURL):
        parse_url("file://otherhost/srv/deploy.git", allow_file_urls=True)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "-oProxyCommand=touch /tmp/x",
        "--upload-pack=touch /tmp/x",
        "ext::sh -c touch% /tmp/pwned",
        "ext::sh",
        "fd::17",
        "fd::0,1/x",
        "foo::https://example.com/r.git",
        "git://example.com/r.git",
        "ftp://example.com/r.git",
        "git+ssh://example.com/r.git",
        "/srv/git/deploy.git",
        "./deploy.git",
        "../deploy",
        "https://",
        "https:///deploy.git",
        "https://example.com",
        "https://example.com:99999/r.git",
        "https://exa mple.com/r.git",
        "https://example.com/r.git\n",
        "git@-oProxyCommand=touch:r.git",
        "-git@host:r.git",
        "host:",
        "ssh://-oProxyCommand=x/r.git",
    ],
)
def test_refused_urls(url: str) -> None:
    with pytest.raises(InvalidURL):
        parse_url(url, allow_file_urls=True)


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("https://alice:s3cr3t-pw@git.example.com/org/r.git", "s3cr3t-pw"),
        ("https://ghp_token123456@git.example.com/org/r.git", "ghp_token123456"),
        ("http://alice:s3cr3t-pw@127.0.0.1:8080/r.git", "s3cr3t-pw"),
        ("ssh://git:s3cr3t-pw@git.example.com/r.git", "s3cr3t-pw"),
    ],
)
def test_credentials_in_url_are_refused_without_quoting_them(url: str, secret: str) -> None:
    with pytest.raises(InvalidURL) as err:
        parse_url(url)
    assert "spec.secretRef" in err.value.message
    assert secret not in err.value.message
    assert "git.example.com" in err.value.message or "127.0.0.1" in err.value.message


def test_redact_url_strips_credentials_only() -> None:
    assert redact_url("https://u:p@h/r.git") == "https://h/r.git"
    assert redact_url("https://token@h/r.git") == "https://h/r.git"
    assert redact_url("ssh://git:pw@h/r.git") == "ssh://git@h/r.git"
    assert redact_url("ssh://git@h:22/r.git") == "ssh://git@h:22/r.git"
    assert redact_url("git@h:r.git") == "git@h:r.git"


def test_git_source_validate_url_follows_the_setting(tmp_path: Path) -> None:
    strict = GitSource(SourceSettings(cache_dir=tmp_path / "a"))
    loose = GitSource(SourceSettings(cache_dir=tmp_path / "b", allow_file_urls=True))
    try:
        with pytest.raises(InvalidURL):
            strict.validate_url("file:///srv/r.git")
        loose.validate_url("file:///srv/r.git")
        strict.validate_url("https://example.com/r.git")
    finally:
        strict.close()
        loose.close()
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# --- refs ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["main", "feature/x", "release-1.0", "v1.2.0", "a.b/c_d", "@x"])
def test_valid_ref_names(name: str) -> None:
    assert ref_name_problem(name) is None


@pytest.mark.parametrize(
    "name",
    [
        "",
        "-main",
        "--upload-pack=x",
        "a..b",
        "main branch",
        "a\tb",
        "a\x7fb",
        "a:b",
        "a~1",
        "a^",
        "a?",
        "a*",
        "a[b",
        "a\\b",
        "a@{1}",
        "@",
        "/main",
        "main/",
        "a//b",
        "main.",
        ".hidden",
        "a/.b",
        "main.lock",
        "a.lock/b",
    ],
)
def test_invalid_ref_names(name: str) -> None:
    assert ref_name_problem(name) is not None
    with pytest.raises(InvalidRef, match="spec.ref.branch"):
        validate_ref(GitRef(branch=name))
    with pytest.raises(InvalidRef, match="spec.ref.tag"):
        validate_ref(GitRef(tag=name))


@pytest.mark.parametrize("commit", ["abc123", "g" * 40, "-" + "a" * 39, "a" * 41, "a" * 64])
def test_commit_must_be_a_full_sha(commit: str) -> None:
    with pytest.raises(InvalidRef, match="spec.ref.commit"):
        validate_ref(GitRef(commit=commit))


def test_valid_refs_pass() -> None:
    validate_ref(GitRef())
    validate_ref(GitRef(branch="main", commit="A" * 40))
    validate_ref(GitRef(semver=">=1.0.0 <2.0.0"))


@pytest.mark.parametrize("text", [">=foo", "1.2.3 <<", "\x00"])
def test_invalid_semver_range(text: str) -> None:
    with pytest.raises(InvalidRef, match="spec.ref.semver"):
        validate_ref(GitRef(semver=text))


# --- semver ----------------------------------------------------------------


def test_semver_skips_a_prerelease_the_range_does_not_name() -> None:
    tags = ["v1.9.0", "v1.10.0-rc.1", "v2.0.0"]
    assert select_semver_tag(">=1.0.0 <2.0.0", tags) == "v1.9.0"
    assert select_semver_tag(">=1.0.0 <2.0.0", [*tags, "v1.10.0"]) == "v1.10.0"


def test_semver_range_naming_a_prerelease_matches_it() -> None:
    assert select_semver_tag(">=1.10.0-rc.0", ["v1.9.0", "v1.10.0-rc.1"]) == "v1.10.0-rc.1"
    # ...but only prereleases of that same major.minor.patch.
    assert select_semver_tag(">=1.10.0-rc.0", ["v1.9.0", "v1.11.0-rc.1"]) is None
    assert select_semver_tag("^1.2.3-beta.2", ["1.2.3-beta.4", "1.2.4-beta.1"]) == "1.2.3-beta.4"


def test_semver_upper_bound_does_not_admit_its_own_prerelease() -> None:
    # semantic_version.NpmSpec("<2.0.0") matches 2.0.0-rc.1; npm does not.
    assert select_semver_tag("<2.0.0", ["v1.0.0", "v2.0.0-rc.1"]) == "v1.0.0"
    assert select_semver_tag("*", ["v1.0.0", "v1.1.0-rc.1"]) == "v1.0.0"


def test_semver_alternatives_each_name_their_prereleases() -> None:
    tags = ["2.0.0-rc.2", "1.2.3", "1.9.9-rc.1"]
    assert select_semver_tag("1.2.3 || >=2.0.0-rc.1 <2.0.0", tags) == "2.0.0-rc.2"
    assert select_semver_tag("1.2.3 || >=1.0.0 <1.9.9", tags) == "1.2.3"


@pytest.mark.parametrize(
    ("range_text", "expected"),
    [
        (">= 1.0.0", "v2.0.0"),
        (">= 1.0.0 < 2.0.0", "v1.2.0"),
        ("^ 1.0.0", "v1.2.0"),
        ("< v2", "v1.2.0"),
    ],
)
def test_semver_allows_a_space_after_an_operator_as_npm_does(
    range_text: str, expected: str
) -> None:
    assert select_semver_tag(range_text, ["v0.9.0", "v1.2.0", "v2.0.0"]) == expected


def test_semver_leading_v_is_ignored_in_tags_and_ranges() -> None:
    tags = ["v1.2.0", "1.3.0", "V1.4.0", "release-1.5.0", "latest", "v1.2", "v2.0.0"]
    assert select_semver_tag("^1.0.0", tags) == "V1.4.0"
    assert select_semver_tag(">=v1.0.0 <v1.4.0", tags) == "1.3.0"
    assert select_semver_tag("~v1.2.0", tags) == "v1.2.0"


def test_semver_no_match_is_none() -> None:
    assert select_semver_tag(">=3.0.0", ["v1.0.0", "v2.0.0"]) is None
    assert select_semver_tag("^1.0.0", []) is None


def test_semver_tie_between_spellings_is_deterministic() -> None:
    assert select_semver_tag("1.0.0", ["v1.0.0", "1.0.0"]) == "v1.0.0"
    assert select_semver_tag("1.0.0", ["1.0.0", "v1.0.0"]) == "v1.0.0"


# --- git's errors ------------------------------------------------------------

URL = "https://git.example.com/org/deploy.git"


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [
        ("fatal: Authentication failed for 'https://git.example.com/org/deploy.git/'", "auth"),
        (
            "fatal: could not read Username for 'https://git.example.com': "
            "terminal prompts disabled",
            "auth",
        ),
        (
            "fatal: unable to access 'https://git.example.com/org/deploy.git/': "
            "The requested URL returned error: 403",
            "auth",
        ),
        (
            "git@git.example.com: Permission denied (publickey).\r\n"
            "fatal: Could not read from remote repository.\n\n"
            "Please make sure you have the correct access rights\nand the repository exists.",
            "auth",
        ),
        (
            "No ED25519 host key is known for [127.0.0.1]:2222 and you have requested "
            "strict checking.\r\nHost key verification failed.\r\n"
            "fatal: Could not read from remote repository.",
            "hostkey",
        ),
        ("remote: HTTP Basic: Access denied\nfatal: Authentication failed for 'x'", "auth"),
        ("error: cannot open FETCH_HEAD: Permission denied", "other"),
        ("fatal: couldn't find remote ref refs/heads/nope", "notfound"),
        ("fatal: remote error: upload-pack: not our ref " + "1" * 40, "notfound"),
        (
            "fatal: unable to access 'https://git.example.com/org/deploy.git/': "
            "Failed to connect to git.example.com port 443: Connection refused",
            "other",
        ),
        (
            "fatal: unable to access 'https://git.example.com/': Could not resolve host: "
            "git.example.com",
            "other",
        ),
        ("", "other"),
    ],
)
def test_git_errors_are_classified(stderr: str, kind: str) -> None:
    err = classify_git_error(stderr, action="fetch", url=URL, wanted="branch 'nope'")
    expected = {
        "auth": AuthError,
        "hostkey": AuthError,
        "notfound": RevisionMissing,
        "other": FetchError,
    }[kind]
    assert type(err) is expected
    assert "\n" not in err.message and "Traceback" not in err.message
    assert URL in err.message
    if kind == "hostkey":
        assert "known_hosts" in err.message
    if kind == "notfound":
        assert "branch 'nope'" in err.message
    if kind == "auth":
        assert "correct access rights" not in err.message


def test_git_error_message_keeps_gits_words() -> None:
    err = classify_git_error(
        "remote: Counting objects: 3\nfatal: couldn't find remote ref refs/heads/nope\n",
        action="fetch",
        url=URL,
        wanted="branch 'nope'",
    )
    assert err.message == (
        f"branch 'nope' not found in {URL}: fatal: couldn't find remote ref refs/heads/nope"
    )


def test_secrets_are_scrubbed_from_messages() -> None:
    creds = GitCredentials(username="alice", password="hunter2-pw", bearer_token="tok-abc-123")
    stderr = (
        "fatal: unable to access 'https://alice:hunter2-pw@git.example.com/': "
        "header Authorization: Basic YWxpY2U6aHVudGVyMi1wdw== Bearer tok-abc-123 refused"
    )
    err = classify_git_error(stderr, action="fetch", url=URL, secret_values=creds.secret_values())
    for secret in ("hunter2-pw", "tok-abc-123", "YWxpY2U6aHVudGVyMi1wdw=="):
        assert secret not in err.message
    assert "***" in err.message


def test_scrub_replaces_longest_values_first() -> None:
    assert scrub("pw=abcdef and abc", ["abc", "abcdef"]) == "pw=*** and ***"
    assert scrub("see https://u:p@h/x", []) == "see https://***@h/x"


# --- credentials -------------------------------------------------------------


def test_credentials_from_secret_data() -> None:
    creds = GitCredentials.from_secret_data(
        {
            "username": "alice\n",
            "password": "pw\n",
            "bearerToken": "",
            "ca.crt": "-----BEGIN CERTIFICATE-----\n",
            "identity": "key\n",
            "known_hosts": "host ssh-ed25519 AAAA\n",
            "unrelated": "x",
        }
    )
    assert creds == GitCredentials(
        username="alice",
        password="pw",
        bearer_token=None,
        ca_crt="-----BEGIN CERTIFICATE-----\n",
        identity="key\n",
        known_hosts="host ssh-ed25519 AAAA\n",
    )


def test_credentials_never_show_secrets() -> None:
    creds = GitCredentials(
        username="alice", password="pw-123456", bearer_token="tok-123456", identity="KEY-123456"
    )
    text = repr(creds) + str(creds) + creds.fingerprint(KEY)
    for secret in ("pw-123456", "tok-123456", "KEY-123456"):
        assert secret not in text


KEY = bytes(range(32))


def test_fingerprint_tells_credentials_apart() -> None:
    a = GitCredentials(username="alice", password="one")
    fp = a.fingerprint(KEY)
    assert fp == GitCredentials(username="alice", password="one").fingerprint(KEY)
    assert fp != GitCredentials(username="alice", password="two").fingerprint(KEY)
    assert fp != GitCredentials(username="alice1", password="ne").fingerprint(KEY)
    assert GitCredentials().fingerprint(KEY) != GitCredentials(known_hosts="x").fingerprint(KEY)
    assert len(fp) == 64


def test_fingerprint_is_stable_for_one_key_and_differs_between_keys() -> None:
    # Mirrors are named by it and adopted by the next process on the same cache:
    # the same key must give the same name there, another key an unrelated one.
    a = GitCredentials(username="alice", password="one")
    assert a.fingerprint(KEY) == a.fingerprint(bytes(KEY))
    assert a.fingerprint(KEY) != a.fingerprint(bytes(32))
    assert hashlib.scrypt(  # scrypt of the fields, salted with the key: no fast hash
        json.dumps(["alice", "one", None, None, None, None]).encode(),
        salt=KEY,
        n=1 << 14,
        r=8,
        p=1,
        dklen=32,
    ).hex() == a.fingerprint(KEY)


def test_ssh_without_known_hosts_is_refused_before_git_runs(tmp_path: Path) -> None:
    source = GitSource(SourceSettings(cache_dir=tmp_path / "cache"))
    try:
        for creds in (None, GitCredentials(identity="key")):
            with pytest.raises(AuthError, match="known_hosts is required for SSH"):
                source.fetch(
                    "git@git.example.com:org/deploy.git", GitRef(), creds, Deadline.after(30), 60
                )
        assert not any((source._cache.mirrors_dir).iterdir())
    finally:
        source.close()


@pytest.mark.parametrize(
    "creds",
    [
        GitCredentials(username="a", password="b", bearer_token="c"),
        GitCredentials(username="a"),
        GitCredentials(password="b"),
        GitCredentials(bearer_token="a\r\nX-Injected: 1"),
    ],
)
def test_unusable_https_credentials_are_refused(tmp_path: Path, creds: GitCredentials) -> None:
    source = GitSource(SourceSettings(cache_dir=tmp_path / "cache"))
    try:
        with pytest.raises(AuthError):
            source.fetch(URL, GitRef(), creds, Deadline.after(30), 60)
    finally:
        source.close()


def test_scp_style_url_with_a_token_is_refused_without_echoing_it() -> None:
    with pytest.raises(InvalidURL) as e:
        parse_url("alice:ghp_SECRETTOKEN@github.com:org/repo.git")
    assert "ghp_SECRETTOKEN" not in str(e.value) and "secretRef" in str(e.value)
