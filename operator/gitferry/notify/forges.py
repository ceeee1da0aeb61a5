"""Commit statuses on the forges, through each one's documented REST endpoint,
over plain HTTP (urllib): no client library per forge.

Each forge is a row of data (`FORGES`: its states, description limit, default
API base) and a function that builds the request (`build`); `post` sends one.
Building is pure, so each forge's request shape is unit tested without a
network, and the e2e tests check the same shapes against a local server.

| forge | endpoint | auth |
|---|---|---|
| GitHub | `POST {api}/repos/{owner}/{repo}/statuses/{sha}` | `Authorization: Bearer` |
| GitLab | `POST {api}/projects/{id}/statuses/{sha}` (id: the URL-encoded path) | `PRIVATE-TOKEN` |
| Gitea | `POST {api}/repos/{owner}/{repo}/statuses/{sha}` | `Authorization: token` |
| Bitbucket Cloud | `POST {api}/repositories/{workspace}/{slug}/commit/{sha}/statuses/build` | Bearer, or Basic for `user:app-password` |
| Bitbucket Server / Data Center | `POST {api}/rest/api/latest/projects/{key}/repos/{slug}/commits/{sha}/builds` | Bearer, or Basic for `user:password` |
| Azure DevOps | `POST {api}/{project}/_apis/git/repositories/{repo}/commits/{sha}/statuses?api-version=7.1` | Basic with the PAT as password |

The repository comes from the sync's git URL (https, ssh or scp-like forms),
or from an explicit `owner/repo` path; the API base from the URL's host, or an
explicit address for self-hosted forges.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from .errors import NotifyError, redact

State = Literal["pending", "success", "failure"]


class Forge(StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"
    GITEA = "gitea"
    BITBUCKET = "bitbucket"
    BITBUCKET_SERVER = "bitbucketserver"
    AZURE_DEVOPS = "azuredevops"


@dataclass(frozen=True)
class ForgeInfo:
    """A forge as data: its name, its words for pending/success/failure, how long
    a description may be, and how many path segments name a repository."""

    title: str
    states: dict[str, str]
    description_limit: int
    segments: int  # exact count of owner/repo segments; 0: two or more (GitLab groups)


FORGES: dict[Forge, ForgeInfo] = {
    Forge.GITHUB: ForgeInfo("GitHub", {"pending": "pending", "success": "success",
                                       "failure": "failure"}, 140, 2),
    # GitLab: a revision being applied is `running` (its `pending` means queued).
    Forge.GITLAB: ForgeInfo("GitLab", {"pending": "running", "success": "success",
                                       "failure": "failed"}, 255, 0),
    Forge.GITEA: ForgeInfo("Gitea", {"pending": "pending", "success": "success",
                                     "failure": "failure"}, 255, 2),
    Forge.BITBUCKET: ForgeInfo("Bitbucket", {"pending": "INPROGRESS", "success": "SUCCESSFUL",
                                             "failure": "FAILED"}, 255, 2),
    Forge.BITBUCKET_SERVER: ForgeInfo("Bitbucket Server", {"pending": "INPROGRESS",
                                                           "success": "SUCCESSFUL",
                                                           "failure": "FAILED"}, 255, 2),
    Forge.AZURE_DEVOPS: ForgeInfo("Azure DevOps", {"pending": "pending", "success": "succeeded",
                                                   "failure": "failed"}, 255, 2),
}  # fmt: skip

BITBUCKET_KEY_LIMIT = 40  # Bitbucket's build status key
AZURE_API_VERSION = "7.1"
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_SCP = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>[^/].*)$")


def sha_of(revision: str) -> str | None:
    """The commit hash of a revision `<ref>@sha1:<hex>` (or `sha1:<hex>`, or a
    bare hash); None when it names none."""
    hexpart = revision.rpartition(":")[2] if ":" in revision else revision
    return hexpart if _SHA.match(hexpart) else None


@dataclass(frozen=True)
class Repo:
    """Where statuses go: the forge, its API base (no trailing slash), the
    repository's path on it (`owner/repo`; GitLab `group/sub/project`; Bitbucket
    Server `PROJECT/slug`; Azure DevOps `project/repo`) and its web page."""

    forge: Forge
    api: str
    path: str
    web: str


@dataclass(frozen=True)
class Status:
    """One commit status: `context` is the stable key branch protection requires."""

    state: State
    context: str
    description: str
    target_url: str = ""


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]


def _split_git_url(url: str) -> tuple[str, str, str]:
    """(scheme, host[:port], path without leading / or trailing .git) of a git URL;
    ssh and scp-like URLs get "https" and no port (the web side of the host)."""
    url = url.strip()
    if "://" in url:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        if scheme in ("http", "https"):
            port = parts.port
            netloc = f"{host}:{port}" if port else host
        elif scheme in ("ssh", "git", "git+ssh", "ssh+git"):
            scheme, netloc = "https", host
        else:
            raise NotifyError(f"cannot tell a forge repository from a {scheme}:// URL; "
                              "set the repository and address", retryable=False)  # fmt: skip
        path = parts.path
    else:
        found = _SCP.match(url)
        if not found:
            raise NotifyError("cannot tell a forge repository from this git URL", retryable=False)
        scheme, netloc, path = "https", found["host"], found["path"]
    path = path.strip("/").removesuffix(".git").strip("/")
    return scheme, netloc, path


def repo_for(
    forge: Forge, git_url: str, address: str | None = None, repository: str | None = None
) -> Repo:
    """The repository a sync's `git_url` names on `forge`; `address` (an API base
    URL) and `repository` (its path on the forge) override what the URL says.
    NotifyError (not retryable) when neither tells."""
    info = FORGES[forge]
    scheme, netloc, path = ("https", "", "")
    if not (address and repository):
        scheme, netloc, path = _split_git_url(git_url)
    base = f"{scheme}://{netloc}"
    api = ""
    if forge == Forge.GITHUB:
        api = "https://api.github.com" if netloc == "github.com" else f"{base}/api/v3"
    elif forge == Forge.GITLAB:
        api = f"{base}/api/v4"
    elif forge == Forge.GITEA:
        api = f"{base}/api/v1"
    elif forge == Forge.BITBUCKET:
        api = "https://api.bitbucket.org/2.0"
        base = "https://bitbucket.org"
    elif forge == Forge.BITBUCKET_SERVER:
        # https://host[/context]/scm/PROJECT/repo.git; ssh://git@host:7999/PROJECT/repo.git
        context, sep, rest = path.rpartition("scm/")
        if sep and (context == "" or context.endswith("/")):
            api, path = f"{base}/{context}".rstrip("/"), rest
        else:
            api = base
    elif forge == Forge.AZURE_DEVOPS:
        api, path = _azure(netloc, path)
    if address:
        api = address.rstrip("/")
    if repository:
        path = repository.strip("/")
    parts = [p for p in path.split("/") if p]
    if (info.segments and len(parts) != info.segments) or len(parts) < 2:
        raise NotifyError(
            f"{info.title}: {path!r} is not a repository path ("
            + ("group/…/project" if not info.segments else "owner/repo")
            + "); set the repository",
            retryable=False,
        )
    if not api.startswith(("https://", "http://")):
        raise NotifyError(f"{info.title}: no API address; set the address", retryable=False)
    return Repo(forge, api, "/".join(parts), _web(forge, api, base, parts))


def _azure(netloc: str, path: str) -> tuple[str, str]:
    """(organization or collection URL, project/repo) of an Azure DevOps git URL."""
    parts = [p for p in path.split("/") if p]
    if netloc == "ssh.dev.azure.com" and len(parts) == 4 and parts[0] == "v3":
        return f"https://dev.azure.com/{parts[1]}", f"{parts[2]}/{parts[3]}"
    if "_git" in parts:
        i = parts.index("_git")
        if i >= 1 and i + 1 < len(parts):
            return "/".join(
                [f"https://{netloc}", *parts[: i - 1]]
            ), f"{parts[i - 1]}/{parts[i + 1]}"
    return f"https://{netloc}", path


def _web(forge: Forge, api: str, base: str, parts: list[str]) -> str:
    if forge == Forge.BITBUCKET_SERVER:
        return f"{api}/projects/{parts[0]}/repos/{parts[1]}"
    if forge == Forge.AZURE_DEVOPS:
        return f"{api}/{parts[0]}/_git/{parts[1]}"
    if forge == Forge.GITHUB and api.endswith("/api/v3"):
        base = api.removesuffix("/api/v3")
    return f"{base}/{'/'.join(parts)}"


def truncate(text: str, limit: int) -> str:
    """`text` on one line, at most `limit` characters (an ellipsis marks a cut)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bitbucket_key(context: str) -> str:
    """Bitbucket keys hold at most 40 characters: the context when it fits, else a
    stable digest of it (the context itself is the status's name)."""
    if len(context) <= BITBUCKET_KEY_LIMIT:
        return context
    return "gitferry-" + hashlib.sha1(context.encode()).hexdigest()[: BITBUCKET_KEY_LIMIT - 9]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def build(repo: Repo, sha: str, status: Status, token: str) -> Request:
    """The request that sets `status` on commit `sha` of `repo`."""
    info = FORGES[repo.forge]
    state = info.states[status.state]
    desc = truncate(status.description, info.description_limit)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    owner, _, name = repo.path.partition("/")
    body: dict[str, Any]
    if repo.forge in (Forge.GITHUB, Forge.GITEA):
        url = f"{repo.api}/repos/{quote(owner)}/{quote(name)}/statuses/{sha}"
        if repo.forge == Forge.GITHUB:
            headers |= {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
                        "X-GitHub-Api-Version": "2022-11-28"}  # fmt: skip
        else:
            headers["Authorization"] = f"token {token}"
        body = {"state": state, "context": status.context, "description": desc}
        if status.target_url:
            body["target_url"] = status.target_url
    elif repo.forge == Forge.GITLAB:
        url = f"{repo.api}/projects/{quote(repo.path, safe='')}/statuses/{sha}"
        headers["PRIVATE-TOKEN"] = token
        body = {"state": state, "name": status.context, "description": desc}
        if status.target_url:
            body["target_url"] = status.target_url
    elif repo.forge in (Forge.BITBUCKET, Forge.BITBUCKET_SERVER):
        if repo.forge == Forge.BITBUCKET:
            url = (f"{repo.api}/repositories/{quote(owner)}/{quote(name)}/commit/{sha}"
                   "/statuses/build")  # fmt: skip
        else:
            url = (f"{repo.api}/rest/api/latest/projects/{quote(owner)}/repos/{quote(name)}"
                   f"/commits/{sha}/builds")  # fmt: skip
            headers["X-Atlassian-Token"] = "no-check"
        user, colon, password = token.partition(":")
        headers["Authorization"] = _basic(user, password) if colon else f"Bearer {token}"
        body = {"key": bitbucket_key(status.context), "state": state, "name": status.context,
                "description": desc, "url": status.target_url or repo.web}  # fmt: skip
    else:  # Azure DevOps
        url = (f"{repo.api}/{quote(owner)}/_apis/git/repositories/{quote(name)}/commits/{sha}"
               f"/statuses?api-version={AZURE_API_VERSION}")  # fmt: skip
        headers["Authorization"] = _basic("", token)
        genre, _, rest = status.context.partition("/")
        body = {"state": state, "description": desc,
                "context": {"genre": genre, "name": rest or genre}}  # fmt: skip
        if status.target_url:
            body["targetUrl"] = status.target_url
    return Request("POST", url, headers, body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: following one would carry the token elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def post(
    repo: Repo, sha: str, status: Status, token: str, timeout: float = 10.0,
    ca_pem: str | None = None,
) -> None:  # fmt: skip
    """Set `status` on commit `sha`. NotifyError (never showing the token) when
    the forge refuses (4xx: not retryable, but 408 and 429) or cannot be reached
    or fails (5xx, timeouts: retryable)."""
    if not token:
        raise NotifyError(f"{FORGES[repo.forge].title}: the Secret holds no token",
                          retryable=False)  # fmt: skip
    req = build(repo, sha, status, token)
    hidden = [token, *token.split(":")]
    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else None
    opener = urllib.request.build_opener(
        _NoRedirect(), urllib.request.HTTPSHandler(context=context)
    )
    data = json.dumps(req.body).encode()
    http = urllib.request.Request(req.url, data=data, headers=req.headers, method=req.method)
    where = f"{FORGES[repo.forge].title} {req.method} {urlsplit(req.url).path}"
    try:
        with opener.open(http, timeout=timeout) as resp:
            resp.read(65536)
            return
    except urllib.error.HTTPError as e:
        text = e.read(4096).decode("utf-8", "replace") if e.fp else ""
        if repo.forge == Forge.GITLAB and e.code == 400 and "Cannot transition status" in text:
            return  # GitLab: the commit already has this state under this name
        said = redact(truncate(_message(text), 200), hidden)
        retryable = e.code in (408, 429) or e.code >= 500
        raise NotifyError(f"{where}: HTTP {e.code} {e.reason}{': ' + said if said else ''}",
                          retryable=retryable) from None  # fmt: skip
    except (urllib.error.URLError, OSError) as e:
        why = getattr(e, "reason", None) or e
        raise NotifyError(redact(f"{where}: {why}", hidden)) from None


def _message(text: str) -> str:
    """The `message` of a JSON error body (every forge has one), else the text."""
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict):
        for key in ("message", "error", "errors"):
            if data.get(key):
                value = data[key]
                return value if isinstance(value, str) else json.dumps(value)
    return text
