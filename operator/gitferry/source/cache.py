"""The fetch stage's disk cache: bare mirrors and materialised trees, LRU-bounded.

No git runs here: `fetcher` drives git and tells the cache what it wrote. This
module owns the layout, the per-mirror locks, the remembered `ls-remote` answers
and eviction. Layout, under one directory per GitSource instance:

    <cache_dir>/fingerprint-key    32 random bytes (0600) shared by every instance
    <cache_dir>/gitferry-<random>/
        .lock          flock held while the instance lives
        home/          the empty HOME every git process gets
        mirrors/<sha256 of url and credentials fingerprint>/   bare repositories
        trees/<commit>/                                         files of one commit
        tmp/           trees being written, credential-free scratch, trash

Mirrors outlive the process that fetched them: close() keeps mirrors/ (and
removes the rest), a killed process leaves its whole directory, and the next
instance on the same cache_dir adopts the mirrors of every instance whose lock is
free. An adopted mirror is moved (a rename: same filesystem), checked for being
a plain bare repository of ours first and deleted when it is not, and its
objects are not trusted until git has confirmed them (`Mirror.adopted`). An
instance whose lock is held is another live process: nothing of it is touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..deadline import DeadlineExceeded
from .errors import SourceError
from .refs import RefsAnswer

log = logging.getLogger("gitferry.source")

INSTANCE_PREFIX = "gitferry-"
FINGERPRINT_KEY_FILE = "fingerprint-key"
_FINGERPRINT_KEY_BYTES = 32
# Beside git's own files in a mirror: the mirror's size after its first fetch
# (decimal bytes), which the fetcher's "grew past twice its fresh size" needs.
FRESH_SIZE_FILE = "gitferry-fresh-size"
_MIRROR_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
# Without a way for callers to say "done with this checkout", a tree or mirror
# used this recently is assumed to be in use (a render reading it) and is not
# evicted, even when that leaves the cache over its bound for a while.
IN_USE_GRACE_SECONDS = 120.0


@dataclass(eq=False)
class Mirror:
    """A bare repository for one (URL, credentials). Mutate only while holding `lock`."""

    key: str
    path: Path
    lock: threading.Lock = field(default_factory=threading.Lock)
    initialised: bool = False
    refs: RefsAnswer | None = None
    commits: set[str] = field(default_factory=set)  # commits known to be in the mirror
    size: int = 0
    fresh_size: int = 0  # size after the first fetch into an empty mirror
    # The last failed ask of the remote and when (time.monotonic()): shared by
    # every sync of this mirror for a short while instead of each asking again.
    failure: SourceError | None = None
    failed_at: float = 0.0
    last_used: float = 0.0
    removed: bool = False  # evicted: a thread that waited for the lock must look again
    # Written by an earlier process: objects may be there that `commits` does not
    # list, and a commit is trusted only once git found it whole. Cleared by reset.
    adopted: bool = False


@dataclass(eq=False)
class _Tree:
    path: Path
    size: int
    last_used: float


@dataclass(frozen=True)
class Adoption:
    """What a new DiskCache took over from stopped instances (for the log and tests).

    `adopted`, `evicted`, `discarded`: mirror keys; evicted ones did not fit in
    max_bytes (the least recently modified go first), discarded ones were no plain
    bare repository or a duplicate older than another instance's copy."""

    adopted: list[str] = field(default_factory=list)
    adopted_bytes: int = 0
    evicted: list[str] = field(default_factory=list)
    discarded: list[str] = field(default_factory=list)
    instances: int = 0  # stale instance directories removed


@dataclass(frozen=True)
class _Candidate:
    key: str
    path: Path
    modified: float  # time.time() of the last write or use
    size: int  # bytes under objects/
    fresh_size: int


