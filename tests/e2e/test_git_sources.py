"""The fetch stage against real repositories: file://, smart HTTP(S) and SSH servers.

No cluster is needed; every server here is a real `git http-backend` or sshd (the
fixtures come from tests/harness/git_fixtures.py through tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gitferry.deadline import Deadline, DeadlineExceeded
from gitferry.source import (
    AuthError,
    Checkout,
    FetchError,
    GitCredentials,
    GitRef,
    GitSource,
    InvalidURL,
    RevisionMissing,
    SourceSettings,
    cache,
    runner,
    urls,
)
from tests.harness.git_fixtures import GIT_USERNAME, RepoFactory
from tests.harness.gitrepo import WorkRepo, served_root
from tests.harness.gitserver import MARKER_ENV, HttpGitServer, RequestLog, SshGitServer, descendants
from tests.harness.pki import CA

pytestmark = pytest.mark.e2e

MINUTE = 60.0


@pytest.fixture
def source(tmp_path: Path) -> Iterator[GitSource]:
    src = GitSource(SourceSettings(cache_dir=tmp_path / "cache", allow_file_urls=True))
    yield src
    src.close()


@pytest.fixture
def app(repo_factory: RepoFactory) -> WorkRepo:
    """A repo with one commit on main: a manifest and a symlink to it."""
    repo = repo_factory("app")
    repo.commit({"deploy/cm.yaml": "kind: ConfigMap\n"}, "first")
    repo.symlink("deploy/link.yaml", "cm.yaml")
    repo.push()
    return repo


def fetch(
    source: GitSource,
    url: str,
    ref: GitRef | None = None,
    creds: GitCredentials | None = None,
    max_age: float = MINUTE,
    timeout: float = MINUTE,
) -> Checkout:
    return source.fetch(url, ref or GitRef(), creds, Deadline.after(timeout), max_age)


def git_processes_of_this_test() -> list[str]:
    """Command lines of git/ssh processes descending from this process (the test servers'
    own processes, marked in their environment, aside)."""
    found = []
    for p in descendants(os.getpid()):
        try:
            cmd = Path(f"/proc/{p.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = Path(f"/proc/{p.pid}/environ").read_bytes()
        except OSError:
            continue
        if re.match(r"^\S*(git|ssh)\b", cmd) and MARKER_ENV.encode() not in environ:
            found.append(cmd)
    return found


def all_cmdlines() -> str:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            with contextlib.suppress(OSError):
                out.append(Path(f"/proc/{d}/cmdline").read_bytes().decode("utf-8", "replace"))
    return "\n".join(out)


def files_containing(root: Path, needles: list[bytes]) -> list[Path]:
    hits = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if path.is_symlink():
                continue
            data = path.read_bytes()
            if any(n in data for n in needles):
                hits.append(path)
    return hits


def leftovers(source: GitSource) -> list[Path]:
    """Scratch files (credential files among them) still in the cache after a call."""
    return list(source._cache.tmp_dir.iterdir())


# --- file:// -------------------------------------------------------------------


def test_default_branch_is_followed(source: GitSource, app: WorkRepo) -> None:
    checkout = fetch(source, app.bare.file_url)
    assert checkout.commit == app.head()
    assert checkout.revision == f"main@sha1:{app.head()}"
    assert (checkout.path / "deploy/cm.yaml").read_text() == "kind: ConfigMap\n"
    link = checkout.path / "deploy/link.yaml"
    assert link.is_symlink() and os.readlink(link) == "cm.yaml"


def test_default_branch_other_than_main(source: GitSource, app: WorkRepo) -> None:
    app.git("branch", "trunk")
    app.git("push", "-q", "origin", "trunk")
    app.git("--git-dir", str(app.bare.path), "symbolic-ref", "HEAD", "refs/heads/trunk")
    assert fetch(source, app.bare.file_url).revision == f"trunk@sha1:{app.head()}"


def test_branch(source: GitSource, app: WorkRepo) -> None:
    first = app.head()
    app.git("checkout", "-q", "-b", "staging")
    second = app.commit({"deploy/extra.yaml": "kind: Secret\n"}, "staging only")
    app.push("staging")
    main = fetch(source, app.bare.file_url, GitRef(branch="main"))
    staging = fetch(source, app.bare.file_url, GitRef(branch="staging"))
    assert (main.commit, staging.commit) == (first, second)
    assert staging.revision == f"staging@sha1:{second}"
    assert not (main.path / "deploy/extra.yaml").exists()
    assert (staging.path / "deploy/extra.yaml").exists()


def test_lightweight_and_annotated_tags_resolve_to_their_commit(
    source: GitSource, app: WorkRepo
) -> None:
    light = app.tag("v1.0.0")
    app.commit({"deploy/cm.yaml": "kind: ConfigMap # 2\n"}, "second")
    app.push()
    annotated = app.tag("v1.1.0", annotated=True)
    assert fetch(source, app.bare.file_url, GitRef(tag="v1.0.0")).revision == (
        f"v1.0.0@sha1:{light}"
    )
    checkout = fetch(source, app.bare.file_url, GitRef(tag="v1.1.0"))
    assert checkout.revision == f"v1.1.0@sha1:{annotated}"
    assert checkout.commit != app.rev_parse("refs/tags/v1.1.0")  # the commit, not the tag object
    assert "# 2" in (checkout.path / "deploy/cm.yaml").read_text()


def test_moved_tag_is_followed(source: GitSource, app: WorkRepo) -> None:
    old = app.tag("stable", annotated=True)
    new = app.commit({"deploy/cm.yaml": "kind: ConfigMap # new\n"}, "new")
    app.push()
    assert fetch(source, app.bare.file_url, GitRef(tag="stable")).commit == old
    app.move_tag("stable", new)
    # Within max_age the remembered answer stands; after it the move is seen.
    assert fetch(source, app.bare.file_url, GitRef(tag="stable")).commit == old
    moved = fetch(source, app.bare.file_url, GitRef(tag="stable"), max_age=0)
    assert moved.commit == new and moved.revision == f"stable@sha1:{new}"


def test_commit_pin_stays_while_the_branch_moves(source: GitSource, app: WorkRepo) -> None:
    pinned = app.head()
    pin = GitRef(branch="main", commit=pinned)
    assert fetch(source, app.bare.file_url, pin).revision == f"main@sha1:{pinned}"
    moved = app.commit({"deploy/cm.yaml": "kind: ConfigMap # moved\n"}, "moved")
    app.push()
    assert fetch(source, app.bare.file_url, pin, max_age=0).commit == pinned
    assert fetch(source, app.bare.file_url, GitRef(branch="main"), max_age=0).commit == moved
    bare = fetch(source, app.bare.file_url, GitRef(commit=pinned), max_age=0)
    assert bare.revision == f"sha1:{pinned}"
    assert "moved" not in (bare.path / "deploy/cm.yaml").read_text()


def test_commit_pin_fetches_an_older_commit(source: GitSource, app: WorkRepo) -> None:
    old = app.head()
    app.commit({"deploy/cm.yaml": "kind: ConfigMap # 2\n"}, "second")
    app.push()
    fetch(source, app.bare.file_url)  # the mirror holds only the tip (depth 1)
    checkout = fetch(source, app.bare.file_url, GitRef(commit=old))
    assert checkout.commit == old
    assert (checkout.path / "deploy/cm.yaml").read_text() == "kind: ConfigMap\n"


def test_semver_picks_the_highest_release_then_a_newer_one(
    source: GitSource, app: WorkRepo
) -> None:
    v19 = app.tag("v1.9.0")
    app.commit({"deploy/cm.yaml": "kind: ConfigMap # rc\n"}, "rc")
    app.push()
    app.tag("v1.10.0-rc.1", annotated=True)
    app.commit({"deploy/cm.yaml": "kind: ConfigMap # 2\n"}, "two")
    app.push()
    app.tag("v2.0.0")
    semver = GitRef(semver=">=1.0.0 <2.0.0")
    assert fetch(source, app.bare.file_url, semver).revision == f"v1.9.0@sha1:{v19}"
    rc = fetch(source, app.bare.file_url, GitRef(semver=">=1.10.0-rc.0 <2.0.0"))
    assert rc.revision.startswith("v1.10.0-rc.1@")
    v110 = app.tag("v1.10.0", ref="HEAD~1", annotated=True)
    assert fetch(source, app.bare.file_url, semver, max_age=0).revision == f"v1.10.0@sha1:{v110}"


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        (GitRef(branch="nope"), "branch 'nope' not found in"),
        (GitRef(tag="v9.9.9"), "tag 'v9.9.9' not found in"),
        (GitRef(semver=">=5.0.0"), "matches the semver range '>=5.0.0'"),
        (GitRef(commit="1" * 40), f"commit {'1' * 40} not found in"),
    ],
)
def test_missing_revision(source: GitSource, app: WorkRepo, ref: GitRef, words: str) -> None:
    with pytest.raises(RevisionMissing) as err:
        fetch(source, app.bare.file_url, ref)
    assert words in err.value.message
    assert app.bare.file_url in err.value.message


def test_missing_repository_is_a_fetch_failure(source: GitSource, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="does not appear to be a git repository"):
        fetch(source, (tmp_path / "nothing.git").as_uri())


def test_file_urls_are_refused_unless_allowed(tmp_path: Path, app: WorkRepo) -> None:
    strict = GitSource(SourceSettings(cache_dir=tmp_path / "strict"))
    try:
        with pytest.raises(InvalidURL, match="file://"):
            fetch(strict, app.bare.file_url)
        assert not any(strict._cache.mirrors_dir.iterdir())
    finally:
        strict.close()


def test_ext_transport_never_runs(source: GitSource, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for url in (f"ext::sh -c touch% {marker}", f"ext::touch {marker}", "fd::3"):
        with pytest.raises(InvalidURL):
            fetch(source, url)
    assert not marker.exists()


def test_git_itself_refuses_ext_even_past_validation(source: GitSource, tmp_path: Path) -> None:
    # Defence in depth: the environment every git run gets forbids the ext transport.
    marker = tmp_path / "pwned"
    url = urls.GitURL(url=f"ext::sh -c touch% {marker}", scheme="https", host="x")
    session = runner.GitSession(
        source._git,
        source._runner,
        source._cache.home,
        source._cache.tmp_dir,
        url,
        GitCredentials(),
        Deadline.after(MINUTE),
    )
    try:
        with pytest.raises(FetchError, match="transport 'ext' not allowed"):
            session.run(["ls-remote", "--", url.url], action="ls-remote", git_dir=None)
    finally:
        session.close()
    assert not marker.exists()


def test_a_new_branch_is_found_despite_a_remembered_answer(
    source: GitSource, app: WorkRepo
) -> None:
    fetch(source, app.bare.file_url, GitRef(branch="main"), max_age=MINUTE)
    time.sleep(1.1)
    app.git("push", "-q", "origin", "main:refs/heads/fresh")
    checkout = fetch(source, app.bare.file_url, GitRef(branch="fresh"), max_age=MINUTE)
    assert checkout.revision == f"fresh@sha1:{app.head()}"


def test_concurrent_fetches_of_one_repo_share_one_tree(source: GitSource, app: WorkRepo) -> None:
    results: list[Checkout] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(fetch(source, app.bare.file_url))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert {r.path for r in results} == {results[0].path}
    assert len(list(source._cache.mirrors_dir.iterdir())) == 1


def test_repository_over_the_size_limit_is_refused(tmp_path: Path, app: WorkRepo) -> None:
    app.commit({"big.bin": os.urandom(300_000)}, "big")
    app.push()
    small = GitSource(
        SourceSettings(cache_dir=tmp_path / "c", allow_file_urls=True, max_repo_bytes=100_000)
    )
    try:
        with pytest.raises(FetchError, match=r"MiB, over the limit of 0\.1 MiB"):
            fetch(small, app.bare.file_url)
        assert not any(small._cache.mirrors_dir.iterdir())
    finally:
        small.close()


def test_a_checkout_bigger_than_the_limit_is_refused_before_it_is_written(
    tmp_path: Path, app: WorkRepo
) -> None:
    # 100 MiB of zeros outside any spec.path: a few KiB in the mirror, 100 MiB on disk.
    app.commit({"deploy/cm.yaml": "a: 1\n", "assets/zeros.bin": bytes(100 * 1024 * 1024)}, "zeros")
    app.push()
    small = GitSource(
        SourceSettings(cache_dir=tmp_path / "c", allow_file_urls=True, max_repo_bytes=5 << 20)
    )
    try:
        with pytest.raises(
            FetchError, match=r"holds \d+ files of 100\.0 MiB, over the limit of 5\.0 MiB"
        ):
            fetch(small, app.bare.file_url)
        written = sum(p.stat().st_size for p in small._cache.root.rglob("*") if p.is_file())
        assert written < 5 << 20, f"{written} bytes written to the cache"
    finally:
        small.close()


def test_least_recently_used_trees_and_mirrors_are_evicted(
    tmp_path: Path,
    repo_factory: RepoFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cache, "IN_USE_GRACE_SECONDS", 0.0)
    first, second = repo_factory("first"), repo_factory("second")
    for repo in (first, second):
        repo.commit({"blob.bin": os.urandom(400_000)}, "big")
        repo.push()
    bound = 1_500_000  # room for one mirror and two trees of 400 kB, not for two mirrors
    source = GitSource(
        SourceSettings(cache_dir=tmp_path / "c", allow_file_urls=True, max_cache_bytes=bound)
    )
    try:
        old = fetch(source, first.bare.file_url)
        new = fetch(source, second.bare.file_url)
        assert source._cache.total_bytes() <= bound
        assert len(list(source._cache.mirrors_dir.iterdir())) == 1  # the first mirror went
        assert old.path.exists() and new.path.exists()
        third = second.commit({"small.txt": "x"}, "a new tree, hardly a bigger mirror")
        second.push()
        assert fetch(source, second.bare.file_url, max_age=0).commit == third
        assert not old.path.exists()  # the least recently used tree went
        assert new.path.exists()
        assert source._cache.total_bytes() <= bound
        assert fetch(source, first.bare.file_url).commit == first.head()  # fetched again
    finally:
        source.close()


def test_a_mirror_that_grew_is_started_afresh(source: GitSource, app: WorkRepo) -> None:
    # Each commit replaces a 200 kB blob. Depth-1 fetches keep the old blobs, so the
    # mirror would hold all six (1.2 MB); past twice its fresh size it starts over.
    for i in range(6):
        app.commit({"blob.bin": os.urandom(200_000), "n": str(i)}, f"c{i}")
        app.push()
        assert fetch(source, app.bare.file_url, max_age=0).commit == app.head()
    (mirror,) = source._cache._mirrors.values()
    assert mirror.size <= 3 * mirror.fresh_size < 6 * 200_000
    assert len(mirror.commits) < 6


def test_close_keeps_only_the_mirrors(tmp_path: Path, app: WorkRepo) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / "keep.txt").write_text("not ours")
    source = GitSource(SourceSettings(cache_dir=cache_dir, allow_file_urls=True))
    checkout = fetch(source, app.bare.file_url)
    source.close()
    assert not checkout.path.exists()
    (instance,) = cache_dir.glob("gitferry-*")
    assert sorted(p.name for p in cache_dir.iterdir()) == [
        "fingerprint-key",
        instance.name,
        "keep.txt",
    ]
    assert sorted(p.name for p in instance.iterdir()) == [".lock", "mirrors"]
    assert [p.name for p in (instance / "mirrors").iterdir()] == [checkout.mirror.name]


def test_close_without_keeping_mirrors_removes_what_the_source_wrote(
    tmp_path: Path, app: WorkRepo
) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / "keep.txt").write_text("not ours")
    source = GitSource(SourceSettings(cache_dir=cache_dir, allow_file_urls=True))
    fetch(source, app.bare.file_url)
    source.close(keep_mirrors=False)
    assert sorted(p.name for p in cache_dir.iterdir()) == ["fingerprint-key", "keep.txt"]
    created = GitSource(SourceSettings(cache_dir=tmp_path / "new", allow_file_urls=True))
    fetch(created, app.bare.file_url)
    created.close(keep_mirrors=False)
    assert not (tmp_path / "new").exists()  # created by the source: removed whole


def test_a_crashed_instances_cache_is_removed(tmp_path: Path, app: WorkRepo) -> None:
    cache_dir = tmp_path / "cache"
    code = (
        "import os, sys; from pathlib import Path;"
        "from gitferry.source import GitSource, SourceSettings;"
        "GitSource(SourceSettings(cache_dir=Path(sys.argv[1])));"
        "os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code, str(cache_dir)], check=True, timeout=60)
    assert len(list(cache_dir.glob("gitferry-*"))) == 1  # left by a process that never closed
    source = GitSource(SourceSettings(cache_dir=cache_dir))
    try:
        assert list(cache_dir.glob("gitferry-*")) == [source._cache.root]
        assert source._cache.adoption.instances == 1
    finally:
        source.close()


Served = tuple[str, GitCredentials, RequestLog]


@pytest.fixture
def served(app: WorkRepo, http_git_server: HttpGitServer) -> Served:
    """The app repository over HTTP with basic auth: its URL, the credentials and
    the server's request log (one line per git request)."""
    return http_git_server.url_for(app.bare), basic(http_git_server), http_git_server.log


