"""The hardened git runner: an environment built from scratch for every git
process, credentials only in environment variables and 0600 files removed
after the call, a whole process group killed when it runs over, and git's
stderr turned into a typed error that never quotes a credential.

Processes are started with `subprocess`, not GitPython's `Git.execute`: that one
always starts from a copy of `os.environ` (so an inherited GIT_SSL_NO_VERIFY,
GIT_CONFIG_PARAMETERS, GIT_SSH_COMMAND or SSH_AUTH_SOCK would reach git and cannot
be removed, only overridden), and its kill-after-timeout kills the pids `pgrep`
lists at that moment rather than the process group (ssh, git-remote-https).
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..deadline import Deadline, DeadlineExceeded
from .credentials import GitCredentials, basic_token
from .errors import AuthError, FetchError, RevisionMissing, SourceError
from .urls import _HTTP_USERINFO_RE, _PASSWORD_RE, GitURL, redact_url

STAGE = "fetch"
_FALSE = shutil.which("false") or "/bin/false"  # an askpass that never answers


@dataclass(frozen=True)
class RunnerSettings:
    """What every git process of one GitSource shares."""

    allow_file_urls: bool = False
    fetch_timeout: float = 60.0  # seconds, one git process


# Each list in order of preference for the line quoted in the message.
_HOST_KEY_PATTERNS = (
    "host key is known",
    "has changed and you have requested strict checking",
    "host key verification failed",
    "remote host identification has changed",
)
_AUTH_PATTERNS = (
    "load key",  # the Secret's identity is no key: say so before "Permission denied"
    "permission denied (",  # ssh's; a plain "Permission denied" may be a file's
    "authentication failed",
    "access denied",
    "invalid username or password",
    "returned error: 401",
    "returned error: 403",
    "could not read username",
    "could not read password",
    "terminal prompts disabled",
    "invalid format",
    "too many authentication failures",
)
_HINTS = (("certificate", "if the server uses a private CA, put it in the Secret's ca.crt"),)
_NOT_FOUND_PATTERNS = (
    "couldn't find remote ref",
    "unknown revision",
    "not our ref",
    "no such remote ref",
    "unadvertised object",
    "not a valid object",
    "bad object",
    "not a commit",
)
_NOISE_PREFIXES = (
    "hint:",
    "warning: permanently added",
    "please make sure you have the correct access rights",
    "and the repository exists",
    "remote: counting",
    "remote: compressing",
    "remote: enumerating",
    "remote: total",
    "receiving objects",
    "resolving deltas",
    "from ",
    " * ",
)
_MAX_LINE = 300


def scrub(text: str, secret_values: Iterable[str]) -> str:
    """`text` with every secret value, and any URL user-info, replaced by ***."""
    for value in sorted({v for v in secret_values if v}, key=len, reverse=True):
        text = text.replace(value, "***")
    return _PASSWORD_RE.sub(r"\1:***@", _HTTP_USERINFO_RE.sub(r"\1***@", text))


def _significant_lines(stderr: str) -> list[str]:
    lines = []
    for raw in re.split(r"[\r\n]+", stderr):
        line = raw.strip(" \t@")  # ssh frames its warnings in @
        if line and not line.lower().startswith(_NOISE_PREFIXES):
            lines.append(line[:_MAX_LINE])
    return lines


def _git_words(lines: list[str], patterns: Sequence[str]) -> str:
    """One or two lines of git's own words: the one that explains, and the last fatal."""
    explaining = [ln for p in patterns for ln in lines if p in ln.lower()][:1]
    fatal = [ln for ln in lines if ln.lower().startswith(("fatal:", "error:"))]
    chosen = explaining or fatal[:1]
    if fatal and fatal[-1] not in chosen:
        chosen.append(fatal[-1])
    return "; ".join(chosen or lines[-2:]) or "git gave no reason"


