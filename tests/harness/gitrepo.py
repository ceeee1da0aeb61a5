"""Git repositories for tests, driven through the real `git` CLI.

A `WorkRepo` is a working clone whose `origin` is a bare `BareRepo`; the bare repos
live under `served_root(root)`, the directory the git servers export.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

AUTHOR_NAME = "Gitferry Test"
AUTHOR_EMAIL = "test@gitferry.invalid"
DEFAULT_BRANCH = "main"
# Commit dates start here and advance one second per commit: hashes are reproducible
# while `git log` still orders commits the way they were made.
BASE_EPOCH = 1_700_000_000
GIT_TIMEOUT = 120.0

_ASKPASS = """#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "$GITFERRY_TEST_USERNAME" ;;
  *) printf '%s\\n' "$GITFERRY_TEST_PASSWORD" ;;
esac
"""


class GitError(RuntimeError):
    def __init__(self, args: list[str], returncode: int, stdout: str, stderr: str) -> None:
        super().__init__(f"{shlex.join(args)} exited {returncode}: {stderr.strip()}")
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def git_env(home: Path, config: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment that reads no system or user git config and has fixed identities.

    Built from scratch rather than from os.environ so that a GIT_DIR or GIT_* of the
    caller (e.g. pytest run from a git hook) cannot leak in. `config` entries are passed
    as GIT_CONFIG_COUNT/KEY/VALUE: like `-c`, but kept out of the command line.
    """
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "LC_ALL": "C",
        "LANG": "C",
        "TZ": "UTC",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_ATTR_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": AUTHOR_NAME,
        "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
        "GIT_COMMITTER_NAME": AUTHOR_NAME,
        "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL,
        "GIT_AUTHOR_DATE": f"@{BASE_EPOCH} +0000",
        "GIT_COMMITTER_DATE": f"@{BASE_EPOCH} +0000",
    }
    if "TMPDIR" in os.environ:
        env["TMPDIR"] = os.environ["TMPDIR"]
    if config:
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for i, (key, value) in enumerate(config.items()):
            env[f"GIT_CONFIG_KEY_{i}"] = key
            env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env


