"""The fetch stage's disk cache: bare mirrors and materialised trees, LRU-bounded.

No git runs here: `fetcher` drives git and tells the cache what it wrote. This
module owns the layout, the per-mirror locks, the remembered `ls-remote` answers
and eviction. Layout, under one directory per GitSource instance:

    <cache_dir>/fingerprint-key    32 random bytes (0600) shared by every instance
    <cache_dir>/gitferry-<random>/
        .lock          flock held while the instance lives (stale ones are removed)
        home/          the empty HOME every git process gets
        mirrors/<sha256 of url and credentials fingerprint>/   bare repositories
        trees/<commit>/                                         files of one commit
        tmp/           trees being written, credential-free scratch, trash
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..deadline import DeadlineExceeded
from .errors import SourceError
from .refs import RefsAnswer

INSTANCE_PREFIX = "gitferry-"
FINGERPRINT_KEY_FILE = "fingerprint-key"
_FINGERPRINT_KEY_BYTES = 32
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


@dataclass(eq=False)
class _Tree:
    path: Path
    size: int
    last_used: float


class DiskCache:
    """Mirrors and trees of one GitSource, bounded to `max_bytes` by LRU eviction."""

    def __init__(self, cache_dir: Path, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._created_cache_dir = not cache_dir.exists()
        cache_dir.mkdir(parents=True, exist_ok=True)
        self._cache_dir = cache_dir
        self.fingerprint_key = _fingerprint_key(cache_dir)
        _remove_stale_instances(cache_dir)
        self.root = Path(tempfile.mkdtemp(prefix=INSTANCE_PREFIX, dir=cache_dir))
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
            mirror.commits.clear()
            mirror.size = mirror.fresh_size = 0
        _remove(trash)

    def set_mirror_size(self, mirror: Mirror, size: int) -> None:
        with self._lock:
            mirror.size = size

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
    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._mirrors.clear()
            self._trees.clear()
        _remove(self.root)
        os.close(self._lock_fd)  # after the removal: no other instance may clean it meanwhile
        if self._created_cache_dir:
            with contextlib.suppress(OSError):
                if [p.name for p in self._cache_dir.iterdir()] == [FINGERPRINT_KEY_FILE]:
                    (self._cache_dir / FINGERPRINT_KEY_FILE).unlink()
                self._cache_dir.rmdir()  # only if empty

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


def _remove_stale_instances(cache_dir: Path) -> None:
    """Remove instance directories left by a process that died without close()."""
    for candidate in cache_dir.glob(f"{INSTANCE_PREFIX}*"):
        lock = candidate / ".lock"
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # not one of ours, or still being set up
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # alive
        finally:
            os.close(fd)
        _remove(candidate)


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
