"""URL policy: which git URLs may reach git, and how to print one without its
credentials."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import InvalidURL


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
    """A GitURL, or InvalidURL saying why (without quoting a credential)."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidURL("spec.url is empty")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise InvalidURL(f"spec.url {redact_url(url)!r} contains a space or control character")
    if url.startswith("-"):
        raise InvalidURL(f"spec.url {redact_url(url)!r} starts with '-'")
    if _HELPER_RE.match(url):
        raise InvalidURL(
            f"spec.url {redact_url(url)!r}: git transport helpers (<transport>::<address>) "
            f"are not allowed; use https://, http://, ssh:// or user@host:path"
        )
    scheme_match = _SCHEME_RE.match(url)
    if scheme_match is None:
        return _parse_scp(url)
    scheme = scheme_match.group(1).lower()
    if scheme == "file":
        if not allow_file_urls:
            raise InvalidURL(f"spec.url {url!r}: file:// URLs are not allowed by this operator")
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path.strip("/"):
            raise InvalidURL(f"spec.url {url!r}: a file URL is file:///absolute/path")
        return GitURL(url=url, scheme="file", host="")
    if scheme not in _NETWORK_SCHEMES:
        raise InvalidURL(
            f"spec.url {redact_url(url)!r}: scheme {scheme}:// is not supported; "
            f"use https://, http://, ssh:// or user@host:path"
        )
    parts = urlsplit(url)
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        if scheme != "ssh" or ":" in userinfo:
            raise InvalidURL(
                f"spec.url {redact_url(url)!r} must not carry credentials: put them in the "
                f"Secret named by spec.secretRef"
            )
        if not _USER_RE.match(userinfo):
            raise InvalidURL(f"spec.url {url!r}: invalid user name")
    host = parts.hostname or ""
    bracketed = f"[{host}]" if ":" in host else host
    if not host or not _HOST_RE.match(bracketed):
        raise InvalidURL(f"spec.url {redact_url(url)!r}: missing or invalid host name")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise InvalidURL(f"spec.url {redact_url(url)!r}: invalid port") from None
    if not parts.path.strip("/"):
        raise InvalidURL(f"spec.url {redact_url(url)!r}: the repository path is missing")
    return GitURL(url=url, scheme=scheme, host=host)


def _parse_scp(url: str) -> GitURL:
    userinfo, at, _ = url.partition("@")
    if at and ":" in userinfo:
        # `user:token@host:path` would otherwise read as host `user`; never quote it.
        raise InvalidURL(
            "spec.url carries credentials (user:password@): put them in the Secret named by "
            "spec.secretRef instead"
        )
    m = _SCP_RE.match(url)
    if m is None or "/" in url.partition(":")[0]:
        raise InvalidURL(
            f"spec.url {redact_url(url)!r} is not a git URL: use https://, http://, ssh:// "
            f"or user@host:path"
        )
    user, host, path = m.group("user"), m.group("host"), m.group("path")
    if user is not None and not _USER_RE.match(user):
        raise InvalidURL(f"spec.url {url!r}: invalid user name")
    if not _HOST_RE.match(host):
        raise InvalidURL(f"spec.url {url!r}: invalid host name")
    if not path.strip("/") or path.startswith("-"):
        raise InvalidURL(f"spec.url {url!r}: the repository path is missing or invalid")
    return GitURL(url=url, scheme="ssh", host=host.strip("[]"))