# --- a restart adopts the mirrors --------------------------------------------------
# An operator restart with the cache volume intact re-verifies its syncs without
# cloning again: the new GitSource adopts the mirrors the old one left.


def test_after_a_graceful_restart_a_branch_is_asked_for_but_not_fetched_again(
    tmp_path: Path, app: WorkRepo, served: Served
) -> None:
    url, creds, log = served
    settings = SourceSettings(cache_dir=tmp_path / "cache")
    first = GitSource(settings)
    before = fetch(first, url, GitRef(branch="main"), creds)
    first.close()
    assert (log.count("ls-refs"), log.count("fetch")) == (1, 1)

    second = GitSource(settings)
    try:
        assert second._cache.adoption.adopted == [before.mirror.name]
        after = fetch(second, url, GitRef(branch="main"), creds)
        assert after.commit == before.commit == app.head()
        assert (after.path / "deploy/cm.yaml").read_text() == "kind: ConfigMap\n"
        # Asked where main is (the remote may have moved), downloaded nothing.
        assert (log.count("ls-refs"), log.count("fetch")) == (2, 1)
        assert after.mirror is not None and after.mirror.name == before.mirror.name
    finally:
        second.close()


def test_after_a_crash_the_mirror_is_adopted_and_fetched_into_incrementally(
    tmp_path: Path, repo_factory: RepoFactory, http_git_server: HttpGitServer
) -> None:
    repo = repo_factory("big")
    repo.commit({"blob.bin": os.urandom(300_000)}, "a big blob")
    repo.push()
    url, creds, log = (
        http_git_server.url_for(repo.bare),
        basic(http_git_server),
        http_git_server.log,
    )
    cache_dir = tmp_path / "cache"
    # A process that fetches, then dies without close(): its lock goes with it,
    # its directory (tmp/, trees/, home/ and all) stays.
    code = (
        "import os, sys; from pathlib import Path;"
        "from gitferry.deadline import Deadline;"
        "from gitferry.source import GitCredentials, GitRef, GitSource, SourceSettings;"
        "s = GitSource(SourceSettings(cache_dir=Path(sys.argv[1])));"
        "c = GitCredentials(username=os.environ['U'], password=os.environ['P']);"
        "s.fetch(sys.argv[2], GitRef(), c, Deadline.after(60), 60);"
        "os._exit(0)"
    )
    env = {**os.environ, "U": creds.username or "", "P": creds.password or ""}
    subprocess.run(
        [sys.executable, "-c", code, str(cache_dir), url], check=True, timeout=60, env=env
    )
    (crashed,) = cache_dir.glob("gitferry-*")
    assert (crashed / "trees").exists()
    assert log.count("fetch") == 1

    source = GitSource(SourceSettings(cache_dir=cache_dir))
    try:
        (key,) = source._cache.adoption.adopted
        assert not crashed.exists()
        assert fetch(source, url, creds=creds).commit == repo.head()
        assert log.count("fetch") == 1  # the commit came from the adopted mirror
        objects = source._cache.mirrors_dir / key / "objects"
        size = cache.dir_size(objects)
        assert size > 300_000

        new = repo.commit({"small.txt": "a small change"}, "small")
        repo.push()
        assert fetch(source, url, creds=creds, max_age=0).commit == new
        assert log.count("fetch") == 2
        # git told the server what the mirror has: the 300 kB blob was not sent again.
        assert cache.dir_size(objects) - size < 100_000
    finally:
        source.close()


