"""Who changed what: the commit a revision names (subject, author, times) and the
paths it changed since an earlier revision, read from the local bare mirror with
GitPython's object model (`Commit`, `Tree`).

Offline, bounded, and never failing the caller:

- No network. GitPython may run exactly one git command here, `git cat-file
  --batch` on the mirror (`_MirrorGit` refuses any other), with an environment
  that names the mirror and reaches no system or user config, no replace refs, no
  lazy fetch and no transport (`GIT_ALLOW_PROTOCOL` names none). The operator
  also removes every `GIT_*` and `SSH_*` variable from its own environment at
  start, since GitPython copies it into its git processes.
- The tree diff walks the two trees in Python, skipping equal subtrees by their
  hash: `Commit.diff` would run `git diff-tree`. Renames are exact (the same
  content under a new path), as git finds them first; a file moved and edited
  in one commit reads as deleted and added.
- Time: at most `max_seconds`, and at most half of what the deadline leaves. A
  watchdog kills the `cat-file` process when time is up, so a read blocked on
  it returns; what was found by then is kept, marked incomplete.
- Size: a commit object is read up to `max_commit_bytes` (its headers and the
  start of its message); subject, author and paths are cleaned of control and
  bidirectional-override characters and capped; at most `max_paths` paths are
  listed, then "and N more".
- GitPython's `Repo` itself reads GIT_DIR, GIT_COMMON_DIR, GIT_OBJECT_DIRECTORY and
  GIT_WORK_TREE from the process's environment; with the operator's cleaned one
  they are never set (elsewhere a stray one makes the commit unknown, no more).
- The previous revision may be missing from the mirror (the fetcher fetches
  with --depth=1, into a cache that starts empty and is evicted): its paths are
  then unknown, said with why; nothing extra is fetched.

The author's e-mail address is never read: Events are readable by whoever may
list Events in the namespace, an address is personal data, and the name is what
people recognise.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import re
import subprocess
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

# GitPython runs `git version` once, when it is first imported (after the operator
# cleaned its environment: gitferry.__main__).
import git

from ..deadline import Deadline

_REVISION_SHA_RE = re.compile(r"(?:^|@)sha1:([0-9a-f]{40})$")
_EMPTY_BLOB = bytes.fromhex("e69de29bb2d1d6434b8b29ae775ad8c2e48c5391")
_SUBMODULE_MODE = 0o160000
# Characters that change how text reads rather than what it says: C0/C1 controls
# (newlines, ESC sequences), format characters (bidirectional overrides, zero-width
# joiners), lone surrogates and line/paragraph separators.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


@dataclass(frozen=True)
class HistoryLimits:
    max_paths: int = 1000  # paths listed; the rest are counted
    max_seconds: float = 5.0  # for one revision, and never more than half the deadline's rest
    max_commit_bytes: int = 64 * 1024  # of one commit object: headers and the message's start
    max_subject: int = 200  # characters
    max_author: int = 100
    max_path: int = 300


@dataclass(frozen=True)
class PathChange:
    path: str
    status: str  # "added", "modified", "deleted", "renamed"
    old_path: str = ""  # where a renamed file was

    def __str__(self) -> str:
        return f"{self.old_path} -> {self.path}" if self.old_path else self.path


@dataclass(frozen=True)
class ChangedPaths:
    """The paths one revision changed since another, sorted, at most `max_paths`."""

    changes: tuple[PathChange, ...] = ()
    more: int = 0  # changed paths past the cap
    unknown: str = ""  # why the list is missing or incomplete; "" when it is whole

    @property
    def complete(self) -> bool:
        return not self.unknown

    def lines(self) -> tuple[str, ...]:
        """A line per path (`old -> new` for a rename), then `and N more`."""
        extra = (f"and {self.more} more",) if self.more else ()
        return tuple(str(c) for c in self.changes) + extra

    def describe(self) -> str:
        """For a log line: `3`, `1000+24`, or `unknown`."""
        if not self.changes and self.unknown:
            return "unknown"
        count = f"{len(self.changes)}+{self.more}" if self.more else str(len(self.changes))
        return count if self.complete else f"{count} (incomplete)"


@dataclass(frozen=True)
class RevisionInfo:
    """What one revision is: its commit's subject, author name and times, and the
    paths changed since the earlier revision asked about. Fields that could not be
    read are empty (or None), and `unknown` says why."""

    revision: str  # `<ref>@sha1:<hex>`
    commit: str  # the full sha
    subject: str = ""  # the message's first paragraph on one line (git's %s), cleaned
    author: str = ""  # the author's name, cleaned
    authored_at: datetime | None = None
    committed_at: datetime | None = None
    paths: ChangedPaths = field(default_factory=lambda: ChangedPaths(unknown="not read"))
    unknown: str = ""  # why the commit could not be read; "" when it was
    timed_out: bool = False  # reading was cut short: asking again may tell more


def commit_of(revision: str | None) -> str | None:
    """The sha a revision (`main@sha1:<hex>`, `sha1:<hex>`) names, or None."""
    match = _REVISION_SHA_RE.search(revision or "")
    return match.group(1) if match else None


def clean_text(text: str, limit: int) -> str:
    """`text` on one line for people to read: invalid UTF-8 and every control,
    format (bidirectional override) or line-separator character replaced, runs of
    white space made one space, at most `limit` characters (… marks a cut)."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    text = "".join(" " if unicodedata.category(c) in _HIDDEN_CATEGORIES else c for c in text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(0, limit - 1)].rstrip() + "…"


