"""The fetch stage: a git URL and a ref in, a directory with one commit's files out.

    fetch = validate (URL, ref, credentials; no git yet)
          → resolve the ref (`git ls-remote`, at most once per max_age per mirror)
          → fetch the commit into the shared bare mirror if it is not there (--depth=1)
          → materialise the commit's files once into trees/<sha>
          → evict least-recently-used trees and mirrors beyond the cache bound

Every git process runs with an environment built from scratch (no user or system
config, no prompts, no hooks, only http/https/ssh[/file] transports) and is killed,
with its whole process group, when it runs over. Credentials reach git only
through environment variables and 0600 temporary files removed after the call;
they are never on a command line, in a URL on disk or in a message.

Processes are started with `subprocess`, not GitPython's `Git.execute`: that one
always starts from a copy of `os.environ` (so an inherited GIT_SSL_NO_VERIFY,
GIT_CONFIG_PARAMETERS, GIT_SSH_COMMAND or SSH_AUTH_SOCK would reach git and cannot
be removed, only overridden), and its kill-after-timeout kills the pids `pgrep`
lists at that moment rather than the process group (ssh, git-remote-https).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from semantic_version import NpmSpec, Version

from .api import GitRef
from .deadline import Deadline
from .errors import (
    AuthenticationFailed,
    DeadlineExceeded,
    GitFetchFailed,
    InvalidSpec,
    RevisionNotFound,
    SyncError,
    URLInvalid,
)
from .gitcache import DiskCache, Mirror, RefsAnswer

log = logging.getLogger(__name__)

STAGE = "fetch"
GIB = 1 << 30
MIB = 1 << 20
_REBUILD_FACTOR = 2
_FRESH_ENOUGH_SECONDS = 1.0
_FALSE = shutil.which("false") or "/bin/false"  # an askpass that never answers

# A per-process key for fingerprints: a plain hash of a weak password would be
# guessable from a cache directory name. The cache does not outlive the process.
_FINGERPRINT_KEY = secrets.token_bytes(32)


# --- public values ---------------------------------------------------------
@dataclass(frozen=True)
class GitCredentials:
    """Secret data for git; `repr` never shows a secret value."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    bearer_token: str | None = field(default=None, repr=False)
    ca_crt: str | None = field(default=None, repr=False)
    identity: str | None = field(default=None, repr=False)
    known_hosts: str | None = field(default=None, repr=False)

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str]) -> GitCredentials:
        """From a Secret's (decoded) data: keys username, password, bearerToken, ca.crt,
        identity, known_hosts. Empty values count as absent; the trailing newline that
        `kubectl create secret --from-file` keeps is dropped from the one-line values."""

        def line(key: str) -> str | None:
            value = data.get(key)
            return value.strip() or None if value is not None else None

        def text(key: str) -> str | None:
            value = data.get(key)
            return value if value is not None and value.strip() else None

        return cls(
            username=line("username"),
            password=line("password"),
            bearer_token=line("bearerToken"),
            ca_crt=text("ca.crt"),
            identity=text("identity"),
            known_hosts=text("known_hosts"),
        )

    def fingerprint(self) -> str:
        """A keyed SHA-256 of all fields: equal credentials give equal fingerprints
        within this process; the value reveals nothing about the secrets."""
        payload = json.dumps([getattr(self, f.name) for f in fields(self)]).encode()
        return hmac.new(_FINGERPRINT_KEY, payload, hashlib.sha256).hexdigest()

    def secret_values(self) -> list[str]:
        """Every string that must never appear in a message."""
        values = [v for v in (self.password, self.bearer_token) if v]
        if self.username and self.password:
            values.append(_basic_token(self.username, self.password))
        if self.identity:
            values.append(self.identity)
            values += [ln.strip() for ln in self.identity.splitlines() if len(ln.strip()) >= 8]
        return values