def test_a_pinned_commit_is_served_from_an_adopted_mirror_with_the_remote_gone(
    tmp_path: Path, app: WorkRepo
) -> None:
    settings = SourceSettings(cache_dir=tmp_path / "cache", allow_file_urls=True)
    first = GitSource(settings)
    sha = fetch(first, app.bare.file_url).commit
    first.close()
    app.bare.path.rename(tmp_path / "gone.git")

    second = GitSource(settings)
    try:
        with pytest.raises(FetchError):  # a branch needs the remote's answer
            fetch(second, app.bare.file_url, GitRef(branch="main"))
        # ... and a remote that does not answer leaves the adopted mirror as it was.
        checkout = fetch(second, app.bare.file_url, GitRef(commit=sha))
        assert checkout.commit == sha
        assert (checkout.path / "deploy/cm.yaml").read_text() == "kind: ConfigMap\n"
        with pytest.raises(FetchError):  # what the mirror lacks still needs the remote
            fetch(second, app.bare.file_url, GitRef(commit="1" * 40))
    finally:
        second.close()


def _mirror_of(settings: SourceSettings, url: str, creds: GitCredentials | None = None) -> Path:
    """Fetch `url` once with a GitSource that then closes; the mirror it left."""
    source = GitSource(settings)
    try:
        mirror = source.fetch(url, GitRef(), creds, Deadline.after(MINUTE), MINUTE).mirror
    finally:
        source.close()
    assert mirror is not None
    (left,) = settings.cache_dir.glob(f"gitferry-*/mirrors/{mirror.name}")
    return left


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda m: (m / "HEAD").unlink(), id="no HEAD"),
        pytest.param(lambda m: shutil.rmtree(m / "objects"), id="no objects"),
        pytest.param(lambda m: (m / "shallow.lock").write_text(""), id="killed git's lock"),
        pytest.param(
            lambda m: (m / "refs/heads/main.lock").write_text(""), id="killed git's ref lock"
        ),
        pytest.param(
            lambda m: (m / "objects/info/alternates").write_text("/elsewhere\n"), id="alternates"
        ),
        pytest.param(
            lambda m: (m / "config").write_text(
                (m / "config").read_text() + '[remote "origin"]\n\turl = https://u:pw@h/r\n'
            ),
            id="a remote in its config",
        ),
        pytest.param(
            lambda m: (m / "config").write_text(
                (m / "config").read_text() + "[core]\n\tfsmonitor = /bin/sh\n"
            ),
            id="a command in its config",
        ),
        pytest.param(
            lambda m: (m.rename(m.parents[1] / "x"), m.symlink_to(m.parents[1] / "x")),
            id="a symlink",
        ),
    ],
)
def test_a_damaged_mirror_is_discarded_and_cloned_again(
    tmp_path: Path,
    app: WorkRepo,
    served: Served,
    damage: Callable[[Path], object],
) -> None:
    url, creds, log = served
    settings = SourceSettings(cache_dir=tmp_path / "cache")
    mirror = _mirror_of(settings, url, creds)
    damage(mirror)
    source = GitSource(settings)
    try:
        assert source._cache.adoption.adopted == []
        assert source._cache.adoption.discarded == [mirror.name]
        assert fetch(source, url, creds=creds).commit == app.head()
        assert log.count("fetch") == 2  # cloned again
        assert list(tmp_path.joinpath("cache").glob("gitferry-*")) == [source._cache.root]
    finally:
        source.close()