def subject_of(message: str) -> str:
    """git's subject (%s): the first paragraph, its lines joined by spaces."""
    lines = []
    for line in message.lstrip("\n").splitlines():
        if not line.strip():
            break
        lines.append(line.strip())
    return " ".join(lines)


# --- reading ---------------------------------------------------------------------


class _OutOfTime(Exception):
    pass


class _Refused(Exception):
    pass


class _MirrorGit(git.Git):
    """GitPython's git runner, allowed one command: `git cat-file --batch` (and
    --batch-check) on the mirror. It remembers its processes so that a watchdog
    can kill them when the time is up."""

    def __init__(self, working_dir: Any = None) -> None:
        super().__init__(working_dir)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.killed = threading.Event()

    def execute(self, command: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        words = [str(w) for w in command][1:]
        if words[:1] != ["cat-file"] or not set(words[1:]) <= {"--batch", "--batch-check"}:
            raise _Refused(
                f"gitferry lets GitPython run only git cat-file --batch, not {words[:2]}"
            )
        if self.killed.is_set():
            raise _OutOfTime()
        result = super().execute(command, *args, **kwargs)
        proc = getattr(result, "proc", None)
        if isinstance(proc, subprocess.Popen):
            self.processes.append(proc)
        return result

    def kill(self) -> None:
        """Time is up (called from the watchdog's thread): kill the cat-file
        processes, so that a read blocked on one returns at once, and start no more."""
        self.killed.set()
        self.stop()

    def stop(self) -> None:
        for proc in list(self.processes):
            with contextlib.suppress(OSError):
                proc.kill()

    def restart(self) -> None:
        """Forget the (stopped) persistent processes; the next read starts afresh."""
        self.stop()
        self.processes.clear()
        self.clear_cache()


class _MirrorRepo(git.Repo):
    GitCommandWrapperType = _MirrorGit


def _environment(git_dir: Path, home: Path) -> dict[str, str]:
    """What GitPython's git processes get on top of the (cleaned) operator's
    environment: this mirror and nothing else."""
    return {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "GIT_DIR": str(git_dir),
        "GIT_COMMON_DIR": str(git_dir),
        "GIT_OBJECT_DIRECTORY": str(git_dir / "objects"),
        "GIT_ALTERNATE_OBJECT_DIRECTORIES": "",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_COUNT": "0",
        "GIT_CONFIG_PARAMETERS": "",
        "GIT_ATTR_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_NO_REPLACE_OBJECTS": "1",
        "GIT_NO_LAZY_FETCH": "1",
        "GIT_OPTIONAL_LOCKS": "0",
        "GIT_ALLOW_PROTOCOL": "none",  # a protocol that does not exist: no transport at all
        "GIT_PROTOCOL_FROM_USER": "0",
    }


def read_revision(
    git_dir: Path,
    revision: str,
    since: str | None,
    deadline: Deadline,
    *,
    home: Path,
    limits: HistoryLimits | None = None,
) -> RevisionInfo:
    """The commit `revision` names in the bare repository `git_dir`, and the paths
    changed since the revision `since` (None or "" when there is none). Never
    raises: what cannot be read is empty, and `unknown` says why."""
    limits = limits or HistoryLimits()
    commit = commit_of(revision) or ""
    base = commit_of(since)
    if not commit:
        return RevisionInfo(revision, commit, unknown=f"{revision!r} names no commit")
    budget = min(limits.max_seconds, (deadline.at - time.monotonic()) / 2)
    if budget <= 0.01:
        why = "no time was left in this reconcile"
        paths = ChangedPaths(unknown=why)
        return RevisionInfo(revision, commit, paths=paths, unknown=why, timed_out=True)
    reader = _Reader(git_dir, home, limits, budget)
    try:
        return reader.read(revision, commit, base, since or "")
    finally:
        reader.close()


class _Reader:
    def __init__(self, git_dir: Path, home: Path, limits: HistoryLimits, budget: float) -> None:
        self.git_dir = git_dir
        self.home = home
        self.limits = limits
        self.budget = budget
        self.end = time.monotonic() + budget
        self.repo: _MirrorRepo | None = None
        self.timer: threading.Timer | None = None
        self.timed_out = False

    def read(self, revision: str, commit: str, base: str | None, since: str) -> RevisionInfo:
        try:
            repo = self._open()
        except Exception as e:  # gone (evicted, reset) or never written
            why = f"the local mirror cannot be read ({type(e).__name__})"
            return RevisionInfo(revision, commit, paths=ChangedPaths(unknown=why), unknown=why)
        fields: dict[str, Any] = {}
        tree: git.Tree | None = None
        try:
            new = self._commit(repo, commit)
            tree = _loaded(new, "tree", None)
            message = _loaded(new, "message", "")
            if isinstance(message, bytes):
                message = message.decode("utf-8", "replace")
            author = _loaded(new, "author", None)
            fields = {
                "subject": clean_text(subject_of(message), self.limits.max_subject),
                "author": clean_text(getattr(author, "name", "") or "", self.limits.max_author),
                "authored_at": _when(
                    _loaded(new, "authored_date", None), _loaded(new, "author_tz_offset", 0)
                ),
                "committed_at": _when(
                    _loaded(new, "committed_date", None), _loaded(new, "committer_tz_offset", 0)
                ),
            }
        except Exception as e:
            fields["unknown"] = self._why(e, f"commit {commit}")
        if tree is None:
            paths = ChangedPaths(unknown=fields.get("unknown") or f"commit {commit} has no tree")
        elif base is None:
            paths = ChangedPaths(unknown="no earlier revision was applied" if not since else
                                 f"{since!r} names no commit")  # fmt: skip
        elif base == commit:
            paths = ChangedPaths()
        else:
            paths = self._paths(repo, base, tree, since)
        return RevisionInfo(revision, commit, paths=paths, timed_out=self.timed_out, **fields)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.repo is not None:
            with contextlib.suppress(Exception):
                self.repo.git.restart()
            with contextlib.suppress(Exception):
                self.repo.close()

    # --- steps ----------------------------------------------------------------
    def _open(self) -> _MirrorRepo:
        repo = _MirrorRepo(self.git_dir, expand_vars=False)
        self.repo = repo
        repo.git.update_environment(**_environment(self.git_dir, self.home))
        self.timer = threading.Timer(max(0.0, self.end - time.monotonic()), self._time_up)
        self.timer.daemon = True
        self.timer.start()
        return repo

    def _time_up(self) -> None:
        self.timed_out = True
        if self.repo is not None:
            self.repo.git.kill()

    def _check_time(self) -> None:
        if self.timed_out or time.monotonic() >= self.end:
            self.timed_out = True
            raise _OutOfTime()

    def _commit(self, repo: _MirrorRepo, sha: str) -> git.Commit:
        """The commit object `sha`, its headers and at most max_commit_bytes of it.
        KeyError when the mirror does not hold it, TypeError when it is no commit."""
        self._check_time()
        binsha = bytes.fromhex(sha)
        try:
            stream = repo.odb.stream(binsha)
        except ValueError:  # cat-file: "<sha> missing"
            self._check_time()
            raise KeyError(sha) from None
        kind = stream.type.decode() if isinstance(stream.type, bytes) else str(stream.type)
        limit = self.limits.max_commit_bytes
        data = stream.read(min(stream.size, limit))
        cut = stream.size > limit or kind != "commit"
        if cut:
            repo.git.stop()  # the rest of a large object is never read...
        del stream  # ...only what the pipe already holds, up to the stopped process's end
        if cut:
            repo.git.restart()
        if kind != "commit":
            raise TypeError(f"{sha} is a {kind}, not a commit")
        self._check_time()
        return _parse_commit(repo, binsha, data)

    def _paths(self, repo: _MirrorRepo, base: str, tree: git.Tree, since: str) -> ChangedPaths:
        try:
            old = _loaded(self._commit(repo, base), "tree", None)
        except KeyError:
            return ChangedPaths(unknown=f"the previous revision {since} is not in the local mirror")
        except Exception as e:
            return ChangedPaths(unknown=self._why(e, f"the previous revision {since}"))
        if old is None:
            return ChangedPaths(unknown=f"the previous revision {since} has no tree")
        walk = _Walk(self._check_time)
        why = ""
        try:
            walk.diff(old, tree, "")
        except Exception as e:
            why = self._why(e, "the changed paths")
        changes = walk.result()
        cap = self.limits.max_paths
        shown = tuple(
            PathChange(
                clean_text(c.path, self.limits.max_path),
                c.status,
                clean_text(c.old_path, self.limits.max_path) if c.old_path else "",
            )
            for c in changes[:cap]
        )
        return ChangedPaths(shown, max(0, len(changes) - cap), why)

    def _why(self, error: Exception, what: str) -> str:
        if self.timed_out or isinstance(error, _OutOfTime):
            self.timed_out = True
            return f"reading {what} took too long (stopped after {self.budget:.3g}s)"
        if isinstance(error, KeyError):
            return f"{what} is not in the local mirror"
        if isinstance(error, _Refused):
            return str(error)
        return f"{what} could not be read ({type(error).__name__})"


def _parse_commit(repo: git.Repo, binsha: bytes, data: bytes) -> git.Commit:
    """GitPython's commit parser on `data`, re-encoded to UTF-8 first as `git log`
    does: GitPython 3.2 never honours the `encoding` header (it compares ten bytes
    with the nine of b"encoding "), and a header naming no text encoding would make
    it raise, or log the author line, address and all. Names and message that are
    not valid in their encoding read with U+FFFD."""
    head, sep, message = data.partition(b"\n\n")
    lines = head.split(b"\n")
    named = [ln[len(b"encoding ") :] for ln in lines if ln.startswith(b"encoding ")]
    encoding = _text_encoding(named[0]) if named else None
    if named:
        lines = [ln for ln in lines if not ln.startswith(b"encoding ")]
    if encoding is not None and encoding != "utf-8":
        lines = [
            _recode(ln, encoding) if ln.startswith((b"author ", b"committer ")) else ln
            for ln in lines
        ]
        message = _recode(message, encoding)
    return git.Commit(repo, binsha)._deserialize(io.BytesIO(b"\n".join(lines) + sep + message))


def _text_encoding(name: bytes) -> str | None:
    """The codec a commit's `encoding` header names, if it is a text encoding that
    decodes any byte; None otherwise."""
    try:
        info = codecs.lookup(name.strip().decode("ascii"))
        if not info._is_text_encoding:
            return None
        bytes(range(256)).decode(info.name, "replace")
    except Exception:
        return None
    return info.name


def _recode(data: bytes, encoding: str) -> bytes:
    return data.decode(encoding, "replace").encode("utf-8", "surrogatepass")


def _loaded(obj: object, name: str, default: Any) -> Any:
    """An attribute the parser set, or `default`: never GitPython's lazy loading,
    which would read the whole object again, past max_commit_bytes."""
    try:
        return object.__getattribute__(obj, name)
    except AttributeError:
        return default


def _when(epoch: int | None, altz: float) -> datetime | None:
    """A commit time as an aware datetime in its own offset (UTC when the offset
    is absurd); None when git's number is no time at all."""
    try:
        zone: timezone = timezone(timedelta(seconds=-altz))
    except (ValueError, OverflowError, TypeError):
        zone = UTC
    if epoch is None:
        return None
    try:
        return datetime.fromtimestamp(epoch, zone)
    except (ValueError, OverflowError, OSError, TypeError):
        return None


@dataclass
class _Entry:
    path: str
    status: str
    old_path: str = ""
    binsha: bytes = b""


class _Walk:
    """Two trees compared entry by entry; subtrees with equal hashes are skipped."""

    def __init__(self, check_time: Any) -> None:
        self._check_time = check_time
        self.added: list[_Entry] = []
        self.deleted: list[_Entry] = []
        self.modified: list[_Entry] = []

    def diff(self, old: git.Tree | None, new: git.Tree | None, prefix: str) -> None:
        self._check_time()
        before = _items(old)
        after = _items(new)
        for name in sorted(before.keys() | after.keys()):
            a, b = before.get(name), after.get(name)
            path = f"{prefix}{name}"
            if a is not None and b is not None and a.binsha == b.binsha and a.mode == b.mode:
                continue
            a_tree = a if isinstance(a, git.Tree) else None
            b_tree = b if isinstance(b, git.Tree) else None
            if a_tree is not None or b_tree is not None:
                self.diff(a_tree, b_tree, f"{path}/")
            a_file = a if a is not None and a_tree is None else None
            b_file = b if b is not None and b_tree is None else None
            if a_file is not None and b_file is not None:
                self.modified.append(_Entry(path, "modified"))
            elif a_file is not None:
                self.deleted.append(_Entry(path, "deleted", binsha=_rename_key(a_file)))
            elif b_file is not None:
                self.added.append(_Entry(path, "added", binsha=_rename_key(b_file)))

    def result(self) -> list[_Entry]:
        """Every change by path; an added file whose content a deleted one had is
        that file renamed (empty files and submodules are never paired)."""
        gone: dict[bytes, list[_Entry]] = {}
        for entry in self.deleted:
            if entry.binsha:
                gone.setdefault(entry.binsha, []).append(entry)
        paired: set[int] = set()
        out = list(self.modified)
        for entry in self.added:
            candidates = gone.get(entry.binsha) if entry.binsha else None
            if candidates:
                old = candidates.pop(0)
                paired.add(id(old))
                out.append(_Entry(entry.path, "renamed", old.path))
            else:
                out.append(entry)
        out += [e for e in self.deleted if id(e) not in paired]
        return sorted(out, key=lambda e: e.path)


def _items(tree: git.Tree | None) -> dict[str, Any]:
    if tree is None:
        return {}
    return {item.name: item for item in tree}


def _rename_key(item: Any) -> bytes:
    if item.mode == _SUBMODULE_MODE or item.binsha == _EMPTY_BLOB:
        return b""
    return bytes(item.binsha)