def classify_git_error(
    stderr: str,
    *,
    action: str,
    url: str,
    secret_values: Iterable[str] = (),
    wanted: str | None = None,
) -> SourceError:
    """The typed error for a failed git `action` on `url`, from git's stderr.

    `wanted` names the revision asked for ("branch main"), for RevisionMissing.
    """
    values = list(secret_values)
    lines = _significant_lines(scrub(stderr, values))
    lowered = "\n".join(lines).lower()
    where = redact_url(url)
    if any(p in lowered for p in _HOST_KEY_PATTERNS):
        words = _git_words(lines, _HOST_KEY_PATTERNS)
        error: SourceError = AuthError(
            f"the host key of {where} is not in the Secret's known_hosts: {words}"
        )
    elif any(p in lowered for p in _AUTH_PATTERNS):
        words = _git_words(lines, _AUTH_PATTERNS)
        error = AuthError(f"authentication to {where} failed: {words}")
    elif any(p in lowered for p in _NOT_FOUND_PATTERNS):
        words = _git_words(lines, _NOT_FOUND_PATTERNS)
        error = RevisionMissing(f"{wanted or 'revision'} not found in {where}: {words}")
    else:
        words = _git_words(lines, ())
        hints = [hint for needle, hint in _HINTS if needle in lowered]
        error = FetchError(
            f"git {action} {where} failed: {words}" + "".join(f" ({hint})" for hint in hints)
        )
    error.message = scrub(error.message, values)
    return error


class GitTimeout(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"{seconds:.0f}s")
        self.seconds = seconds