def test_a_mirror_missing_an_object_is_started_afresh_without_failing_the_fetch(
    tmp_path: Path, app: WorkRepo, served: Served
) -> None:
    url, creds, log = served
    settings = SourceSettings(cache_dir=tmp_path / "cache")
    mirror = _mirror_of(settings, url, creds)
    blob = app.rev_parse("HEAD:deploy/cm.yaml")
    loose = mirror / "objects" / blob[:2] / blob[2:]
    assert loose.exists()  # a small fetch is unpacked into loose objects
    loose.unlink()  # as a disk that lost a write would leave it
    source = GitSource(settings)
    try:
        assert source._cache.adoption.adopted == [mirror.name]  # it looks whole
        checkout = fetch(source, url, creds=creds)
        assert (checkout.path / "deploy/cm.yaml").read_text() == "kind: ConfigMap\n"
        assert log.count("fetch") >= 2
        assert (source._cache.mirrors_dir / mirror.name / "objects" / blob[:2] / blob[2:]).exists()
    finally:
        source.close()


def test_a_live_instances_mirrors_are_not_taken(
    tmp_path: Path, app: WorkRepo, served: Served
) -> None:
    url, creds, log = served
    settings = SourceSettings(cache_dir=tmp_path / "cache")
    live = GitSource(settings)
    try:
        mine = fetch(live, url, creds=creds)
        other = GitSource(settings)  # another operator process on the same volume
        try:
            assert other._cache.adoption == cache.Adoption()
            assert fetch(other, url, creds=creds).commit == app.head()
            assert log.count("fetch") == 2  # its own clone
        finally:
            other.close()
        assert mine.mirror is not None and mine.mirror.is_dir()
        assert mine.path.exists()
        assert fetch(live, url, creds=creds, max_age=0).commit == app.head()
    finally:
        live.close()