@dataclass(frozen=True)
class SourceSettings:
    cache_dir: Path
    allow_file_urls: bool = False
    max_concurrent_fetches: int = 4
    max_cache_bytes: int = 2 * GIB
    max_repo_bytes: int = 500 * MIB
    fetch_timeout: float = 60.0


@dataclass(frozen=True)
class Checkout:
    path: Path  # the files of the revision; shared by all syncs on this commit: read only
    commit: str  # full sha
    revision: str  # "main@sha1:<sha>", "v1.2.0@sha1:<sha>" or "sha1:<sha>"


# --- URLs ------------------------------------------------------------------
@dataclass(frozen=True)
class GitURL:
    """A validated git URL (it carries no credentials)."""

    url: str
    scheme: str  # https, http, ssh or file (scp-like addresses are ssh)
    host: str

    @property
    def is_ssh(self) -> bool:
        return self.scheme == "ssh"


# git's <transport>::<address> (ext::, fd::, ...); stricter than git: any "::" before a
# "/" or an IPv6 "[" is refused.
_HELPER_RE = re.compile(r"^[^/\[]*::")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SCP_RE = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]/]+\]|[^@/:\[\]]+):(?P<path>.*)$")
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]*|\[[0-9A-Fa-f:.]+\])$")
_USER_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
# Any user-info of an http(s) URL is a credential; elsewhere only a password is.
_HTTP_USERINFO_RE = re.compile(r"(?i)\b(https?://)[^/@\s]*@")
_PASSWORD_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*):[^/@\s]*@")
_NETWORK_SCHEMES = ("https", "http", "ssh")


def redact_url(url: str) -> str:
    """`url` without credentials: no user-info in http(s) URLs, no password in others."""
    return _PASSWORD_RE.sub(r"\1@", _HTTP_USERINFO_RE.sub(r"\1", url))


def parse_url(url: str, allow_file_urls: bool = False) -> GitURL:
    """A GitURL, or URLInvalid saying why (without quoting a credential)."""
    if not isinstance(url, str) or not url.strip():
        raise URLInvalid("spec.url is empty")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise URLInvalid(f"spec.url {redact_url(url)!r} contains a space or control character")
    if url.startswith("-"):
        raise URLInvalid(f"spec.url {redact_url(url)!r} starts with '-'")
    if _HELPER_RE.match(url):
        raise URLInvalid(
            f"spec.url {redact_url(url)!r}: git transport helpers (<transport>::<address>) "
            f"are not allowed; use https://, http://, ssh:// or user@host:path"
        )
    scheme_match = _SCHEME_RE.match(url)
    if scheme_match is None:
        return _parse_scp(url)
    scheme = scheme_match.group(1).lower()
    if scheme == "file":
        if not allow_file_urls:
            raise URLInvalid(f"spec.url {url!r}: file:// URLs are not allowed by this operator")
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path.strip("/"):
            raise URLInvalid(f"spec.url {url!r}: a file URL is file:///absolute/path")
        return GitURL(url=url, scheme="file", host="")
    if scheme not in _NETWORK_SCHEMES:
        raise URLInvalid(
            f"spec.url {redact_url(url)!r}: scheme {scheme}:// is not supported; "
            f"use https://, http://, ssh:// or user@host:path"
        )
    parts = urlsplit(url)
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        if scheme != "ssh" or ":" in userinfo:
            raise URLInvalid(
                f"spec.url {redact_url(url)!r} must not carry credentials: put them in the "
                f"Secret named by spec.secretRef"
            )
        if not _USER_RE.match(userinfo):
            raise URLInvalid(f"spec.url {url!r}: invalid user name")
    host = parts.hostname or ""
    bracketed = f"[{host}]" if ":" in host else host
    if not host or not _HOST_RE.match(bracketed):
        raise URLInvalid(f"spec.url {redact_url(url)!r}: missing or invalid host name")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise URLInvalid(f"spec.url {redact_url(url)!r}: invalid port") from None
    if not parts.path.strip("/"):
        raise URLInvalid(f"spec.url {redact_url(url)!r}: the repository path is missing")
    return GitURL(url=url, scheme=scheme, host=host)


