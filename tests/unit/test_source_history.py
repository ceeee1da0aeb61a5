"""Who changed what, read from real local git repositories: a revision's subject,
author and times, the paths changed since the revision applied before, bounded
in paths, bytes and time, and never a git command but `cat-file` on the mirror."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import git
import pytest

from gitferry.deadline import Deadline
from gitferry.source import GitRef, GitSource, HistoryLimits, SourceSettings, commit_of, history
from gitferry.source.history import RevisionInfo, clean_text, read_revision
from tests.harness.gitrepo import AUTHOR_NAME, WorkRepo, make_repo, run_git

MINUTE = 60.0


@pytest.fixture
def repo(tmp_path: Path) -> WorkRepo:
    return make_repo(tmp_path / "git", "app")


@pytest.fixture
def source(tmp_path: Path) -> Iterator[GitSource]:
    src = GitSource(SourceSettings(cache_dir=tmp_path / "cache", allow_file_urls=True))
    yield src
    src.close()


def read(
    repo: WorkRepo, sha: str, since: str | None = None, limits: HistoryLimits | None = None
) -> RevisionInfo:
    """read_revision on the work repository's own object store."""
    prior = f"main@sha1:{since}" if since else None
    return read_revision(
        repo.path / ".git",
        f"main@sha1:{sha}",
        prior,
        Deadline.after(MINUTE),
        home=repo.path.parent / "home",
        limits=limits,
    )


def raw_commit(repo: WorkRepo, body: bytes) -> str:
    """Write a commit object exactly as given (git would refuse to make some)."""
    out = run_git(
        ["hash-object", "-t", "commit", "-w", "--stdin", "--literally"],
        repo.env,
        cwd=repo.path,
        input=body,
    )
    return out.stdout.strip()


def raw(repo: WorkRepo, author: bytes, message: bytes, headers: bytes = b"") -> str:
    tree = repo.git("rev-parse", "HEAD^{tree}").strip().encode()
    return raw_commit(
        repo,
        b"tree " + tree + b"\n"
        b"author " + author + b" <ada@example.invalid> 1700000000 +0100\n"
        b"committer C <c@example.invalid> 1700000100 -0230\n" + headers + b"\n" + message,
    )


# --- the commit ---------------------------------------------------------------------


def test_a_revision_names_its_subject_author_and_times(repo: WorkRepo) -> None:
    repo.commit({"a.yaml": "a: 1\n"}, "first")
    sha = repo.commit({"a.yaml": "a: 2\n"}, "Scale web\nto 3\n\nThe body is not the subject.")
    info = read(repo, sha)
    assert info.revision == f"main@sha1:{sha}" and info.commit == sha
    assert info.subject == "Scale web to 3"  # git's %s: the first paragraph on one line
    assert info.author == AUTHOR_NAME
    assert info.committed_at is not None and info.authored_at is not None
    assert info.committed_at.timestamp() == 1_700_000_002  # one second per commit
    assert not info.unknown and not info.timed_out
    # No earlier revision: the paths are unknown, not "nothing changed".
    assert info.paths.unknown == "no earlier revision was applied" and info.paths.lines() == ()


def test_the_author_address_is_never_read(repo: WorkRepo) -> None:
    repo.commit({"a.yaml": "a\n"}, "first")
    sha = raw(repo, b"Ada Lovelace", b"subject\n")
    info = read(repo, sha)
    assert info.author == "Ada Lovelace"
    assert "ada@example.invalid" not in repr(info)


def test_commit_times_keep_their_offsets_and_absurd_ones_read_as_nothing(repo: WorkRepo) -> None:
    repo.commit({"a.yaml": "a\n"}, "first")
    info = read(repo, raw(repo, b"Ada", b"s\n"))
    assert info.authored_at is not None and info.authored_at.isoformat().endswith("+01:00")
    assert info.committed_at is not None and info.committed_at.isoformat().endswith("-02:30")
    tree = repo.git("rev-parse", "HEAD^{tree}").strip().encode()
    odd = raw_commit(
        repo,
        b"tree " + tree + b"\nauthor A <a@x> 99999999999999999999 +9999\n"
        b"committer C <c@x> 1700000000 +0000\n\nodd\n",
    )
    info = read(repo, odd)
    assert info.authored_at is None and info.subject == "odd" and info.author == "A"


def test_control_and_bidi_characters_never_reach_a_reader(repo: WorkRepo) -> None:
    repo.commit({"a.yaml": "a\n"}, "first")
    sha = raw(repo, b"Ada\x1b[31m \xe2\x80\xaeLovelace\x07", b"Scale\tweb\x1b]0;x\x07 to\r3\n")
    info = read(repo, sha)
    assert info.subject == "Scale web ]0;x to 3"
    assert info.author == "Ada [31m Lovelace"
    assert all(c.isprintable() for c in info.subject + info.author)