def test_two_stopped_instances_with_one_mirror_keep_the_newer(
    tmp_path: Path, app: WorkRepo
) -> None:
    settings = SourceSettings(cache_dir=tmp_path / "cache", allow_file_urls=True)
    one = GitSource(settings)
    two = GitSource(settings)  # both alive at once, each with its own copy
    first = fetch(one, app.bare.file_url).mirror
    second = fetch(two, app.bare.file_url).mirror
    one.close()
    two.close()
    assert first is not None and second is not None and first.name == second.name
    os.utime(first, (time.time() - 3600,) * 2)  # the older copy
    marker = second / "gitferry-fresh-size"
    newer = marker.read_text()
    marker.write_text("12345")  # tells the copies apart
    third = GitSource(settings)
    try:
        adoption = third._cache.adoption
        assert (adoption.adopted, adoption.discarded) == ([first.name], [first.name])
        assert third._cache._mirrors[first.name].fresh_size == 12345 != int(newer)
        assert list(settings.cache_dir.glob("gitferry-*")) == [third._cache.root]
    finally:
        third.close()


def test_adopted_mirrors_are_held_to_the_cache_bound(
    tmp_path: Path,
    repo_factory: RepoFactory,
    http_git_server: HttpGitServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cache, "IN_USE_GRACE_SECONDS", 0.0)
    creds, log = basic(http_git_server), http_git_server.log
    repos = [repo_factory(name) for name in ("first", "second", "third")]
    for repo in repos:
        repo.commit({"blob.bin": os.urandom(400_000)}, "big")
        repo.push()
    first, second, third = (http_git_server.url_for(r.bare) for r in repos)
    cache_dir = tmp_path / "c"
    unbounded = GitSource(SourceSettings(cache_dir=cache_dir))
    keys = [fetch(unbounded, url, creds=creds).mirror.name for url in (first, second)]
    unbounded.close()
    assert log.count("fetch") == 2

    # Room for one mirror of 400 kB: the least recently modified one goes at start.
    small = GitSource(SourceSettings(cache_dir=cache_dir, max_cache_bytes=600_000))
    try:
        adoption = small._cache.adoption
        assert (adoption.adopted, adoption.evicted) == ([keys[1]], [keys[0]])
        assert small._cache.total_bytes() == adoption.adopted_bytes <= 600_000
    finally:
        small.close()

    # Room for two mirrors, or a mirror and its tree: the adopted mirror, never used
    # by this process, is the least recently used once another repository comes.
    bound = 1_000_000
    source = GitSource(SourceSettings(cache_dir=cache_dir, max_cache_bytes=bound))
    try:
        assert source._cache.adoption.adopted == [keys[1]]
        fetch(source, third, creds=creds)
        assert log.count("fetch") == 3
        assert source._cache.total_bytes() <= bound
        assert [p.name for p in source._cache.mirrors_dir.iterdir()] != [keys[1]]
        assert not (source._cache.mirrors_dir / keys[1]).exists()
        assert fetch(source, second, creds=creds).commit == repos[1].head()  # cloned again
        assert log.count("fetch") == 4
        assert source._cache.total_bytes() <= bound
    finally:
        source.close()