def _parse_scp(url: str) -> GitURL:
    userinfo, at, _ = url.partition("@")
    if at and ":" in userinfo:
        # `user:token@host:path` would otherwise read as host `user`; never quote it.
        raise URLInvalid(
            "spec.url carries credentials (user:password@): put them in the Secret named by "
            "spec.secretRef instead"
        )
    m = _SCP_RE.match(url)
    if m is None or "/" in url.partition(":")[0]:
        raise URLInvalid(
            f"spec.url {redact_url(url)!r} is not a git URL: use https://, http://, ssh:// "
            f"or user@host:path"
        )
    user, host, path = m.group("user"), m.group("host"), m.group("path")
    if user is not None and not _USER_RE.match(user):
        raise URLInvalid(f"spec.url {url!r}: invalid user name")
    if not _HOST_RE.match(host):
        raise URLInvalid(f"spec.url {url!r}: invalid host name")
    if not path.strip("/") or path.startswith("-"):
        raise URLInvalid(f"spec.url {url!r}: the repository path is missing or invalid")
    return GitURL(url=url, scheme="ssh", host=host.strip("[]"))


# --- refs ------------------------------------------------------------------
_COMMIT_RE = re.compile(r"^[0-9a-fA-F]{40}$")
_REF_BAD_CHARS = frozenset(" ~^:?*[\\")


def ref_name_problem(name: str) -> str | None:
    """Why `name` is not a valid branch or tag name (git check-ref-format), or None."""
    if not name:
        return "is empty"
    if name.startswith("-"):
        return "starts with '-'"
    if any(ord(c) < 0x20 or ord(c) == 0x7F or c in _REF_BAD_CHARS for c in name):
        return "contains a space, a control character or one of ~ ^ : ? * [ \\"
    if ".." in name:
        return "contains '..'"
    if "@{" in name or name == "@":
        return "contains '@{' or is '@'"
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return "has an empty path component"
    if name.endswith("."):
        return "ends with '.'"
    for part in name.split("/"):
        if part.startswith("."):
            return "has a component starting with '.'"
        if part.endswith(".lock"):
            return "has a component ending with '.lock'"
    return None


@dataclass(frozen=True)
class _Want:
    """What to resolve, after validation."""

    branch: str | None = None
    tag: str | None = None
    semver: tuple[_Clause, ...] | None = None
    semver_text: str | None = None
    commit: str | None = None


def validate_ref(ref: GitRef) -> None:
    """InvalidSpec when a branch, tag, commit or semver range cannot be valid."""
    _want(ref)


def _want(ref: GitRef) -> _Want:
    for kind, value in (("branch", ref.branch), ("tag", ref.tag)):
        if value is not None:
            problem = ref_name_problem(value)
            if problem:
                raise InvalidSpec(f"spec.ref.{kind} {value!r} {problem}")
    commit = None
    if ref.commit is not None:
        if not _COMMIT_RE.match(ref.commit):
            raise InvalidSpec(
                f"spec.ref.commit {ref.commit!r} is not a full 40-character commit SHA"
            )
        commit = ref.commit.lower()
    clauses = parse_semver_range(ref.semver) if ref.semver is not None else None
    return _Want(
        branch=ref.branch,
        tag=ref.tag,
        semver=clauses,
        semver_text=ref.semver,
        commit=commit,
    )


# --- semver ----------------------------------------------------------------
# npm accepts "v1.2.3" and "=1.2.3" inside ranges; NpmSpec does not take the v.
_RANGE_V_RE = re.compile(r"(^|[\s<>=~^|])[vV](?=\d)")
_PRERELEASE_IN_RANGE_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)-[0-9A-Za-z]")


