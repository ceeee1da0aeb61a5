"""What a forge's webhook body says, as `Delivery` and `Push` values.

One function per forge, each reading only the fields its documentation names.
Bodies are untrusted: the caller bounds their size, the decoder refuses nesting
deeper than Python's recursion limit, and every field is type-checked where it is
read, so a body of the wrong shape is a PayloadError, never a crash.

Changed paths are reported only when the payload lists all of them; otherwise
(`None`) any path may have changed:

- GitHub lists `added`/`removed`/`modified` per commit, up to 3000 files per commit
  and a capped number of commits (its documentation has said 20 and 2048 in
  different places: at 20 or more the list is treated as possibly cut short);
  `created`, `deleted` and `forced` pushes compare against something other than
  what a sync applied.
- GitLab lists up to 20 commits and says how many there were
  (`total_commits_count`); Gitea lists up to its `FEED_MAX_COMMIT_NUM` and says
  how many (`total_commits`, since 1.18). A ref created or deleted (an all-zero
  `before` or `after`) lists nothing useful. Neither flags a force push: see
  README "Push webhooks" for what that means.
- Bitbucket (Server and Cloud) lists no files.
- The generic hook lists `paths`, or leaves them out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

from .errors import PayloadError
from .forges import (
    BITBUCKET_CLOUD,
    BITBUCKET_SERVER,
    GENERIC,
    GITEA,
    GITHUB,
    GITLAB,
    check_forge,
)
from .push import BRANCH_PREFIX, TAG_PREFIX, Delivery, Kind, Push
from .signatures import lower_keys

MAX_REF_LENGTH = 1024
MAX_EVENT_LENGTH = 64
GITHUB_COMMITS_CAP = 20
GITHUB_FILES_PER_COMMIT_CAP = 3000
_ZERO_SHA = re.compile(r"^0+$")
_FORM = "application/x-www-form-urlencoded"

Json = dict[str, Any]


def parse(forge: str, headers: Mapping[str, str], body: bytes) -> Delivery:
    """The delivery `body` carries, as the forge's headers describe it. Call it
    only after `verify`. Raises PayloadError or UnknownForge."""
    h = lower_keys(headers)
    return _PARSERS[check_forge(forge)](h, lambda: load(body, h.get("content-type")))


def load(body: bytes, content_type: str | None = None) -> Any:
    """The JSON document in `body`: raw, or the `payload` field of a form (GitHub
    and Gitea can send either)."""
    text: bytes | str = body
    if (content_type or "").split(";")[0].strip().lower() == _FORM:
        try:
            form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=32)
        except ValueError:
            raise PayloadError("a form body with too many fields") from None
        if not form.get("payload"):
            raise PayloadError("a form body without a payload field")
        text = form["payload"][0]
    try:
        return json.loads(text)
    except RecursionError:
        raise PayloadError("the JSON body is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, a huge integer
        raise PayloadError(f"the body is not JSON: {str(e)[:120]}") from None


# --- typed reads of untrusted JSON --------------------------------------------


def _obj(doc: Any, key: str) -> Json:
    value = doc.get(key) if isinstance(doc, dict) else None
    return value if isinstance(value, dict) else {}


def _list(doc: Any, key: str) -> list[Any] | None:
    value = doc.get(key) if isinstance(doc, dict) else None
    return value if isinstance(value, list) else None


def _str(doc: Any, key: str) -> str | None:
    value = doc.get(key) if isinstance(doc, dict) else None
    return value if isinstance(value, str) and value else None


def _int(doc: Any, key: str) -> int | None:
    value = doc.get(key) if isinstance(doc, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _urls(doc: Any, *keys: str) -> set[str]:
    return {u for u in (_str(doc, k) for k in keys) if u}


def _ref(value: str | None, where: str) -> str:
    if (
        not value
        or len(value) > MAX_REF_LENGTH
        or not value.startswith("refs/")
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    ):
        raise PayloadError(f"{where}: not a full ref name (refs/heads/…, refs/tags/…)")
    return value


def _zero(sha: str | None) -> bool:
    return sha is not None and bool(_ZERO_SHA.match(sha))


def _commit_paths(
    commits: list[Any] | None,
    total: int | None = None,
    commits_cap: int | None = None,
    files_cap: int | None = None,
) -> frozenset[str] | None:
    """The union of the commits' added, removed and modified files; None when the
    list is missing, empty, or may be cut short."""
    if not commits:
        return None
    if total is not None and total > len(commits):
        return None
    if commits_cap is not None and len(commits) >= commits_cap:
        return None
    out: set[str] = set()
    for commit in commits:
        lists = [_list(commit, k) for k in ("added", "removed", "modified")]
        files = [f for files in lists if files is not None for f in files]
        if any(files is None for files in lists) or not all(isinstance(f, str) for f in files):
            return None  # a commit without its file lists: unknown
        if files_cap is not None and len(files) >= files_cap:
            return None
        out.update(files)
    return frozenset(out)


# --- one function per forge ---------------------------------------------------

Loader = Callable[[], Any]


def _event(value: str | None) -> str:
    return (value or "")[:MAX_EVENT_LENGTH]


def _github(h: dict[str, str], load_: Loader) -> Delivery:
    event = _event(h.get("x-github-event"))
    if event == "ping":
        return Delivery(Kind.PING, event)
    if event != "push":
        return Delivery(Kind.IGNORED, event)
    p = load_()
    repo = _obj(p, "repository")
    moved = isinstance(p, dict) and any(p.get(k) is True for k in ("created", "deleted", "forced"))
    paths = None
    if isinstance(p, dict) and not moved:
        paths = _commit_paths(
            _list(p, "commits"),
            commits_cap=GITHUB_COMMITS_CAP,
            files_cap=GITHUB_FILES_PER_COMMIT_CAP,
        )
    urls = _urls(repo, "clone_url", "ssh_url", "git_url", "html_url")
    push = Push(
        frozenset(urls),
        _ref(_str(p, "ref"), "ref"),
        paths,
        _str(p, "after"),
        _str(repo, "default_branch"),
    )
    return Delivery(Kind.PUSH, event, (push,))


def _gitlab(h: dict[str, str], load_: Loader) -> Delivery:
    event = _event(h.get("x-gitlab-event"))
    if event not in ("Push Hook", "Tag Push Hook", "System Hook"):
        return Delivery(Kind.IGNORED, event)
    p = load_()
    if event == "System Hook" and _str(p, "object_kind") not in ("push", "tag_push"):
        return Delivery(Kind.IGNORED, event)
    project, repo = _obj(p, "project"), _obj(p, "repository")
    urls = _urls(project, "git_http_url", "git_ssh_url", "web_url", "http_url", "ssh_url", "url")
    urls |= _urls(repo, "git_http_url", "git_ssh_url", "homepage", "url")
    return Delivery(Kind.PUSH, event, (_counted_push(p, urls, "total_commits_count", project),))


def _gitea(h: dict[str, str], load_: Loader) -> Delivery:
    names = ("x-gitea-event", "x-forgejo-event", "x-gogs-event", "x-github-event")
    event = _event(next((h[n] for n in names if n in h), None))
    if event != "push":
        return Delivery(Kind.IGNORED, event)
    p = load_()
    repo = _obj(p, "repository")
    urls = _urls(repo, "clone_url", "ssh_url", "html_url")
    return Delivery(Kind.PUSH, event, (_counted_push(p, urls, "total_commits", repo),))


def _counted_push(p: Any, urls: set[str], total_key: str, repo: Json) -> Push:
    """GitLab's and Gitea's shape: capped commits plus a total; an all-zero
    `before` (a new ref) or `after` (a deleted one) lists nothing useful."""
    before, after = _str(p, "before"), _str(p, "after")
    paths = None
    total = _int(p, total_key)
    if total is not None and not _zero(before) and not _zero(after):
        paths = _commit_paths(_list(p, "commits"), total=total)
    return Push(
        frozenset(urls), _ref(_str(p, "ref"), "ref"), paths, after, _str(repo, "default_branch")
    )


def _bitbucket_server(h: dict[str, str], load_: Loader) -> Delivery:
    event = _event(h.get("x-event-key"))
    if event == "diagnostics:ping":
        return Delivery(Kind.PING, event)
    if event != "repo:refs_changed":
        return Delivery(Kind.IGNORED, event)
    p = load_()
    repo = _obj(p, "repository")
    urls = {u for link in _list(_obj(repo, "links"), "clone") or [] if (u := _str(link, "href"))}
    pushes = []
    for n, change in enumerate(_list(p, "changes") or []):
        ref = _str(change, "refId") or _str(_obj(change, "ref"), "id")
        pushes.append(
            Push(frozenset(urls), _ref(ref, f"changes[{n}].refId"), None, _str(change, "toHash"))
        )
    return Delivery(Kind.PUSH, event, tuple(pushes))


_BITBUCKET_CLOUD_KINDS = {"branch": BRANCH_PREFIX, "tag": TAG_PREFIX}


def _bitbucket_cloud(h: dict[str, str], load_: Loader) -> Delivery:
    event = _event(h.get("x-event-key"))
    if event != "repo:push":
        return Delivery(Kind.IGNORED, event)
    p = load_()
    repo = _obj(p, "repository")
    urls = _urls(_obj(_obj(repo, "links"), "html"), "href")
    full_name = _str(repo, "full_name")
    if full_name:
        urls.add(f"https://bitbucket.org/{full_name}")
    pushes = []
    for n, change in enumerate(_list(_obj(p, "push"), "changes") or []):
        new, old = _obj(change, "new"), _obj(change, "old")
        named = new or old  # a deleted ref has only `old`
        prefix = _BITBUCKET_CLOUD_KINDS.get(_str(named, "type") or "")
        name = _str(named, "name")
        if prefix is None or name is None:
            raise PayloadError(f"push.changes[{n}]: neither a branch nor a tag")
        after = _str(_obj(new, "target"), "hash")
        pushes.append(Push(frozenset(urls), _ref(prefix + name, f"push.changes[{n}]"), None, after))
    return Delivery(Kind.PUSH, event, tuple(pushes))


def _generic(h: dict[str, str], load_: Loader) -> Delivery:
    p = load_()
    if not isinstance(p, dict):
        raise PayloadError('the body is not a JSON object {"url": …, "ref": …}')
    url = _str(p, "url")
    if url is None:
        raise PayloadError("url: missing or not a string")
    paths: frozenset[str] | None = None
    if p.get("paths") is not None:
        listed = _list(p, "paths")
        if listed is None or not all(isinstance(x, str) for x in listed):
            raise PayloadError("paths: not a list of strings")
        paths = frozenset(listed)
    push = Push(
        frozenset({url}),
        _ref(_str(p, "ref"), "ref"),
        paths,
        _str(p, "after"),
        _str(p, "default_branch"),
    )
    return Delivery(Kind.PUSH, "push", (push,))


_PARSERS: dict[str, Callable[[dict[str, str], Loader], Delivery]] = {
    GITHUB: _github,
    GITLAB: _gitlab,
    GITEA: _gitea,
    BITBUCKET_SERVER: _bitbucket_server,
    BITBUCKET_CLOUD: _bitbucket_cloud,
    GENERIC: _generic,
}