# --- HTTP(S) ---------------------------------------------------------------------


def basic(server: HttpGitServer) -> GitCredentials:
    return GitCredentials(username=server.username, password=server.password)


def test_http_basic_auth(
    source: GitSource,
    app: WorkRepo,
    http_git_server: HttpGitServer,
) -> None:
    checkout = fetch(source, http_git_server.url_for(app.bare), creds=basic(http_git_server))
    assert checkout.commit == app.head()
    assert {r.user for r in http_git_server.log.records} == {GIT_USERNAME}


def test_http_wrong_password_is_an_authentication_failure(
    source: GitSource,
    app: WorkRepo,
    http_git_server: HttpGitServer,
) -> None:
    wrong = GitCredentials(username=GIT_USERNAME, password="wrong-password-123")
    for creds in (wrong, None):
        with pytest.raises(AuthError) as err:
            fetch(source, http_git_server.url_for(app.bare), creds=creds)
        assert "wrong-password-123" not in err.value.message
        assert http_git_server.url_for(app.bare) in err.value.message


def test_http_bearer_token(source: GitSource, app: WorkRepo, git_root: Path) -> None:
    with HttpGitServer(served_root(git_root), bearer_token="tok-0123456789") as server:
        url = server.url_for(app.bare)
        checkout = fetch(source, url, creds=GitCredentials(bearer_token="tok-0123456789"))
        assert checkout.commit == app.head()
        assert {r.user for r in server.log.records} == {"bearer"}
        with pytest.raises(AuthError):
            fetch(source, url, creds=GitCredentials(bearer_token="tok-wrong"))


def test_each_set_of_credentials_gets_its_own_mirror(
    source: GitSource, app: WorkRepo, git_root: Path
) -> None:
    with HttpGitServer(
        served_root(git_root), username="alice", password="pw-alice", bearer_token="tok-bob"
    ) as server:
        url = server.url_for(app.bare)
        alice = GitCredentials(username="alice", password="pw-alice")
        bob = GitCredentials(bearer_token="tok-bob")
        assert fetch(source, url, creds=alice).path == fetch(source, url, creds=bob).path
        assert fetch(source, url, creds=alice).commit == app.head()
        assert len(list(source._cache.mirrors_dir.iterdir())) == 2
        assert (server.log.count("ls-refs"), server.log.count("fetch")) == (2, 2)