@dataclass(frozen=True)
class _Clause:
    """One `||` alternative of an npm range, with the versions whose prereleases it admits."""

    spec: NpmSpec
    prerelease_of: frozenset[tuple[int, int, int]]


def parse_semver_range(text: str) -> tuple[_Clause, ...]:
    """The range as npm reads it; InvalidSpec when it is not one."""
    if any(ord(c) < 0x20 for c in text):
        raise InvalidSpec(f"spec.ref.semver {text!r} contains a control character")
    clauses = []
    for alternative in text.split("||"):
        cleaned = _RANGE_V_RE.sub(r"\1", alternative).strip() or "*"
        try:
            spec = NpmSpec(cleaned)
        except ValueError as e:
            raise InvalidSpec(
                f"spec.ref.semver {text!r} is not an npm version range: {e}"
            ) from None
        named = frozenset(
            (int(a), int(b), int(c)) for a, b, c in _PRERELEASE_IN_RANGE_RE.findall(cleaned)
        )
        clauses.append(_Clause(spec=spec, prerelease_of=named))
    return tuple(clauses)


def tag_version(tag: str) -> Version | None:
    """The semantic version a tag names ("v1.2.3" and "1.2.3" alike), or None."""
    text = tag[1:] if tag[:1] in ("v", "V") else tag
    try:
        return Version(text)
    except ValueError:
        return None


def range_matches(clauses: Sequence[_Clause], version: Version) -> bool:
    """npm's rule: a prerelease matches only an alternative that names a prerelease of
    the same major.minor.patch. NpmSpec alone lets `<2.0.0` match 2.0.0-rc.1."""
    for clause in clauses:
        if version.prerelease and (
            (version.major, version.minor, version.patch) not in clause.prerelease_of
        ):
            continue
        if clause.spec.match(version):
            return True
    return False


def select_semver_tag(range_text: str, tags: Iterable[str]) -> str | None:
    """The tag with the highest version in the range (tags that are no version are
    ignored; a tie between "v1.0.0" and "1.0.0" goes to the later name)."""
    clauses = parse_semver_range(range_text)
    best: tuple[tuple[object, ...], str] | None = None
    for tag in tags:
        version = tag_version(tag)
        if version is None or not range_matches(clauses, version):
            continue
        key = (version.precedence_key, tag)
        if best is None or key > best:
            best = key
    return best[1] if best else None


# --- git's stderr ----------------------------------------------------------
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
) -> SyncError:
    """The typed error for a failed git `action` on `url`, from git's stderr.

    `wanted` names the revision asked for ("branch main"), for RevisionNotFound.
    """
    values = list(secret_values)
    lines = _significant_lines(scrub(stderr, values))
    lowered = "\n".join(lines).lower()
    where = redact_url(url)
    if any(p in lowered for p in _HOST_KEY_PATTERNS):
        words = _git_words(lines, _HOST_KEY_PATTERNS)
        error: SyncError = AuthenticationFailed(
            f"the host key of {where} is not in the Secret's known_hosts: {words}"
        )
    elif any(p in lowered for p in _AUTH_PATTERNS):
        words = _git_words(lines, _AUTH_PATTERNS)
        error = AuthenticationFailed(f"authentication to {where} failed: {words}")
    elif any(p in lowered for p in _NOT_FOUND_PATTERNS):
        words = _git_words(lines, _NOT_FOUND_PATTERNS)
        error = RevisionNotFound(f"{wanted or 'revision'} not found in {where}: {words}")
    else:
        words = _git_words(lines, ())
        hints = [hint for needle, hint in _HINTS if needle in lowered]
        error = GitFetchFailed(
            f"git {action} {where} failed: {words}" + "".join(f" ({hint})" for hint in hints)
        )
    error.message = scrub(error.message, values)
    return error


