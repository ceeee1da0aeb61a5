"""GitSource: a git URL and a ref in, a directory with one commit's files out.

fetch = validate (URL, ref, credentials; no git yet)
      → resolve the ref (`git ls-remote`, at most once per max_age per mirror)
      → fetch the commit into the shared bare mirror if it is not there (--depth=1)
      → materialise the commit's files once into trees/<sha>
      → evict least-recently-used trees and mirrors beyond the cache bound

A mirror adopted from an earlier process (cache.py) is used as it is: never
re-initialised, fetched into with the refs it has (git negotiates from them), and
a commit in it is used without fetching once `rev-list --objects` found the
commit, its tree and every blob. The URL and credentials reach git on its command
line and in its environment, never in the mirror's config, so a mirror holds
nothing of an old URL or Secret to rewrite.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..deadline import Deadline, DeadlineExceeded
from .cache import DiskCache, Mirror
from .credentials import GitCredentials, check_credentials
from .errors import AuthError, FetchError, RevisionMissing, SourceBusy, SourceError
from .history import HistoryLimits, RevisionInfo, read_revision
from .refs import GitRef, RefsAnswer, Resolved, Want, parse_ls_remote, resolve, want_of
from .runner import GitSession, RunnerSettings
from .urls import parse_url

log = logging.getLogger("gitferry.source")

STAGE = "fetch"
GIB = 1 << 30
MIB = 1 << 20
_REBUILD_FACTOR = 2
_DESCRIBED = 256  # describe() answers remembered
_FRESH_ENOUGH_SECONDS = 1.0

# Told of every git network operation once it ends: (operation, outcome, seconds),
# operation "ls-remote" or "fetch", outcome "ok", "auth_failed", "not_found",
# "timeout" or "error". The runtime hands one in (metrics); this library imports none.
GitObserver = Callable[[str, str, float], None]


class _OverLimit(FetchError):
    """A repository or checkout over max_repo_bytes: a fresh mirror cannot help."""


@dataclass(frozen=True)
class SourceSettings:
    cache_dir: Path
    allow_file_urls: bool = False
    max_concurrent_fetches: int = 4
    max_cache_bytes: int = 2 * GIB
    max_repo_bytes: int = 500 * MIB
    fetch_timeout: float = 60.0
    # git network operations at once against one host: a host that accepts
    # connections and never answers holds at most this many threads.
    max_fetches_per_host: int = 2
    # Files one checked-out commit may hold (each costs an inode on the cache volume).
    max_tree_entries: int = 200_000
    # A failed ask of a remote is shared for this long (seconds) by every sync of
    # that repository, and a timed-out host's other repositories too.
    failure_ttl: float = 30.0
    # How long (seconds) a fetch waits for a busy repository, host or fetch slot
    # before it gives its thread back (SourceBusy) and the caller retries later.
    busy_wait: float = 2.0


@dataclass(frozen=True)
class Checkout:
    path: Path  # the files of the revision; shared by all syncs on this commit: read only
    commit: str  # full sha
    revision: str  # "main@sha1:<sha>", "v1.2.0@sha1:<sha>" or "sha1:<sha>"
    # The bare mirror that holds the commit (for describe()); it may be evicted later.
    mirror: Path | None = field(default=None, repr=False, compare=False)


class GitSource:
    """Fetches revisions into a shared, bounded cache. Thread-safe."""

    def __init__(self, settings: SourceSettings, observer: GitObserver | None = None) -> None:
        self.settings = settings
        self._observer = observer
        self._cache = DiskCache(settings.cache_dir, settings.max_cache_bytes)
        self._fetch_slots = threading.BoundedSemaphore(max(1, settings.max_concurrent_fetches))
        self._hosts_lock = threading.Lock()
        self._host_slots: dict[str, threading.BoundedSemaphore] = {}
        self._host_failures: dict[str, tuple[float, FetchError]] = {}
        self._git = shutil.which("git") or "git"
        self._runner = RunnerSettings(settings.allow_file_urls, settings.fetch_timeout)
        self.history_limits = HistoryLimits()
        self._described: OrderedDict[tuple[str, str, str], RevisionInfo] = OrderedDict()
        self._described_lock = threading.Lock()

    def validate_url(self, url: str) -> None:
        """InvalidURL when `url` is not one gitferry may hand to git."""
        parse_url(url, self.settings.allow_file_urls)

    def fetch(
        self,
        url: str,
        ref: GitRef,
        credentials: GitCredentials | None,
        deadline: Deadline,
        max_age: float,
        shared_since: float | None = None,
        reuse_failure: bool = False,
    ) -> Checkout:
        """The files of the revision `ref` names at `url`.

        The remote is asked about refs at most once per `max_age` seconds per
        mirror; an answer got at or after `shared_since` (time.monotonic(): when
        this caller began to wait for a busy repository) is good enough whatever
        its age. A commit already in the mirror is not fetched again. With `reuse_failure`, a failure of this repository,
        or a timeout of its host, in the last `failure_ttl` seconds is raised
        again instead of asking.

        Raises SourceError kinds, SourceBusy (nothing asked: retry shortly) or
        DeadlineExceeded."""
        parsed = parse_url(url, self.settings.allow_file_urls)
        want = want_of(ref)
        creds = credentials or GitCredentials()
        check_credentials(parsed, creds)
        deadline.remaining(STAGE)
        fingerprint = creds.fingerprint(self._cache.fingerprint_key)
        key = hashlib.sha256(f"{parsed.url}\0{fingerprint}".encode()).hexdigest()
        session = GitSession(
            self._git, self._runner, self._cache.home, self._cache.tmp_dir, parsed, creds, deadline
        )
        wait = min(self.settings.busy_wait, deadline.remaining(STAGE))
        try:
            with self._cache.locked_mirror(key, wait) as mirror:
                if reuse_failure:
                    self._remembered_failure(mirror, parsed.host)
                answer = mirror.refs
                if shared_since is not None and answer is not None and answer.at >= shared_since:
                    max_age = float("inf")  # asked while this caller waited: share it
                try:
                    return self._fetch_locked(mirror, session, want, deadline, max_age)
                except FetchError as e:
                    self._remember(mirror, parsed.host, e)
                    raise
        except DeadlineExceeded:
            if deadline.at - time.monotonic() <= 0:
                raise
            raise SourceBusy(
                f"another fetch of {session.url.url} is in flight; its answer will be shared"
            ) from None
        finally:
            session.close()

    def _remembered_failure(self, mirror: Mirror, host: str) -> None:
        """Re-raise a recent failure of this repository, or a recent timeout of its
        host, instead of asking again."""
        now = time.monotonic()
        ttl = self.settings.failure_ttl
        failure = mirror.failure
        if failure is not None and now - mirror.failed_at < ttl:
            raise type(failure)(failure.message)  # a fresh one: many threads raise it
        with self._hosts_lock:
            host_failure = self._host_failures.get(host)
        if host and host_failure is not None and now - host_failure[0] < ttl:
            raise FetchError(
                f"{host} is not answering (asked again after {ttl:g}s): {host_failure[1]}",
                timed_out=True,
            )

    def _remember(self, mirror: Mirror, host: str, error: FetchError) -> None:
        mirror.failure, mirror.failed_at = error, time.monotonic()
        if error.timed_out and host:
            with self._hosts_lock:
                self._host_failures[host] = (mirror.failed_at, error)

    def describe(self, checkout: Checkout, since: str | None, deadline: Deadline) -> RevisionInfo:
        """Who changed what: the subject, author and times of the commit `checkout`
        holds, and the paths changed since the revision `since` (the one applied
        before; None when there is none), read from the local mirror without any
        network (history.py). Never raises; what cannot be read is said in the
        answer's `unknown` fields. Answers are remembered (a few hundred)."""
        key = (str(checkout.mirror), checkout.commit, since or "")
        with self._described_lock:
            known = self._described.get(key)
            if known is not None:
                self._described.move_to_end(key)
        if known is not None:
            return known if known.revision == checkout.revision else _relabel(known, checkout)
        if checkout.mirror is None:
            why = "the checkout names no mirror"
            return RevisionInfo(checkout.revision, checkout.commit, unknown=why)
        info = read_revision(
            checkout.mirror,
            checkout.revision,
            since,
            deadline,
            home=self._cache.home,
            limits=self.history_limits,
        )
        if not info.timed_out:
            with self._described_lock:
                self._described[key] = info
                while len(self._described) > _DESCRIBED:
                    self._described.popitem(last=False)
        return info

    def close(self, keep_mirrors: bool = True) -> None:
        """Remove the checked-out trees and scratch files this source wrote under
        cache_dir. With `keep_mirrors` the bare mirrors stay for the next GitSource
        on the same cache_dir to adopt; without, everything this source wrote goes."""
        self._cache.close(keep_mirrors=keep_mirrors)

    # --- steps, each under the mirror's lock ---------------------------------
    def _fetch_locked(
        self,
        mirror: Mirror,
        session: GitSession,
        want: Want,
        deadline: Deadline,
        max_age: float,
    ) -> Checkout:
        started = time.monotonic()
        resolved = (
            None
            if want.commit is not None
            else self._resolve(mirror, session, want, deadline, max_age)
        )
        # The remote answered (or was not asked). An adopted mirror that git fails on
        # from here is started afresh and tried once more: a mirror an earlier process
        # left damaged costs a clone, not a failed sync. A remote that does not answer
        # ls-remote leaves the mirror alone.
        adopted = mirror.adopted
        try:
            return self._fetch_into_tree(mirror, session, want, resolved, deadline, started)
        except FetchError as e:
            if not adopted or e.timed_out or isinstance(e, _OverLimit):
                raise
            log.warning(
                "url=%s action=discard_mirror mirror=%s reason=%r",
                session.url.url,
                mirror.key[:12],
                e.message,
            )
            self._cache.reset_mirror(mirror)
            return self._fetch_into_tree(mirror, session, want, resolved, deadline, started)

    def _resolve(
        self, mirror: Mirror, session: GitSession, want: Want, deadline: Deadline, max_age: float
    ) -> Resolved:
        """The ref `want` names, from the remote's refs (asked at most once per max_age)."""
        url = session.url.url
        answer = self._remote_refs(mirror, session, deadline, max_age)
        try:
            return resolve(answer, want, url)
        except RevisionMissing:
            if time.monotonic() - answer.at < _FRESH_ENOUGH_SECONDS:
                raise
            # Another sync's remembered answer may predate the branch or tag this
            # one names: a miss is worth one more question.
            answer = self._remote_refs(mirror, session, deadline, max_age=0)
            return resolve(answer, want, url)

    def _fetch_into_tree(
        self,
        mirror: Mirror,
        session: GitSession,
        want: Want,
        resolved: Resolved | None,
        deadline: Deadline,
        started: float,
    ) -> Checkout:
        """The checkout of the pinned commit (`resolved` None) or of the resolved ref:
        fetched into the mirror unless it is there, materialised unless it is."""
        fetched = False
        if resolved is None:
            assert want.commit is not None
            commit = want.commit
            label = want.branch
            if commit not in mirror.commits and not self._found_whole(mirror, session, commit):
                target = f"refs/gitferry/pins/{commit}"
                self._fetch_object(mirror, session, deadline, commit, target, f"commit {commit}")
                self._verify_commit(mirror, session, target, f"commit {commit}")
                fetched = True
        else:
            label = resolved.label
            known = resolved.commit  # None when the server did not peel a tag
            if known is not None and (
                known in mirror.commits or self._found_whole(mirror, session, known)
            ):
                commit = known
            else:
                commit = self._fetch_ref(mirror, session, deadline, resolved)
                fetched = True
        tree = self._cache.tree(commit)
        if tree is None:
            tree = self._materialise(mirror, session, commit)
            fetched = True
        if fetched:
            evicted = self._cache.evict(keep_mirror=mirror, keep_tree=commit)
            log.debug(
                "url=%s commit=%s action=fetch duration_ms=%d cache_bytes=%d evicted=%d",
                session.url.url,
                commit,
                (time.monotonic() - started) * 1000,
                self._cache.total_bytes(),
                len(evicted),
            )
        revision = f"{label}@sha1:{commit}" if label else f"sha1:{commit}"
        return Checkout(path=tree, commit=commit, revision=revision, mirror=mirror.path)

    def _remote_refs(
        self,
        mirror: Mirror,
        session: GitSession,
        deadline: Deadline,
        max_age: float,
    ) -> RefsAnswer:
        """The remote's refs, asked at most once per max_age (per mirror)."""
        answer = mirror.refs
        if answer is not None and time.monotonic() - answer.at < max_age:
            return answer
        self._ensure_initialised(mirror, session)  # ls-remote runs in it: no repo discovery
        with self._fetch_slot(session, deadline), self._observed("ls-remote"):
            out = session.run(
                ["ls-remote", "--symref", "--", session.url.url],
                action="ls-remote",
                git_dir=mirror.path,
            )
        answer = parse_ls_remote(out)
        mirror.refs = answer
        return answer

    def _fetch_ref(
        self, mirror: Mirror, session: GitSession, deadline: Deadline, resolved: Resolved
    ) -> str:
        """Fetch the object ls-remote named (one `fetch` request, no second ref listing);
        if the server refuses it (the ref moved since, on a protocol v0 server), fetch
        by name instead. Returns the commit the mirror now has under the ref."""
        target = resolved.refname
        try:
            self._fetch_object(mirror, session, deadline, resolved.want, target, resolved.wanted)
        except RevisionMissing:
            if target.startswith("refs/gitferry/"):  # a detached HEAD has no name to ask for
                raise
            mirror.refs = None  # the answer is stale
            self._fetch_object(mirror, session, deadline, target, target, resolved.wanted)
        commit = self._verify_commit(mirror, session, target, resolved.wanted)
        if commit != resolved.commit:
            mirror.refs = None  # moved between ls-remote and fetch: ask again next time
        return commit

    def _fetch_object(
        self,
        mirror: Mirror,
        session: GitSession,
        deadline: Deadline,
        source: str,
        target: str,
        wanted: str,
    ) -> None:
        """Fetch `source` (a sha or a ref) into the mirror's `target` ref, depth 1.

        Depth-1 fetches keep every earlier commit's objects (gc is off), so a mirror
        grown past twice its fresh size is started afresh first; one over
        max_repo_bytes gets one fresh try before the repository is refused."""
        if mirror.fresh_size and mirror.size > _REBUILD_FACTOR * mirror.fresh_size:
            self._cache.reset_mirror(mirror)
        while True:
            fresh = not mirror.commits and not mirror.adopted
            self._fetch_into(mirror, session, deadline, source, target, wanted)
            size = self._repo_size(mirror, session)
            limit = self.settings.max_repo_bytes
            if size <= limit:
                break
            self._cache.reset_mirror(mirror)
            if fresh:
                raise _OverLimit(
                    f"repository {session.url.url} is {size / MIB:.1f} MiB, over the limit of "
                    f"{limit / MIB:.1f} MiB for one repository"
                )
        # An adopted mirror whose fresh size was lost counts from its size now.
        self._cache.set_mirror_size(mirror, size, fresh=fresh or not mirror.fresh_size)

    def _fetch_into(
        self,
        mirror: Mirror,
        session: GitSession,
        deadline: Deadline,
        source: str,
        target: str,
        wanted: str,
    ) -> None:
        self._ensure_initialised(mirror, session)
        args = [
            "fetch",
            "--depth=1",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-recurse-submodules",
            "--quiet",
            "--",
            session.url.url,
            f"+{source}:{target}",
        ]
        with self._fetch_slot(session, deadline):
            try:
                with self._observed("fetch"):
                    session.run(args, action="fetch", git_dir=mirror.path, wanted=wanted)
            except (SourceError, DeadlineExceeded):
                # A failed fetch can leave what it wrote behind: lock files after a
                # kill, loose objects and tmp_obj_* after a full disk (which the
                # cache's accounting never sees). Start the mirror afresh.
                self._cache.reset_mirror(mirror)
                raise

    def _verify_commit(self, mirror: Mirror, session: GitSession, refname: str, wanted: str) -> str:
        try:
            out = session.run(
                ["rev-parse", "--verify", "--quiet", f"{refname}^{{commit}}"],
                action="rev-parse",
                git_dir=mirror.path,
            )
        except (FetchError, RevisionMissing):
            raise RevisionMissing(f"{wanted} in {session.url.url} does not name a commit") from None
        commit = out.strip()
        mirror.commits.add(commit)
        return commit

    def _found_whole(self, mirror: Mirror, session: GitSession, commit: str) -> bool:
        """Whether an adopted mirror already holds `commit` with its whole tree (then
        it joins `mirror.commits`); False at once for a mirror this process filled,
        whose `commits` is complete.

        `cat-file -e` would not do: a process killed while git unpacked a fetch can
        leave the commit without its tree or blobs. `rev-list --objects` reads every
        object the checkout needs and fails on a missing one; `--no-walk` keeps it to
        this commit (a depth-1 mirror has no parents to walk). Local, no network."""
        if not mirror.adopted:
            return False
        try:
            session.run(
                ["rev-list", "--objects", "--no-walk", "--quiet", f"{commit}^{{commit}}", "--"],
                action="rev-list",
                git_dir=mirror.path,
            )
        except SourceError:
            return False  # not there (or not whole): fetch it
        mirror.commits.add(commit)
        return True

    def _ensure_initialised(self, mirror: Mirror, session: GitSession) -> None:
        if not mirror.initialised:
            session.run(["init", "--bare", "-q", str(mirror.path)], action="init", git_dir=None)
            mirror.initialised = True

    def _repo_size(self, mirror: Mirror, session: GitSession) -> int:
        out = session.run(["count-objects", "-v"], action="count-objects", git_dir=mirror.path)
        kib = 0
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key in ("size", "size-pack", "size-garbage"):
                kib += int(value.strip() or 0)
        return kib * 1024

    def _materialise(self, mirror: Mirror, session: GitSession, commit: str) -> Path:
        """Write the commit's files to trees/<commit>, once (symlinks stay symlinks).

        read-tree + checkout-index, not `git archive`: archive applies export-ignore
        and export-subst, so its files can differ from the commit's."""
        self._check_tree_size(mirror, session, commit)
        scratch = self._cache.scratch_dir()
        try:
            work = scratch / "tree"
            work.mkdir()
            index = {"GIT_INDEX_FILE": str(scratch / "index")}
            session.run(
                ["read-tree", commit],
                action="read-tree",
                git_dir=mirror.path,
                extra_env=index,
            )
            session.run(
                [f"--work-tree={work}", "checkout-index", "--all", "--force"],
                action="checkout-index",
                git_dir=mirror.path,
                extra_env=index,
            )
            return self._cache.add_tree(commit, work)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _check_tree_size(self, mirror: Mirror, session: GitSession, commit: str) -> None:
        """FetchError before anything is written when the commit's files add up to
        more than max_repo_bytes or max_tree_entries: the mirror's limit counts
        compressed objects, and 100 MiB of zeros compress to almost nothing."""
        out = session.run(
            ["ls-tree", "-r", "-l", "-z", "--full-tree", commit],
            action="ls-tree",
            git_dir=mirror.path,
        )
        total = entries = 0
        for record in out.split("\0"):
            if not record:
                continue
            entries += 1
            size = record.split("\t", 1)[0].split()[-1]
            total += int(size) if size.isdigit() else 0
        limit = self.settings.max_repo_bytes
        if total > limit or entries > self.settings.max_tree_entries:
            raise _OverLimit(
                f"commit {commit} of {session.url.url} holds {entries} files of "
                f"{total / MIB:.1f} MiB, over the limit of {limit / MIB:.1f} MiB and "
                f"{self.settings.max_tree_entries} files for one repository's checkout"
            )

    @contextlib.contextmanager
    def _observed(self, operation: str) -> Iterator[None]:
        """Tell the observer how the git network operation in this block ended."""
        started = time.monotonic()
        try:
            yield
        except BaseException as e:
            self._notify(operation, _outcome(e), started)
            raise
        self._notify(operation, "ok", started)

    def _notify(self, operation: str, outcome: str, started: float) -> None:
        if self._observer is None:
            return
        try:
            self._observer(operation, outcome, time.monotonic() - started)
        except Exception:  # an observer's bug must not fail a fetch
            log.exception("action=observe operation=%s", operation)

    @contextlib.contextmanager
    def _fetch_slot(self, session: GitSession, deadline: Deadline) -> Iterator[None]:
        """One of max_fetches_per_host network operations against the URL's host,
        and one of max_concurrent_fetches across all hosts. Waits at most
        busy_wait seconds for each, then raises SourceBusy: a thread never sits
        behind a host that does not answer."""
        host = session.url.host
        with self._hosts_lock:
            slots = self._host_slots.get(host)
            if slots is None:
                slots = self._host_slots[host] = threading.BoundedSemaphore(
                    max(1, self.settings.max_fetches_per_host)
                )
        # A busy host's slot is not worth waiting for: its holders may sit for
        # the whole fetch timeout. The fetch slots turn over quickly.
        if not slots.acquire(timeout=min(0.1, deadline.remaining(STAGE))):
            raise SourceBusy(
                f"{self.settings.max_fetches_per_host} fetches from {host or 'this host'} are in flight"
            )
        try:
            wait = min(self.settings.busy_wait, deadline.remaining(STAGE))
            if not self._fetch_slots.acquire(timeout=wait):
                raise SourceBusy(
                    f"all {self.settings.max_concurrent_fetches} fetch slots are taken"
                )
            try:
                yield
            finally:
                self._fetch_slots.release()
        finally:
            slots.release()


def _relabel(info: RevisionInfo, checkout: Checkout) -> RevisionInfo:
    """A remembered answer about the same commit under another ref's name."""
    return replace(info, revision=checkout.revision)


def _outcome(error: BaseException) -> str:
    """A bounded word for how a git network operation failed."""
    if isinstance(error, AuthError):
        return "auth_failed"
    if isinstance(error, RevisionMissing):
        return "not_found"
    if isinstance(error, DeadlineExceeded) or (isinstance(error, FetchError) and error.timed_out):
        return "timeout"
    return "error"