def test_an_adopted_mirror_serves_only_the_credentials_it_was_fetched_with(
    tmp_path: Path, app: WorkRepo, git_root: Path
) -> None:
    with HttpGitServer(
        served_root(git_root), username="alice", password="pw-alice", bearer_token="tok-bob"
    ) as server:
        url = server.url_for(app.bare)
        alice = GitCredentials(username="alice", password="pw-alice")
        bob = GitCredentials(bearer_token="tok-bob")
        settings = SourceSettings(cache_dir=tmp_path / "cache")
        alices = _mirror_of(settings, url, alice)
        key = (settings.cache_dir / "fingerprint-key").read_bytes()
        # The mirror is named by the URL and the credentials' keyed fingerprint.
        assert (
            alices.name == hashlib.sha256(f"{url}\0{alice.fingerprint(key)}".encode()).hexdigest()
        )
        assert alice.fingerprint(key) != bob.fingerprint(key)

        source = GitSource(settings)
        try:
            assert source._cache.adoption.adopted == [alices.name]
            bobs = fetch(source, url, creds=bob).mirror
            assert bobs is not None and bobs.name != alices.name
            assert server.log.count("fetch") == 2  # bob's own clone
            assert fetch(source, url, creds=alice).mirror == source._cache.mirrors_dir / alices.name
            assert server.log.count("fetch") == 2
            assert {r.user for r in server.log.records} == {"alice", "bearer"}
        finally:
            source.close()

        # Another fingerprint key (the file lost): no old mirror matches any more.
        (settings.cache_dir / "fingerprint-key").write_bytes(os.urandom(32))
        source = GitSource(settings)
        try:
            assert len(source._cache.adoption.adopted) == 2
            assert fetch(source, url, creds=alice).mirror.name not in {alices.name, bobs.name}
            assert server.log.count("fetch") == 3
        finally:
            source.close()


def test_https_with_the_secrets_ca(
    source: GitSource,
    app: WorkRepo,
    https_git_server: HttpGitServer,
    test_ca: CA,
) -> None:
    url = https_git_server.url_for(app.bare)
    creds = basic(https_git_server)
    with pytest.raises(FetchError, match="certificate"):
        fetch(source, url, creds=creds)
    with_ca = GitCredentials(
        username=creds.username, password=creds.password, ca_crt=test_ca.cert.read_text()
    )
    assert fetch(source, url, creds=with_ca).commit == app.head()
    assert leftovers(source) == []


def test_fifty_syncs_cause_one_ref_query_and_one_fetch(
    source: GitSource,
    app: WorkRepo,
    http_git_server: HttpGitServer,
) -> None:
    url, creds = http_git_server.url_for(app.bare), basic(http_git_server)
    checkouts = {fetch(source, url, GitRef(branch="main"), creds) for _ in range(50)}
    assert len(checkouts) == 1
    log = http_git_server.log
    assert (log.count("ls-refs"), log.count("fetch")) == (1, 1)

    new = app.commit({"deploy/cm.yaml": "kind: ConfigMap # 2\n"}, "second")
    app.push()
    assert fetch(source, url, GitRef(branch="main"), creds, max_age=MINUTE).commit != new
    assert fetch(source, url, GitRef(branch="main"), creds, max_age=0).commit == new
    assert (log.count("ls-refs"), log.count("fetch")) == (2, 2)
    assert fetch(source, url, GitRef(branch="main"), creds, max_age=0).commit == new
    assert log.count("fetch") == 2  # asked again, nothing new to fetch


def test_concurrent_syncs_wait_for_one_fetch(
    source: GitSource,
    app: WorkRepo,
    http_git_server: HttpGitServer,
) -> None:
    url, creds = http_git_server.url_for(app.bare), basic(http_git_server)
    results: list[str] = []
    with http_git_server.hold():
        threads = [
            threading.Thread(target=lambda: results.append(fetch(source, url, creds=creds).commit))
            for _ in range(6)
        ]
        for t in threads:
            t.start()
        http_git_server.wait_held(1)
        time.sleep(0.3)
        assert http_git_server.held == 1  # the others wait on the mirror, not the server
    for t in threads:
        t.join()
    assert results == [app.head()] * 6
    assert (http_git_server.log.count("ls-refs"), http_git_server.log.count("fetch")) == (1, 1)


def test_credentials_stay_off_command_lines_and_disk(
    source: GitSource,
    app: WorkRepo,
    http_git_server: HttpGitServer,
) -> None:
    creds = basic(http_git_server)
    assert creds.password is not None
    secrets = [creds.password.encode(), creds.secret_values()[-1].encode()]
    url = http_git_server.url_for(app.bare)
    errors: list[BaseException] = []
    thread = threading.Thread(
        target=lambda: _collect(errors, lambda: fetch(source, url, creds=creds))
    )
    with http_git_server.hold():
        thread.start()
        http_git_server.wait_held(1)
        cmdlines = all_cmdlines()
        assert git_processes_of_this_test(), "a git process should be waiting on the server"
    thread.join()
    assert not errors
    assert not any(s.decode() in cmdlines for s in secrets)
    assert files_containing(source.settings.cache_dir, secrets) == []
    assert leftovers(source) == []


def test_a_hanging_server_is_cut_off_and_no_process_survives(
    tmp_path: Path,
    app: WorkRepo,
    http_git_server: HttpGitServer,
) -> None:
    url, creds = http_git_server.url_for(app.bare), basic(http_git_server)
    source = GitSource(SourceSettings(cache_dir=tmp_path / "c", fetch_timeout=2.0))
    try:
        with http_git_server.hold():
            started = time.monotonic()
            with pytest.raises(FetchError, match="timed out after 2s"):
                fetch(source, url, creds=creds)
            with pytest.raises(DeadlineExceeded, match="deadline passed during fetch"):
                fetch(source, url, creds=creds, timeout=1.0)
            assert time.monotonic() - started < 10
            assert git_processes_of_this_test() == []
    finally:
        source.close()