def client_env(
    home: Path,
    *,
    username: str | None = None,
    password: str | None = None,
    config: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """`git_env` for a client; credentials go through a GIT_ASKPASS script reading env vars."""
    env = git_env(home, config)
    if username is not None or password is not None:
        askpass = home / "askpass.sh"
        askpass.write_text(_ASKPASS)
        askpass.chmod(0o700)
        env["GIT_ASKPASS"] = str(askpass)
        env["GITFERRY_TEST_USERNAME"] = username or ""
        env["GITFERRY_TEST_PASSWORD"] = password or ""
    return env


def run_git(
    args: list[str],
    env: Mapping[str, str],
    cwd: Path | None = None,
    input: bytes | None = None,
    check: bool = True,
    timeout: float = GIT_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run `git <args>`; raise GitError (with stderr) on failure when `check`."""
    cmd = ["git", *args]
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=dict(env),
        input=input,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    if check and proc.returncode != 0:
        raise GitError(cmd, proc.returncode, out, err)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def served_root(root: Path) -> Path:
    """The directory under `root` that holds the bare repos the servers export."""
    return root / "served"


@dataclass(frozen=True)
class BareRepo:
    """A bare repository, as a git server serves it."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name.removesuffix(".git")

    @property
    def file_url(self) -> str:
        return self.path.as_uri()


@dataclass
class WorkRepo:
    """A working repository whose `origin` is `bare`. Every method runs the git CLI."""

    path: Path
    bare: BareRepo
    env: dict[str, str]
    _commits: int = field(default=0, repr=False)

    def git(self, *args: str, input: bytes | None = None) -> str:
        """Run git in the work tree and return stdout (an escape hatch for rarer commands)."""
        return run_git(list(args), self._dated_env(), cwd=self.path, input=input).stdout

    def commit(self, files: Mapping[str, str | bytes | None], message: str) -> str:
        """Write (str/bytes) or delete (None) files, commit everything, return the sha.

        Commits even if nothing changed, so a test can always make a new revision.
        """
        for rel, content in files.items():
            target = self._path(rel)
            if content is None:
                if target.is_symlink() or target.is_file():
                    target.unlink()
                elif target.is_dir():
                    shutil.rmtree(target)
                continue
            if target.is_symlink():
                # Writing through a symlink would change its target, not replace it.
                target.unlink()
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content, encoding="utf-8")
        return self._commit_all(message)

    def symlink(self, path: str, target: str, message: str | None = None) -> str:
        """Commit a symlink at `path` pointing at `target` (taken verbatim); return the sha."""
        link = self._path(path)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.is_file():
            link.unlink()
        os.symlink(target, link)
        return self._commit_all(message or f"symlink {path} -> {target}")

    def push(
        self, branch: str = DEFAULT_BRANCH, *, tags: bool = False, force: bool = False
    ) -> None:
        """Push `branch` to the bare repo (and all tags with `tags`)."""
        args = ["push", "-q"]
        if force:
            args.append("--force")
        if tags:
            args.append("--tags")
        self.git(*args, "origin", f"refs/heads/{branch}:refs/heads/{branch}")

    def tag(
        self, name: str, annotated: bool = False, ref: str = "HEAD", *, push: bool = True
    ) -> str:
        """Create (and by default push) a tag; return the commit it points at."""
        args = ["tag"]
        if annotated:
            args += ["-a", "-m", f"tag {name}"]
        self.git(*args, name, ref)
        if push:
            self.git("push", "-q", "origin", f"refs/tags/{name}:refs/tags/{name}")
        return self.rev_parse(f"refs/tags/{name}^{{commit}}")

    def move_tag(self, name: str, ref: str) -> str:
        """Point an existing tag at `ref` (keeping it annotated if it was) and force-push it."""
        annotated = self.git("cat-file", "-t", f"refs/tags/{name}").strip() == "tag"
        args = ["tag", "-f"]
        if annotated:
            args += ["-a", "-m", f"tag {name}"]
        self.git(*args, name, ref)
        self.git("push", "-q", "--force", "origin", f"refs/tags/{name}:refs/tags/{name}")
        return self.rev_parse(f"refs/tags/{name}^{{commit}}")

    def delete_tag(self, name: str) -> None:
        self.git("tag", "-d", name)
        self.git("push", "-q", "origin", f":refs/tags/{name}")

    def branch(self, name: str, ref: str = "HEAD") -> None:
        """Create a local branch at `ref` without switching to it."""
        self.git("branch", name, ref)

    def checkout(self, name: str) -> None:
        self.git("checkout", "-q", name)

    def head(self) -> str:
        return self.rev_parse("HEAD")

    def rev_parse(self, ref: str) -> str:
        return self.git("rev-parse", "--verify", "-q", ref).strip()

    def _path(self, rel: str) -> Path:
        parts = Path(rel).parts
        if Path(rel).is_absolute() or ".." in parts or not parts or parts[0] == ".git":
            raise ValueError(f"not a path inside the work tree: {rel!r}")
        return self.path / rel

    def _commit_all(self, message: str) -> str:
        self.git("add", "-A")
        self._commits += 1
        self.git("commit", "-q", "--allow-empty", "--no-verify", "-m", message)
        return self.head()

    def _dated_env(self) -> dict[str, str]:
        date = f"@{BASE_EPOCH + self._commits} +0000"
        return {**self.env, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}


def make_repo(root: Path, name: str) -> WorkRepo:
    """Create `<served_root>/<name>.git` (bare) and a work repo in the `work` folder of `root`.

    Both start empty on branch `main`; push after the first commit.
    """
    env = git_env(root / "home")
    bare = BareRepo(served_root(root) / f"{name}.git")
    work = root / "work" / name
    if bare.path.exists() or work.exists():
        raise FileExistsError(f"repo {name!r} already exists under {root}")
    bare.path.parent.mkdir(parents=True, exist_ok=True)
    work.parent.mkdir(parents=True, exist_ok=True)
    run_git(["init", "-q", "--bare", "-b", DEFAULT_BRANCH, str(bare.path)], env)
    run_git(["init", "-q", "-b", DEFAULT_BRANCH, str(work)], env)
    run_git(["remote", "add", "origin", str(bare.path)], env, cwd=work)
    return WorkRepo(path=work, bare=bare, env=env)