# --- running git -----------------------------------------------------------
def _basic_token(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _check_credentials(url: GitURL, creds: GitCredentials) -> None:
    """AuthenticationFailed for credentials git cannot use, before git runs."""
    if url.is_ssh and not creds.known_hosts:
        raise AuthenticationFailed(
            f"known_hosts is required for SSH ({url.url}): add a known_hosts key to the Secret "
            f"named by spec.secretRef; host key checking is never turned off"
        )
    if url.scheme in ("http", "https"):
        if creds.bearer_token and (creds.username or creds.password):
            raise AuthenticationFailed(
                "the Secret sets both bearerToken and username/password: keep one"
            )
        if bool(creds.username) != bool(creds.password):
            raise AuthenticationFailed("the Secret must set both username and password, or neither")
        for name, value in (
            ("username", creds.username),
            ("password", creds.password),
            ("bearerToken", creds.bearer_token),
        ):
            if value and any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
                raise AuthenticationFailed(f"the Secret's {name} contains a control character")
        if creds.username and ":" in creds.username:
            raise AuthenticationFailed("the Secret's username contains ':'")


class _GitTimeout(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"{seconds:.0f}s")
        self.seconds = seconds


class _GitSession:
    """The environment of the git processes of one fetch() call.

    Credential files are written on the first git run (a cached fetch runs none) and
    removed by close(), which the caller calls in a finally.
    """

    def __init__(
        self,
        git: str,
        settings: SourceSettings,
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
        """stdout of `git [--git-dir] <args>`; a typed SyncError when git fails."""
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
        except _GitTimeout as t:
            self.killed = True
            if remaining <= fetch_timeout:
                raise DeadlineExceeded(
                    f"spec.timeout ran out during fetch (git {action} {self.url.url})"
                ) from None
            raise GitFetchFailed(
                f"git {action} {self.url.url} timed out after {t.seconds:.0f}s"
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
                header = f"Authorization: Basic {_basic_token(creds.username, creds.password)}"
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
        raise _GitTimeout(timeout) from None
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


def _parse_ls_remote(output: str) -> RefsAnswer:
    refs: dict[str, str] = {}
    peeled: dict[str, str] = {}
    head: str | None = None
    for line in output.splitlines():
        left, _, name = line.partition("\t")
        if left.startswith("ref: "):
            if name == "HEAD":
                head = left[len("ref: ") :]
            continue
        if name.endswith("^{}"):
            peeled[name[:-3]] = left
        elif name:
            refs[name] = left
    return RefsAnswer(refs=refs, peeled=peeled, head=head, at=time.monotonic())


@dataclass(frozen=True)
class _Resolved:
    refname: str  # where the mirror keeps it
    want: str  # the object to fetch (a tag object for annotated tags)
    commit: str | None  # the commit, when known before fetching
    label: str | None  # "main", "v1.2.0", None for a bare commit pin
    wanted: str  # for messages: "branch main"


def _resolve(answer: RefsAnswer, want: _Want, url: str) -> _Resolved:
    where = redact_url(url)
    if want.branch is not None:
        refname = f"refs/heads/{want.branch}"
        label, wanted = want.branch, f"branch {want.branch!r}"
    elif want.tag is not None:
        refname = f"refs/tags/{want.tag}"
        label, wanted = want.tag, f"tag {want.tag!r}"
    elif want.semver is not None:
        tags = [r[len("refs/tags/") :] for r in answer.refs if r.startswith("refs/tags/")]
        chosen = select_semver_tag(want.semver_text or "", tags)
        if chosen is None:
            raise RevisionNotFound(
                f"no tag of {where} matches the semver range {want.semver_text!r} "
                f"({len(tags)} tags)"
            )
        refname = f"refs/tags/{chosen}"
        label, wanted = chosen, f"tag {chosen!r}"
    else:
        if answer.head is None or not answer.head.startswith("refs/heads/"):
            if "HEAD" in answer.refs:  # a detached HEAD on the server
                sha = answer.refs["HEAD"]
                return _Resolved("refs/gitferry/HEAD", sha, sha, "HEAD", "the default branch")
            raise RevisionNotFound(f"{where} has no default branch (HEAD)")
        refname = answer.head
        label = refname[len("refs/heads/") :]
        wanted = f"the default branch {label!r}"
    obj = answer.refs.get(refname)
    commit = answer.commit_of(refname)
    if obj is None or commit is None:
        if want.branch is None and want.tag is None and want.semver is None:
            raise RevisionNotFound(f"the default branch {label!r} of {where} has no commits")
        raise RevisionNotFound(f"{wanted} not found in {where}")
    return _Resolved(refname, obj, commit, label, wanted)


# --- the stage ---------------------------------------------------------------
class GitSource:
    """Fetches revisions into a shared, bounded cache. Thread-safe."""

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        self._cache = DiskCache(settings.cache_dir, settings.max_cache_bytes)
        self._fetch_slots = threading.BoundedSemaphore(max(1, settings.max_concurrent_fetches))
        self._git = shutil.which("git") or "git"

    def validate_url(self, url: str) -> None:
        """URLInvalid when `url` is not one gitferry may hand to git."""
        parse_url(url, self.settings.allow_file_urls)

    def fetch(
        self,
        url: str,
        ref: GitRef,
        credentials: GitCredentials | None,
        deadline: Deadline,
        max_age: float,
    ) -> Checkout:
        """The files of the revision `ref` names at `url`.

        The remote is asked about refs at most once per `max_age` seconds per mirror;
        a commit already in the mirror is not fetched again.
        """
        parsed = parse_url(url, self.settings.allow_file_urls)
        want = _want(ref)
        creds = credentials or GitCredentials()
        _check_credentials(parsed, creds)
        deadline.remaining(STAGE)
        key = hashlib.sha256(f"{parsed.url}\0{creds.fingerprint()}".encode()).hexdigest()
        session = _GitSession(
            self._git, self.settings, self._cache.home, self._cache.tmp_dir, parsed, creds, deadline
        )
        try:
            with self._cache.locked_mirror(key, deadline.remaining(STAGE)) as mirror:
                return self._fetch_locked(mirror, session, want, deadline, max_age)
        finally:
            session.close()

    def close(self) -> None:
        """Remove everything this source wrote under cache_dir."""
        self._cache.close()

    # --- steps, each under the mirror's lock ---------------------------------
    def _fetch_locked(
        self,
        mirror: Mirror,
        session: _GitSession,
        want: _Want,
        deadline: Deadline,
        max_age: float,
    ) -> Checkout:
        started = time.monotonic()
        url = session.url.url
        fetched = False
        if want.commit is not None:
            commit = want.commit
            label = want.branch
            if commit not in mirror.commits:
                target = f"refs/gitferry/pins/{commit}"
                self._fetch_object(mirror, session, deadline, commit, target, f"commit {commit}")
                self._verify_commit(mirror, session, target, f"commit {commit}")
                fetched = True
        else:
            answer = self._remote_refs(mirror, session, deadline, max_age)
            try:
                resolved = _resolve(answer, want, url)
            except RevisionNotFound:
                if time.monotonic() - answer.at < _FRESH_ENOUGH_SECONDS:
                    raise
                # Another sync's remembered answer may predate the branch or tag this
                # one names: a miss is worth one more question.
                answer = self._remote_refs(mirror, session, deadline, max_age=0)
                resolved = _resolve(answer, want, url)
            label = resolved.label
            if resolved.commit in mirror.commits:
                commit = resolved.commit
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
                url,
                commit,
                (time.monotonic() - started) * 1000,
                self._cache.total_bytes(),
                len(evicted),
            )
        revision = f"{label}@sha1:{commit}" if label else f"sha1:{commit}"
        return Checkout(path=tree, commit=commit, revision=revision)

    def _remote_refs(
        self, mirror: Mirror, session: _GitSession, deadline: Deadline, max_age: float
    ) -> RefsAnswer:
        """The remote's refs, asked at most once per max_age (per mirror)."""
        answer = mirror.refs
        if answer is not None and time.monotonic() - answer.at < max_age:
            return answer
        self._ensure_initialised(mirror, session)  # ls-remote runs in it: no repo discovery
        with self._fetch_slot(deadline):
            out = session.run(
                ["ls-remote", "--symref", "--", session.url.url],
                action="ls-remote",
                git_dir=mirror.path,
            )
        answer = _parse_ls_remote(out)
        mirror.refs = answer
        return answer

    def _fetch_ref(
        self, mirror: Mirror, session: _GitSession, deadline: Deadline, resolved: _Resolved
    ) -> str:
        """Fetch the object ls-remote named (one `fetch` request, no second ref listing);
        if the server refuses it (the ref moved since, on a protocol v0 server), fetch
        by name instead. Returns the commit the mirror now has under the ref."""
        target = resolved.refname
        try:
            self._fetch_object(mirror, session, deadline, resolved.want, target, resolved.wanted)
        except RevisionNotFound:
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
        session: _GitSession,
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
            fresh = not mirror.commits
            self._fetch_into(mirror, session, deadline, source, target, wanted)
            size = self._repo_size(mirror, session)
            limit = self.settings.max_repo_bytes
            if size <= limit:
                break
            self._cache.reset_mirror(mirror)
            if fresh:
                raise GitFetchFailed(
                    f"repository {session.url.url} is {size / MIB:.1f} MiB, over the limit of "
                    f"{limit / MIB:.1f} MiB for one repository"
                )
        self._cache.set_mirror_size(mirror, size)
        if fresh:
            mirror.fresh_size = size

    def _fetch_into(
        self,
        mirror: Mirror,
        session: _GitSession,
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
        with self._fetch_slot(deadline):
            try:
                session.run(args, action="fetch", git_dir=mirror.path, wanted=wanted)
            except SyncError:
                if session.killed:
                    # A killed fetch can leave lock files behind: start the mirror afresh.
                    self._cache.reset_mirror(mirror)
                raise

    def _verify_commit(
        self, mirror: Mirror, session: _GitSession, refname: str, wanted: str
    ) -> str:
        try:
            out = session.run(
                ["rev-parse", "--verify", "--quiet", f"{refname}^{{commit}}"],
                action="rev-parse",
                git_dir=mirror.path,
            )
        except (GitFetchFailed, RevisionNotFound):
            raise RevisionNotFound(
                f"{wanted} in {session.url.url} does not name a commit"
            ) from None
        commit = out.strip()
        mirror.commits.add(commit)
        return commit

    def _ensure_initialised(self, mirror: Mirror, session: _GitSession) -> None:
        if not mirror.initialised:
            session.run(["init", "--bare", "-q", str(mirror.path)], action="init", git_dir=None)
            mirror.initialised = True

    def _repo_size(self, mirror: Mirror, session: _GitSession) -> int:
        out = session.run(["count-objects", "-v"], action="count-objects", git_dir=mirror.path)
        kib = 0
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key in ("size", "size-pack", "size-garbage"):
                kib += int(value.strip() or 0)
        return kib * 1024

    def _materialise(self, mirror: Mirror, session: _GitSession, commit: str) -> Path:
        """Write the commit's files to trees/<commit>, once (symlinks stay symlinks).

        read-tree + checkout-index, not `git archive`: archive applies export-ignore
        and export-subst, so its files can differ from the commit's."""
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

    @contextlib.contextmanager
    def _fetch_slot(self, deadline: Deadline) -> Iterator[None]:
        """One of max_concurrent_fetches network operations across all mirrors."""
        if not self._fetch_slots.acquire(timeout=deadline.remaining(STAGE)):
            raise DeadlineExceeded("spec.timeout ran out during fetch, waiting for a fetch slot")
        try:
            yield
        finally:
            self._fetch_slots.release()