def test_a_thousand_cached_fetches_leave_no_process_or_temp_dir(
    source: GitSource,
    app: WorkRepo,
    https_git_server: HttpGitServer,
    test_ca: CA,
) -> None:
    creds = GitCredentials(
        username=https_git_server.username,
        password=https_git_server.password,
        ca_crt=test_ca.cert.read_text(),
    )
    url = https_git_server.url_for(app.bare)
    started = time.monotonic()
    for _ in range(1000):
        assert fetch(source, url, creds=creds).commit == app.head()
    assert time.monotonic() - started < 30
    assert git_processes_of_this_test() == []
    assert leftovers(source) == []
    assert https_git_server.log.count("fetch") == 1


# --- SSH ---------------------------------------------------------------------------


def ssh_creds(server: SshGitServer, known_hosts: str | None = None) -> GitCredentials:
    return GitCredentials(
        identity=server.client_key_path.read_text(),
        known_hosts=known_hosts if known_hosts is not None else server.known_hosts_line,
    )


def test_ssh_with_key_and_known_hosts(
    source: GitSource,
    app: WorkRepo,
    ssh_git_server: SshGitServer,
) -> None:
    creds = ssh_creds(ssh_git_server)
    checkout = fetch(source, ssh_git_server.url_for(app.bare), GitRef(branch="main"), creds)
    assert checkout.revision == f"main@sha1:{app.head()}"
    assert files_containing(source.settings.cache_dir, [b"PRIVATE KEY"]) == []
    assert list(source._cache.home.iterdir()) == []  # HOME stays empty
    assert leftovers(source) == []
    assert git_processes_of_this_test() == []


def test_git_runs_with_a_minimal_environment_and_private_key_files(
    source: GitSource,
    app: WorkRepo,
    ssh_git_server: SshGitServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for inherited in ("GIT_SSL_NO_VERIFY", "GIT_SSH_COMMAND", "SSH_AUTH_SOCK", "GIT_DIR"):
        monkeypatch.setenv(inherited, "/leaked")
    seen: list[tuple[list[str], dict[str, str], list[tuple[str, int]]]] = []
    real = runner._run_killable

    def spy(cmd: list[str], *, env: dict[str, str], cwd: Path, timeout: float) -> object:
        files = []
        for word in env.get("GIT_SSH_COMMAND", "").split():
            if "=" in word:
                word = word.partition("=")[2]
            if word.startswith(str(source._cache.tmp_dir)):
                files.append((word, os.stat(word).st_mode & 0o777))
                files.append((str(Path(word).parent), os.stat(Path(word).parent).st_mode & 0o777))
        seen.append((cmd, env, files))
        return real(cmd, env=env, cwd=cwd, timeout=timeout)

    monkeypatch.setattr(runner, "_run_killable", spy)
    creds = ssh_creds(ssh_git_server)
    fetch(source, ssh_git_server.url_for(app.bare), creds=creds)
    assert seen
    assert creds.identity is not None
    for cmd, env, files in seen:
        assert not {"GIT_SSL_NO_VERIFY", "SSH_AUTH_SOCK", "GIT_DIR"} & env.keys()
        assert env["GIT_SSH_COMMAND"] != "/leaked"
        assert "StrictHostKeyChecking=yes" in env["GIT_SSH_COMMAND"]
        assert env["GIT_CONFIG_GLOBAL"] == "/dev/null" and env["GIT_TERMINAL_PROMPT"] == "0"
        assert env["GIT_ALLOW_PROTOCOL"] == "http:https:ssh:file"
        assert creds.identity.splitlines()[1] not in " ".join(cmd) + repr(env)
        assert {mode for _, mode in files} == {0o600, 0o700}
    assert leftovers(source) == []


def test_ssh_unknown_host_key_is_an_authentication_failure(
    source: GitSource,
    app: WorkRepo,
    ssh_git_server: SshGitServer,
) -> None:
    url = ssh_git_server.url_for(app.bare)
    other_host = f"[127.0.0.1]:1 {ssh_git_server.host_public_key}"
    wrong_key = f"[127.0.0.1]:{ssh_git_server.port} {ssh_git_server.client_public_key}"
    for known_hosts in (other_host, wrong_key):
        with pytest.raises(AuthError) as err:
            fetch(source, url, creds=ssh_creds(ssh_git_server, known_hosts))
        assert "host key" in err.value.message and "known_hosts" in err.value.message


def test_ssh_unauthorised_key_is_an_authentication_failure(
    source: GitSource,
    app: WorkRepo,
    ssh_git_server: SshGitServer,
    tmp_path: Path,
) -> None:
    key = tmp_path / "other_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    creds = GitCredentials(identity=key.read_text(), known_hosts=ssh_git_server.known_hosts_line)
    with pytest.raises(AuthError, match="Permission denied"):
        fetch(source, ssh_git_server.url_for(app.bare), creds=creds)
    assert leftovers(source) == []


def _collect(errors: list[BaseException], fn: Callable[[], object]) -> None:
    try:
        fn()
    except BaseException as e:  # pragma: no cover - reported by the caller
        errors.append(e)
