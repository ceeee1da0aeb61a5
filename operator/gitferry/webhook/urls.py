"""One key per repository, whichever way its URL is written.

A push names its repository in several forms (https clone URL, ssh URL,
`git@host:path`, the web page) and a sync names it in one; they match when their
keys are equal. The key is `<host>/<path>`, lower case: the scheme, port, user
and password, a trailing `.git` and slashes are dropped. That over-matches only
where one host serves different repositories under the same path on two ports or
with two letter cases, and an over-match costs one reconcile that finds nothing
new; an under-match would cost a push.

Not `source.urls`: that module decides which URLs may reach git (and refuses
credentials); this one only compares URLs that come from payloads, never runs
git, and must accept whatever a forge writes. The libraries stay independent.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

MAX_URL_LENGTH = 2048
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# user@host:path, host:path, [v6]:path; not C:\path or a path with / before the colon.
_SCP_RE = re.compile(r"^(?:[^@/]+@)?(?P<host>\[[^\]/]+\]|[^@/:\[\]]+):(?P<path>.*)$")


def repo_key(url: str) -> str | None:
    """The repository `url` names, as `host/path` (or `file:/path`), lower case;
    None when it is not a URL of a repository."""
    url = url.strip() if isinstance(url, str) else ""
    if not url or len(url) > MAX_URL_LENGTH or any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return None
    scheme = _SCHEME_RE.match(url)
    if scheme is not None:
        parts = urlsplit(url)
        if scheme.group(1).lower() == "file":
            path = _path(parts.path)
            return f"file:/{path}" if path else None
        host, path = parts.hostname or "", parts.path  # hostname: no user, no port
    else:
        scp = _SCP_RE.match(url)
        if scp is None:
            return None
        host, path = scp.group("host").strip("[]"), scp.group("path")
    path = _path(path)
    if not host or not path:
        return None
    return f"{host.lower().rstrip('.')}/{path}"


def _path(path: str) -> str:
    path = unquote(path)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        return ""
    parts = [p for p in path.split("/") if p]
    if parts and parts[-1].lower().endswith(".git"):
        parts[-1] = parts[-1][:-4]
    return "/".join(p for p in parts if p).lower()