class GitSession:
    """The environment of the git processes of one fetch() call.

    Credential files are written on the first git run (a cached fetch runs none) and
    removed by close(), which the caller calls in a finally.
    """

    def __init__(
        self,
        git: str,
        settings: RunnerSettings,
        home: Path,
        scratch: Path,
        url: GitURL,
        creds: GitCredentials,
        deadline: Deadline,
    ) -> None:
        self._git = git
        self._settings = settings
        self._home = home
        self._scratch = scratch
        self.url = url
        self._creds = creds
        self._deadline = deadline
        self._env: dict[str, str] | None = None
        self._tmp: Path | None = None
        self.killed = False  # a git process of this session ran over and was killed
        self.secret_values = creds.secret_values()

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._env = None

    def run(
        self,
        args: Sequence[str],
        *,
        action: str,
        git_dir: Path | None,
        extra_env: Mapping[str, str] | None = None,
        wanted: str | None = None,
    ) -> str:
        """stdout of `git [--git-dir] <args>`; a typed SourceError when git fails."""
        fetch_timeout = self._settings.fetch_timeout
        remaining = self._deadline.remaining(STAGE)
        timeout = min(remaining, fetch_timeout)
        cmd = [self._git]
        if git_dir is not None:
            cmd.append(f"--git-dir={git_dir}")
        cmd += args
        env = {**self._environment(), **(extra_env or {})}
        try:
            code, out, err = _run_killable(cmd, env=env, cwd=self._home, timeout=timeout)
        except GitTimeout as t:
            self.killed = True
            if remaining <= fetch_timeout:
                raise DeadlineExceeded(f"fetch (git {action} {self.url.url})") from None
            raise FetchError(
                f"git {action} {self.url.url} timed out after {t.seconds:.0f}s", timed_out=True
            ) from None
        if code != 0:
            if self._tmp is not None:  # "Load key identity", not a temporary path
                err = err.replace(f"{self._tmp}/", "")
            raise classify_git_error(
                err,
                action=action,
                url=self.url.url,
                secret_values=self.secret_values,
                wanted=wanted,
            )
        return out

    def _environment(self) -> dict[str, str]:
        if self._env is None:
            self._env = self._build_environment()
        return self._env

    def _private_file(self, name: str, content: str) -> str:
        if self._tmp is None:
            # 0700; under the cache so that a crash leaves nothing the next start keeps.
            self._tmp = Path(tempfile.mkdtemp(prefix="cred-", dir=self._scratch))
        path = self._tmp / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content if content.endswith("\n") else content + "\n")
        return str(path)

    def _build_environment(self) -> dict[str, str]:
        allow_file = self._settings.allow_file_urls
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "HOME": str(self._home),
            "XDG_CONFIG_HOME": str(self._home / ".config"),
            "LC_ALL": "C",
            "LANG": "C",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_ATTR_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": _FALSE,
            "SSH_ASKPASS_REQUIRE": "never",
            "GIT_PROTOCOL_FROM_USER": "0",
            "GIT_ALLOW_PROTOCOL": "http:https:ssh" + (":file" if allow_file else ""),
            "GIT_NO_REPLACE_OBJECTS": "1",
            "GIT_TRACE_REDACT": "1",
        }
        if "TMPDIR" in os.environ:
            env["TMPDIR"] = os.environ["TMPDIR"]
        config: list[tuple[str, str]] = [
            ("credential.helper", ""),
            ("core.hooksPath", "/dev/null"),
            ("core.askPass", _FALSE),
            ("core.fsmonitor", "false"),
            ("protocol.ext.allow", "never"),
            ("protocol.fd.allow", "never"),
            ("protocol.file.allow", "always" if allow_file else "never"),
            ("protocol.version", "2"),
            ("gc.auto", "0"),
            ("maintenance.auto", "false"),
            ("fetch.writeCommitGraph", "false"),
            ("fetch.recurseSubmodules", "false"),
            ("init.defaultBranch", "main"),
            # A redirect could carry the Authorization header to another host.
            ("http.followRedirects", "false"),
        ]
        creds = self._creds
        if self.url.scheme in ("http", "https"):
            if creds.username and creds.password:
                header = f"Authorization: Basic {basic_token(creds.username, creds.password)}"
                config.append(("http.extraHeader", header))
            elif creds.bearer_token:
                config.append(("http.extraHeader", f"Authorization: Bearer {creds.bearer_token}"))
            if creds.ca_crt and self.url.scheme == "https":
                config.append(("http.sslCAInfo", self._private_file("ca.crt", _ca_bundle(creds))))
        if self.url.is_ssh:
            env["GIT_SSH_COMMAND"] = self._ssh_command()
            env["GIT_SSH_VARIANT"] = "ssh"
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for i, (key, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{i}"] = key
            env[f"GIT_CONFIG_VALUE_{i}"] = value
        return env

    def _ssh_command(self) -> str:
        creds = self._creds
        assert creds.known_hosts is not None  # checked before any git runs
        known_hosts = self._private_file("known_hosts", creds.known_hosts)
        args = ["ssh", "-F", "/dev/null"]
        if creds.identity:
            args += ["-i", self._private_file("identity", creds.identity)]
        for option in (
            "IdentitiesOnly=yes",
            "IdentityAgent=none",
            f"UserKnownHostsFile={known_hosts}",
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
            "UpdateHostKeys=no",
            "BatchMode=yes",
            "PasswordAuthentication=no",
            "ControlMaster=no",
            "ControlPath=none",
            f"ConnectTimeout={max(1, int(self._settings.fetch_timeout))}",
        ):
            args += ["-o", option]
        return shlex.join(args)


_SYSTEM_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


def _ca_bundle(creds: GitCredentials) -> str:
    """ca.crt is an extra CA: git's sslCAInfo replaces the system bundle, so append it."""
    assert creds.ca_crt is not None
    bundle = creds.ca_crt if creds.ca_crt.endswith("\n") else creds.ca_crt + "\n"
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, *_SYSTEM_CA_BUNDLES):
        if candidate and os.path.isfile(candidate):
            with contextlib.suppress(OSError):
                return bundle + Path(candidate).read_text(encoding="utf-8", errors="replace")
    return bundle


def _run_killable(
    cmd: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float
) -> tuple[int, str, str]:
    """Run cmd in its own process group; on timeout kill the whole group (git and its
    ssh or git-remote-https children) before reaping, so no process outlives the call."""
    proc = subprocess.Popen(
        list(cmd),
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        _reap(proc)
        raise GitTimeout(timeout) from None
    except BaseException:
        _kill_group(proc)
        _reap(proc)
        raise
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def _reap(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # a process outside the group holds the pipes
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # The leader is not reaped yet, so its pid (the group id) cannot have been reused.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