def test_a_huge_message_is_read_only_so_far_and_capped(
    repo: WorkRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.commit({"a.yaml": "a\n"}, "first")
    huge = raw(repo, b"Ada Lovelace", b"word " * 400_000 + b"\n\nbody\n")  # 2 MB subject
    small = repo.commit({"a.yaml": "b\n"}, "after")
    seen: list[int] = []
    real = history._parse_commit

    def spy(repo_: git.Repo, binsha: bytes, data: bytes) -> git.Commit:
        seen.append(len(data))
        return real(repo_, binsha, data)

    monkeypatch.setattr(history, "_parse_commit", spy)
    info = read(repo, huge)
    assert seen == [HistoryLimits().max_commit_bytes]
    assert info.author == "Ada Lovelace"
    assert len(info.subject) == HistoryLimits().max_subject and info.subject.endswith("…")
    # The cat-file process is restarted after a short read: the next object reads right.
    both = read(repo, small, since=huge)
    assert both.subject == "after" and both.paths.lines() == ("a.yaml",)


def test_non_utf8_author_names_read_with_their_encoding_or_replaced(repo: WorkRepo) -> None:
    repo.commit({"a.yaml": "a\n"}, "first")
    latin = raw(repo, b"Ad\xe9 Lovelace", b"R\xe9sum\xe9\n", b"encoding ISO-8859-1\n")
    assert (read(repo, latin).author, read(repo, latin).subject) == ("Adé Lovelace", "Résumé")
    undeclared = read(repo, raw(repo, b"Ad\xe9 Lovelace", b"caf\xe9\n"))
    assert undeclared.author == "Ad\ufffd Lovelace" and undeclared.subject == "caf\ufffd"
    for bogus in (b"encoding no-such-encoding\n", b"encoding rot13\n", b"encoding idna\n"):
        info = read(repo, raw(repo, b"Ad\xe9 Lovelace", b"s\xe9\n", bogus))
        assert not info.unknown, bogus
        assert info.author == "Ad\ufffd Lovelace" and info.subject == "s\ufffd"


def test_a_revision_that_names_no_commit_is_unknown_not_an_error(repo: WorkRepo) -> None:
    repo.commit({"a.yaml": "a\n"}, "first")
    missing = "0" * 40
    info = read(repo, missing)
    assert info.subject == "" and "not in the local mirror" in info.unknown
    blob = repo.git("rev-parse", "HEAD:a.yaml").strip()
    assert "could not be read" in read(repo, blob).unknown
    gone = read_revision(
        repo.path / "nowhere", f"main@sha1:{missing}", None, Deadline.after(MINUTE), home=repo.path
    )
    assert "cannot be read" in gone.unknown


# --- the paths ------------------------------------------------------------------------


def test_paths_changed_between_two_revisions_sorted_with_renames(repo: WorkRepo) -> None:
    a = repo.commit(
        {
            "deploy/app.yaml": "replicas: 1\n",
            "deploy/old-name.yaml": "kind: Service\n",
            "deploy/same/x.yaml": "x\n",
            "gone/y.yaml": "y\n",
            "keep/.gitkeep": "",
            "moved-and-edited.yaml": "v: 1\n",
        },
        "first",
    )
    b = repo.commit(
        {
            "deploy/app.yaml": "replicas: 3\n",
            "deploy/old-name.yaml": None,
            "deploy/new-name.yaml": "kind: Service\n",
            "gone/y.yaml": None,
            "added/z.yaml": "z\n",
            "other/.gitkeep": "",  # an empty file is never paired as a rename
            "moved-and-edited.yaml": None,
            "edited.yaml": "v: 2\n",
        },
        "second",
    )
    paths = read(repo, b, since=a).paths
    assert paths.complete and paths.more == 0
    assert paths.lines() == (
        "added/z.yaml",
        "deploy/app.yaml",
        "deploy/old-name.yaml -> deploy/new-name.yaml",
        "edited.yaml",
        "gone/y.yaml",
        "moved-and-edited.yaml",
        "other/.gitkeep",
    )
    status = {c.path: c.status for c in paths.changes}
    assert status["deploy/new-name.yaml"] == "renamed" and status["gone/y.yaml"] == "deleted"
    assert status["edited.yaml"] == "added" and status["deploy/app.yaml"] == "modified"
    # The same revision twice: nothing changed, and that is known.
    same = read(repo, b, since=b).paths
    assert same.complete and same.lines() == ()


def test_a_directory_that_became_a_file_and_a_mode_change_are_changes(repo: WorkRepo) -> None:
    a = repo.commit({"d/one.yaml": "1\n", "d/two.yaml": "2\n", "run.sh": "echo\n"}, "first")
    (repo.path / "run.sh").chmod(0o755)
    shutil.rmtree(repo.path / "d")
    b = repo.commit({"d": "now a file\n"}, "second")
    assert read(repo, b, since=a).paths.lines() == ("d", "d/one.yaml", "d/two.yaml", "run.sh")


def test_unreadable_path_bytes_are_shown_replaced(repo: WorkRepo) -> None:
    a = repo.commit({"a.yaml": "a\n"}, "first")
    odd = os.fsdecode(b"caf\xe9\x1b.yaml")  # not UTF-8, and an escape
    (repo.path / odd).write_text("x\n")
    b = repo.commit({}, "second")
    assert read(repo, b, since=a).paths.lines() == ("caf\ufffd .yaml",)


def test_paths_are_capped_and_counted(repo: WorkRepo) -> None:
    a = repo.commit({"keep.yaml": "k\n"}, "first")
    b = repo.commit({f"f{i:02}.yaml": f"{i}\n" for i in range(25)}, "many")
    paths = read(repo, b, since=a, limits=HistoryLimits(max_paths=10, max_path=7)).paths
    assert len(paths.changes) == 10 and paths.more == 15 and paths.complete
    assert paths.lines()[0] == "f00.ya…" and paths.lines()[-1] == "and 15 more"
    assert paths.describe() == "10+15"


def test_the_previous_revision_is_read_from_the_shallow_mirror_the_fetcher_keeps(
    repo: WorkRepo, source: GitSource
) -> None:
    repo.commit({"deploy/a.yaml": "a: 1\n", "deploy/b.yaml": "b\n"}, "first")
    repo.push()
    first = source.fetch(repo.bare.file_url, GitRef(branch="main"), None, Deadline.after(60), 0)
    repo.commit({"deploy/a.yaml": "a: 2\n", "deploy/c.yaml": "c\n"}, "Scale web to 3")
    repo.push()
    second = source.fetch(repo.bare.file_url, GitRef(branch="main"), None, Deadline.after(60), 0)
    assert second.mirror is not None
    shallow = run_git(["rev-parse", "--is-shallow-repository"], repo.env, cwd=second.mirror)
    assert shallow.stdout.strip() == "true"  # both were fetched with --depth=1
    info = source.describe(second, first.revision, Deadline.after(MINUTE))
    assert info.subject == "Scale web to 3" and info.author == AUTHOR_NAME
    assert info.paths.lines() == ("deploy/a.yaml", "deploy/c.yaml")
    assert source.describe(second, first.revision, Deadline.after(MINUTE)) is info  # remembered


def test_a_previous_revision_missing_from_the_mirror_is_unknown(
    repo: WorkRepo, source: GitSource
) -> None:
    old = repo.commit({"a.yaml": "a: 1\n"}, "first")
    repo.commit({"a.yaml": "a: 2\n"}, "second")
    repo.push()
    # A fresh cache (an operator restart) fetches only the newest commit, depth 1.
    checkout = source.fetch(repo.bare.file_url, GitRef(branch="main"), None, Deadline.after(60), 0)
    info = source.describe(checkout, f"main@sha1:{old}", Deadline.after(MINUTE))
    assert info.subject == "second" and not info.unknown
    assert info.paths.lines() == () and not info.paths.complete
    assert info.paths.unknown == f"the previous revision main@sha1:{old} is not in the local mirror"
    assert info.paths.describe() == "unknown"
    # Nothing was fetched to find it.
    assert checkout.mirror is not None
    assert run_git(["cat-file", "-e", old], repo.env, cwd=checkout.mirror, check=False).returncode


# --- time -----------------------------------------------------------------------------


def test_no_time_left_in_the_reconcile_means_unknown_at_once(repo: WorkRepo) -> None:
    sha = repo.commit({"a.yaml": "a\n"}, "first")
    info = read_revision(
        repo.path / ".git", f"main@sha1:{sha}", None, Deadline.after(0.01), home=repo.path
    )
    assert info.unknown == "no time was left in this reconcile" and info.subject == ""


def test_a_blocked_git_is_killed_when_the_time_is_up(
    repo: WorkRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = repo.commit({"a.yaml": "a\n"}, "first")
    shim = tmp_path / "shim"
    shim.mkdir()
    pids = tmp_path / "pids"
    (shim / "git").write_text(f"#!/bin/sh\necho $$ >> {pids}\nexec sleep 600\n")
    (shim / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}:{os.environ['PATH']}")
    started = time.monotonic()
    info = read(repo, sha, limits=HistoryLimits(max_seconds=0.5))
    assert time.monotonic() - started < 5
    assert info.timed_out and "took too long" in info.unknown
    for pid in pids.read_text().split():
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)


def test_a_long_tree_walk_stops_at_its_budget_with_what_it_found(
    repo: WorkRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = repo.commit({"keep.yaml": "k\n"}, "first")
    b = repo.commit({f"d{i:02}/x.yaml": "x\n" for i in range(40)}, "many directories")
    real = history._items

    def slow(tree: git.Tree | None) -> dict[str, object]:
        time.sleep(0.02)
        return real(tree)

    monkeypatch.setattr(history, "_items", slow)
    info = read(repo, b, since=a, limits=HistoryLimits(max_seconds=0.3))
    assert info.subject == "many directories" and info.timed_out
    assert 0 < len(info.paths.changes) < 40
    assert "took too long" in info.paths.unknown and info.paths.describe().endswith("(incomplete)")


def test_a_cut_answer_is_not_remembered(
    repo: WorkRepo, source: GitSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.commit({"a.yaml": "a\n"}, "first")
    repo.push()
    checkout = source.fetch(repo.bare.file_url, GitRef(), None, Deadline.after(60), 0)
    source.history_limits = HistoryLimits(max_seconds=0.0001)
    assert source.describe(checkout, None, Deadline.after(MINUTE)).unknown
    source.history_limits = HistoryLimits()
    assert source.describe(checkout, None, Deadline.after(MINUTE)).subject == "first"


# --- no git but cat-file, and none with an inherited environment -----------------------


def test_only_cat_file_runs_with_an_environment_naming_the_mirror(
    repo: WorkRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = repo.commit({"a.yaml": "a\n"}, "first")
    b = repo.commit({"a.yaml": "b\n"}, "second")
    # What git would read from an inherited environment (the operator removes them
    # at start; GitPython's git processes are told otherwise anyway).
    for name in ("GIT_DIR", "GIT_ALTERNATE_OBJECT_DIRECTORIES"):
        monkeypatch.setenv(name, "/nonexistent")
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'core.bogus")  # malformed: git would refuse
    monkeypatch.setenv("GIT_CONFIG_COUNT", "x")
    seen: list[tuple[list[str], dict[str, str]]] = []
    real = subprocess.Popen.__init__

    def spy(self: subprocess.Popen[bytes], args: list[str], *rest: object, **kw: object) -> None:
        seen.append(([str(a) for a in args], dict(kw.get("env") or {})))
        real(self, args, *rest, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", spy)
    info = read(repo, b, since=a)
    assert info.subject == "second" and info.paths.lines() == ("a.yaml",)
    assert seen and {tuple(cmd[1:]) for cmd, _ in seen} <= {("cat-file", "--batch")}
    for _, env in seen:
        assert env["GIT_DIR"] == str(repo.path / ".git")
        assert env["GIT_OBJECT_DIRECTORY"] == str(repo.path / ".git" / "objects")
        assert env["GIT_CONFIG_PARAMETERS"] == "" and env["GIT_CONFIG_GLOBAL"] == "/dev/null"
        assert env["GIT_ALLOW_PROTOCOL"] == "none" and env["GIT_NO_LAZY_FETCH"] == "1"


def test_a_stray_repository_variable_makes_the_commit_unknown_not_an_error(
    repo: WorkRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    sha = repo.commit({"a.yaml": "a\n"}, "first")
    monkeypatch.setenv("GIT_COMMON_DIR", "/nonexistent")  # GitPython's Repo reads it itself
    assert "cannot be read" in read(repo, sha).unknown


def test_commit_diff_would_run_git_diff_tree_and_is_refused(repo: WorkRepo) -> None:
    a = repo.commit({"a.yaml": "a\n"}, "first")
    b = repo.commit({"a.yaml": "b\n"}, "second")
    mirror = history._MirrorRepo(repo.path / ".git", expand_vars=False)
    try:
        new, old = mirror.commit(b), mirror.commit(a)
        with pytest.raises(history._Refused, match="cat-file"):
            new.diff(old)  # GitPython's Diffable runs `git diff-tree`: not here
        with pytest.raises(history._Refused):
            mirror.git.fetch("origin")
    finally:
        mirror.close()


# --- small parts -----------------------------------------------------------------------


def test_commit_of_a_revision() -> None:
    sha = "3f2a9c4e" * 5
    assert commit_of(f"main@sha1:{sha}") == sha == commit_of(f"sha1:{sha}")
    assert commit_of(f"release@v1@sha1:{sha}") == sha
    assert commit_of("") is None and commit_of(None) is None and commit_of("main@sha1:abc") is None


def test_clean_text_caps_and_keeps_emoji_and_accents() -> None:
    assert clean_text("Résumé 🚀 déployé", 100) == "Résumé 🚀 déployé"
    assert clean_text("a\u2066b\u200fc\u2028d", 100) == "a b c d"
    assert clean_text("x" * 10, 5) == "xxxx…"
    assert clean_text(os.fsdecode(b"\xff"), 5) == "\ufffd"