class DiskCache:
    """Mirrors and trees of one GitSource, bounded to `max_bytes` by LRU eviction.

    Creating one creates `cache_dir` if needed, reads or creates its fingerprint
    key, and adopts the mirrors of stopped instances (module docstring). Raises
    OSError when `cache_dir` cannot be written."""

    def __init__(self, cache_dir: Path, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._created_cache_dir = not cache_dir.exists()
        cache_dir.mkdir(parents=True, exist_ok=True)
        self._cache_dir = cache_dir
        self.fingerprint_key = _fingerprint_key(cache_dir)
        self.root = Path(tempfile.mkdtemp(prefix=INSTANCE_PREFIX, dir=cache_dir))
        # Locked before looking at the others: an instance starting beside this one
        # sees it alive and never takes its directory.
        self._lock_fd = _hold_instance_lock(self.root)
        self.home = self.root / "home"
        self.mirrors_dir = self.root / "mirrors"
        self.trees_dir = self.root / "trees"
        self.tmp_dir = self.root / "tmp"
        for d in (self.home, self.mirrors_dir, self.trees_dir, self.tmp_dir):
            d.mkdir(mode=0o700)
        self._lock = threading.Lock()  # guards the two dicts; never held while waiting
        self._mirrors: dict[str, Mirror] = {}
        self._trees: dict[str, _Tree] = {}
        self._closed = False
        self._started = time.monotonic()
        self.adoption = self._adopt_stale_instances()

    # --- mirrors ------------------------------------------------------------
    @contextlib.contextmanager
    def locked_mirror(self, key: str, timeout: float) -> Iterator[Mirror]:
        """The mirror for `key`, its lock held: concurrent syncs of one repo take turns.
        Raises DeadlineExceeded after `timeout` seconds of waiting."""
        waited_until = time.monotonic() + timeout
        while True:
            with self._lock:
                self._check_open()
                mirror = self._mirrors.get(key)
                if mirror is None:
                    mirror = Mirror(key=key, path=self.mirrors_dir / key)
                    self._mirrors[key] = mirror
            left = waited_until - time.monotonic()
            if left <= 0 or not mirror.lock.acquire(timeout=left):
                raise DeadlineExceeded("fetch, waiting for another fetch of the same repository")
            if not mirror.removed:
                break
            mirror.lock.release()
        try:
            mirror.last_used = time.monotonic()
            yield mirror
        finally:
            mirror.lock.release()

    def reset_mirror(self, mirror: Mirror) -> None:
        """Empty a mirror (its lock held by the caller): git must init and fetch afresh.

        The remembered ls-remote answer stays: it describes the remote, not the mirror."""
        with self._lock:
            trash = self._to_trash(mirror.path)
            mirror.initialised = False
            mirror.adopted = False
            mirror.commits.clear()
            mirror.size = mirror.fresh_size = 0
        _remove(trash)

    def set_mirror_size(self, mirror: Mirror, size: int, fresh: bool = False) -> None:
        """Account `size` bytes for the mirror (its lock held by the caller); with
        `fresh`, also as its size after its first fetch, kept beside it on disk so
        that an instance adopting it later knows it too."""
        with self._lock:
            mirror.size = size
            if fresh:
                mirror.fresh_size = size
        if fresh:
            _write_fresh_size(mirror.path, size)

    # --- trees --------------------------------------------------------------
    def tree(self, commit: str) -> Path | None:
        """The materialised files of `commit`, if present (and mark them used)."""
        with self._lock:
            tree = self._trees.get(commit)
            if tree is None:
                return None
            tree.last_used = time.monotonic()
            return tree.path

    def scratch_dir(self) -> Path:
        """A new private directory under tmp/ for the caller to fill and remove."""
        return Path(tempfile.mkdtemp(dir=self.tmp_dir))

    def add_tree(self, commit: str, written: Path) -> Path:
        """Move a fully written directory into trees/<commit> and account for it."""
        size = dir_size(written)
        target = self.trees_dir / commit
        with self._lock:
            existing = self._trees.get(commit)
            if existing is None:
                # rename is atomic: readers see the whole tree or none of it.
                os.rename(written, target)
                self._trees[commit] = _Tree(path=target, size=size, last_used=time.monotonic())
                return target
            existing.last_used = time.monotonic()  # another mirror wrote it meanwhile
        _remove(written)
        return existing.path

    # --- eviction -----------------------------------------------------------
    def total_bytes(self) -> int:
        with self._lock:
            return sum(m.size for m in self._mirrors.values()) + sum(
                t.size for t in self._trees.values()
            )

    def evict(self, keep_mirror: Mirror, keep_tree: str) -> list[str]:
        """Remove least-recently-used trees and mirrors until under max_bytes.

        Returns what was removed (directory names, for the log). The caller holds
        `keep_mirror`'s lock; other mirrors are skipped while someone uses them.
        """
        removed: list[str] = []
        trash: list[Path] = []
        now = time.monotonic()
        with self._lock:
            total = sum(m.size for m in self._mirrors.values()) + sum(
                t.size for t in self._trees.values()
            )
            if total <= self.max_bytes:
                return removed
            candidates: list[tuple[float, str, Mirror | _Tree]] = [
                (m.last_used, f"mirror {k[:12]}", m)
                for k, m in self._mirrors.items()
                if m is not keep_mirror
            ]
            candidates += [
                (t.last_used, f"tree {c[:12]}", t) for c, t in self._trees.items() if c != keep_tree
            ]
            candidates.sort(key=lambda c: c[0])
            for last_used, name, entry in candidates:
                if total <= self.max_bytes or now - last_used < IN_USE_GRACE_SECONDS:
                    break
                if isinstance(entry, Mirror):
                    if not entry.lock.acquire(blocking=False):
                        continue  # being fetched right now
                    try:
                        entry.removed = True
                        del self._mirrors[entry.key]
                        trash.append(self._to_trash(entry.path))
                    finally:
                        entry.lock.release()
                else:
                    del self._trees[entry.path.name]
                    trash.append(self._to_trash(entry.path))
                total -= entry.size
                removed.append(name)
        for path in trash:
            _remove(path)
        return removed

    # --- lifecycle ----------------------------------------------------------
    def close(self, keep_mirrors: bool = True) -> None:
        """Remove trees/, tmp/ and home/, then release the instance lock.

        With `keep_mirrors` (a graceful stop) mirrors/ stays, each directory's
        mtime set to its last use, for the next instance to adopt; without, or
        when there is no mirror, the instance's whole directory goes, and so does
        cache_dir when this instance created it and nothing else is left in it
        (the fingerprint key aside). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            mirrors = list(self._mirrors.values())
            self._mirrors.clear()
            self._trees.clear()
        with contextlib.suppress(OSError):
            keep_mirrors = keep_mirrors and any(self.mirrors_dir.iterdir())
        if keep_mirrors:
            # The next instance evicts the least recently used first, by mtime; an
            # adopted mirror this instance never used keeps the date it came with.
            now_wall, now_mono = time.time(), time.monotonic()
            for mirror in mirrors:
                if mirror.last_used < self._started:
                    continue
                used = now_wall - max(0.0, now_mono - mirror.last_used)
                with contextlib.suppress(OSError):
                    os.utime(mirror.path, (used, used), follow_symlinks=False)
            for d in (self.trees_dir, self.tmp_dir, self.home):
                _remove(d)
        else:
            _remove(self.root)
        os.close(self._lock_fd)  # after the removal: no other instance may take it meanwhile
        if not keep_mirrors and self._created_cache_dir:
            with contextlib.suppress(OSError):
                if [p.name for p in self._cache_dir.iterdir()] == [FINGERPRINT_KEY_FILE]:
                    (self._cache_dir / FINGERPRINT_KEY_FILE).unlink()
                self._cache_dir.rmdir()  # only if empty

    def _adopt_stale_instances(self) -> Adoption:
        """Move the mirrors of every stopped instance into this one, newest first
        while they fit in max_bytes; remove the rest of those instances.

        A stopped instance is locked while its mirrors move, so two instances
        starting together never take the same one. Never raises for what it finds:
        anything unexpected is deleted (or, when not ours, left alone)."""
        stale: list[tuple[Path, int]] = []
        for candidate in sorted(self._cache_dir.glob(f"{INSTANCE_PREFIX}*")):
            if candidate != self.root:
                fd = _lock_if_stale(candidate)
                if fd is not None:
                    stale.append((candidate, fd))
        adopted: list[str] = []
        evicted: list[str] = []
        discarded: list[str] = []
        total = 0
        try:
            newest: dict[str, _Candidate] = {}
            for instance, _ in stale:
                for found, problem in _mirrors_of(instance / "mirrors"):
                    if problem is not None:
                        log.warning(
                            "action=discard_mirror mirror=%s reason=%r", found.key[:12], problem
                        )
                        discarded.append(found.key)
                        continue
                    kept = newest.get(found.key)
                    if kept is not None:
                        older = min(kept, found, key=lambda c: c.modified)
                        discarded.append(older.key)  # another instance's copy is newer
                        if older is found:
                            continue
                    newest[found.key] = found
            now_wall, now_mono = time.time(), time.monotonic()
            for found in sorted(newest.values(), key=lambda c: c.modified, reverse=True):
                if evicted or total + found.size > self.max_bytes:
                    evicted.append(found.key)  # strictly LRU: nothing older stays either
                    continue
                target = self.mirrors_dir / found.key
                try:
                    os.rename(found.path, target)
                except OSError as e:
                    log.warning("action=discard_mirror mirror=%s reason=%r", found.key[:12], str(e))
                    discarded.append(found.key)
                    continue
                age = max(0.0, now_wall - found.modified)
                self._mirrors[found.key] = Mirror(
                    key=found.key,
                    path=target,
                    initialised=True,
                    adopted=True,
                    size=found.size,
                    fresh_size=found.fresh_size,
                    # Older than anything this process uses, so evicted first, and
                    # past the grace: no render of this process reads it.
                    last_used=now_mono - IN_USE_GRACE_SECONDS - age,
                )
                adopted.append(found.key)
                total += found.size
        finally:
            for instance, fd in stale:
                _remove(instance)
                os.close(fd)
        adoption = Adoption(adopted, total, evicted, discarded, len(stale))
        if stale:
            log.info(
                "action=adopt_cache instances=%d adopted=%d adopted_bytes=%d evicted=%d "
                "discarded=%d",
                len(stale),
                len(adopted),
                total,
                len(evicted),
                len(discarded),
            )
        return adoption

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the git source is closed")

    def _to_trash(self, path: Path) -> Path:
        """Rename `path` out of sight (cheap, under the lock); remove it later."""
        if not path.exists():
            return path
        target = Path(tempfile.mkdtemp(prefix="trash-", dir=self.tmp_dir)) / "t"
        os.rename(path, target)
        return target.parent


def dir_size(path: Path) -> int:
    """Bytes used by the files under `path` (symlinks counted, never followed)."""
    total = 0
    stack = [path]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                total += st.st_size
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
    return total


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _hold_instance_lock(root: Path) -> int:
    # Lock a file under a temporary name, then rename it into place: a `.lock` that
    # another instance can see is always already locked.
    pending = root / ".lock.pending"
    fd = os.open(pending, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(pending, root / ".lock")
    return fd


def _lock_if_stale(instance: Path) -> int | None:
    """The instance's lock, taken, when no live process holds it (the caller closes
    the returned fd); None for a live instance, or one not ours or still being set up."""
    try:
        fd = os.open(instance / ".lock", os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None  # alive
    return fd


def _fingerprint_key(cache_dir: Path) -> bytes:
    """The key of credential fingerprints, shared by every instance on `cache_dir`
    so that a mirror's name means the same after a restart: read, or created once
    (written under a temporary name, then linked into place: a reader never sees
    it half written, and of two instances creating it at once one wins).

    A key that cannot be read whole is replaced: the mirrors named with the old one
    are then never matched again and are evicted as the least recently used."""
    path = cache_dir / FINGERPRINT_KEY_FILE
    for _ in range(2):
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as f:
                key = f.read(_FINGERPRINT_KEY_BYTES + 1)
            if len(key) == _FINGERPRINT_KEY_BYTES:
                return key
            path.unlink()  # damaged: a fresh one below
        pending = cache_dir / f".{FINGERPRINT_KEY_FILE}.{secrets.token_hex(8)}"
        fd = os.open(pending, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(_FINGERPRINT_KEY_BYTES))
            with contextlib.suppress(FileExistsError):
                os.link(pending, path)
        finally:
            pending.unlink()
    raise OSError(f"cannot read a whole fingerprint key from {path}")


# What `git init --bare` writes in a config, and all a mirror of ours may hold:
# remotes, credentials, includes, filters or hooks there are not ours (the URL
# and credentials reach git on its command line and environment only).
_CONFIG_KEYS = {
    "core": {
        "repositoryformatversion",
        "filemode",
        "bare",
        "logallrefupdates",
        "symlinks",
        "ignorecase",
        "precomposeunicode",
    },
    "extensions": {"objectformat"},
}
_CONFIG_SECTION_RE = re.compile(r"^\[([A-Za-z0-9.-]+)\]$")
_CONFIG_KEY_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)\s*=")
# Never in a mirror of ours, or left by a git killed mid-write.
_FORBIDDEN = (
    "commondir",
    "objects/info/alternates",
    "objects/info/http-alternates",
    "info/attributes",
    "shallow.lock",
    "packed-refs.lock",
    "config.lock",
    "HEAD.lock",
)


def _mirror_problem(path: Path) -> str | None:
    """Why `path` is no plain bare repository written by this module's instances,
    or None. Cheap (a stat per expected file, a walk of refs/ and objects/pack/):
    git's own reads find corrupt objects later, and the fetcher confirms a commit
    whole with git before it trusts it."""
    if not _is_dir(path):
        return "not a directory"
    for name in ("HEAD", "config"):
        if not _is_file(path / name):
            return f"no {name} file"
    for name in ("objects", "objects/pack", "refs"):
        if not _is_dir(path / name):
            return f"no {name} directory"
    for name in _FORBIDDEN:
        if os.path.lexists(path / name):
            return f"holds {name}"
    for dirpath, dirnames, filenames in os.walk(path / "refs"):
        for name in dirnames + filenames:
            if name.endswith(".lock") or os.path.islink(os.path.join(dirpath, name)):
                return f"holds {os.path.relpath(os.path.join(dirpath, name), path)}"
    for entry in os.scandir(path / "objects" / "pack"):
        if not entry.name.startswith("pack-") or not entry.is_file(follow_symlinks=False):
            return f"holds objects/pack/{entry.name}"
    return _config_problem(path / "config")


def _config_problem(config: Path) -> str | None:
    """Why the config holds more than `git init --bare` writes, or None."""
    if config.stat().st_size > 4096:
        return "config is too big"
    section = None
    for raw in config.read_text(encoding="utf-8", errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        header = _CONFIG_SECTION_RE.match(line)
        if header is not None:
            section = header.group(1).lower()
            if section not in _CONFIG_KEYS:
                return f"config has a [{header.group(1)}] section"
            continue
        key = _CONFIG_KEY_RE.match(line)
        if section is None or key is None or key.group(1).lower() not in _CONFIG_KEYS[section]:
            return f"config sets {line.split('=')[0].strip()[:40]!r}"
    return None


def _mirrors_of(mirrors_dir: Path) -> Iterator[tuple[_Candidate, str | None]]:
    """Each entry of a stopped instance's mirrors/, with why it may not be adopted
    (None: it may)."""
    try:
        entries = sorted(os.scandir(mirrors_dir), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        path = Path(entry.path)
        try:
            problem = (
                _mirror_problem(path) if _MIRROR_KEY_RE.match(entry.name) else "not a mirror name"
            )
            # close() dates the directory by its last use; a killed process leaves
            # the dates of git's last writes (shallow and refs at the top, packs).
            modified = max(
                os.lstat(p).st_mtime
                for p in (path, path / "objects", path / "objects" / "pack")
                if os.path.lexists(p)
            )
            size = dir_size(path / "objects") if problem is None else 0
        except OSError as e:
            problem, modified, size = str(e), 0.0, 0
        yield _Candidate(entry.name, path, modified, size, _read_fresh_size(path)), problem


def _read_fresh_size(mirror: Path) -> int:
    """The fresh size written beside a mirror, or 0 (unknown) when missing or damaged."""
    try:
        text = (mirror / FRESH_SIZE_FILE).read_text(encoding="ascii", errors="replace")
    except OSError:
        return 0
    return int(text) if text.strip().isdigit() and len(text) < 20 else 0


def _write_fresh_size(mirror: Path, size: int) -> None:
    """Best effort: without it an adopted mirror grows until max_repo_bytes first."""
    pending = mirror / f".{FRESH_SIZE_FILE}.tmp"
    with contextlib.suppress(OSError):
        pending.write_text(str(size), encoding="ascii")
        os.replace(pending, mirror / FRESH_SIZE_FILE)


def _is_dir(path: Path) -> bool:
    """A directory, not a symlink to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_file(path: Path) -> bool:
    """A regular file, not a symlink to one."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
