"""Push webhooks as each forge sends them: headers and a JSON body in the shape its
documentation gives, signed the way it signs (computed here, independently of
gitferry's code), and a small client that POSTs one to gitferry's receiver.

Each builder takes the repository's https clone URL and derives the other forms
the forge puts in its payload (ssh, `git@host:path`, the web page), so a test can
point a sync at any of them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

ZERO = "0" * 40
AUTHOR = {"name": "Gitferry Test", "email": "test@gitferry.invalid", "username": "tester"}


@dataclass(frozen=True)
class Commit:
    """One pushed commit and the files it touched."""

    id: str = field(default_factory=lambda: secrets.token_hex(20))
    added: Sequence[str] = ()
    modified: Sequence[str] = ()
    removed: Sequence[str] = ()
    message: str = "a change"


@dataclass(frozen=True)
class Hook:
    """One webhook request: the receiver path's forge, headers and raw body."""

    forge: str
    headers: dict[str, str]
    body: bytes

    def with_headers(self, **changes: str | None) -> Hook:
        """The same request with headers set (`X_Hub_Signature_256="…"`) or, with
        None, removed; underscores in the names become dashes."""
        headers = dict(self.headers)
        for name, value in changes.items():
            key = name.replace("_", "-")
            headers = {k: v for k, v in headers.items() if k.lower() != key.lower()}
            if value is not None:
                headers[key] = value
        return replace(self, headers=headers)

    def with_body(self, body: bytes) -> Hook:
        """Another body under the same headers (and so the same signature)."""
        return replace(self, body=body)


def hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _forms(clone_url: str) -> dict[str, str]:
    """`https://host/org/repo.git` → its web page, ssh:// and scp-like forms."""
    parts = urlsplit(clone_url)
    path = parts.path.strip("/")
    bare = path.removesuffix(".git")
    host = parts.hostname or "localhost"
    return {
        "clone": clone_url,
        "html": f"{parts.scheme}://{parts.netloc}/{bare}",
        "scp": f"git@{host}:{bare}.git",
        "ssh": f"ssh://git@{host}:2222/{bare}.git",
        "git": f"git://{host}/{bare}.git",
        "name": bare.rpartition("/")[2],
        "full_name": bare,
        "host": host,
    }


def _json(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, indent=1).encode()


def _commit_doc(c: Commit, url: str, timestamp: str = "2026-01-01T10:00:00Z") -> dict[str, Any]:
    return {
        "id": c.id,
        "tree_id": secrets.token_hex(20),
        "distinct": True,
        "message": c.message,
        "timestamp": timestamp,
        "url": f"{url}/commit/{c.id}",
        "author": AUTHOR,
        "committer": AUTHOR,
        "added": list(c.added),
        "removed": list(c.removed),
        "modified": list(c.modified),
    }


# --- GitHub (docs: "Webhook events and payloads", push) --------------------------


def github_push(
    clone_url: str,
    ref: str,
    after: str,
    commits: Sequence[Commit],
    *,
    secret: str,
    before: str | None = None,
    default_branch: str = "main",
    created: bool = False,
    deleted: bool = False,
    forced: bool = False,
) -> Hook:
    u = _forms(clone_url)
    before = before or secrets.token_hex(20)
    docs = [_commit_doc(c, u["html"]) for c in commits]
    body = _json(
        {
            "ref": ref,
            "before": before,
            "after": after,
            "repository": {
                "id": 1296269,
                "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
                "name": u["name"],
                "full_name": u["full_name"],
                "private": False,
                "owner": {"name": "org", "login": "org", "id": 1, "type": "Organization"},
                "html_url": u["html"],
                "url": u["html"],
                "git_url": u["git"],
                "ssh_url": u["scp"],
                "clone_url": u["clone"],
                "svn_url": u["html"],
                "default_branch": default_branch,
                "master_branch": default_branch,
            },
            "pusher": {"name": "tester", "email": AUTHOR["email"]},
            "sender": {"login": "tester", "id": 2, "type": "User"},
            "created": created,
            "deleted": deleted,
            "forced": forced,
            "base_ref": None,
            "compare": f"{u['html']}/compare/{before[:12]}...{after[:12]}",
            "commits": docs,
            "head_commit": docs[-1] if docs else None,
        }
    )
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": secrets.token_hex(16),
        "X-GitHub-Hook-ID": "292430182",
        "X-Hub-Signature-256": f"sha256={hmac_hex(secret, body)}",
    }
    return Hook("github", headers, body)


def github_ping(*, secret: str) -> Hook:
    body = _json({"zen": "Keep it logically awesome.", "hook_id": 292430182, "hook": {}})
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "ping",
        "X-GitHub-Delivery": secrets.token_hex(16),
        "X-Hub-Signature-256": f"sha256={hmac_hex(secret, body)}",
    }
    return Hook("github", headers, body)


# --- GitLab (docs: "Webhook events", push and tag events) -----------------------


def gitlab_push(
    clone_url: str,
    ref: str,
    after: str,
    commits: Sequence[Commit],
    *,
    secret: str,
    before: str | None = None,
    default_branch: str = "main",
    total: int | None = None,
    tag: bool = False,
) -> Hook:
    u = _forms(clone_url)
    docs = [_commit_doc(c, u["html"]) for c in commits]
    for d in docs:
        d["title"] = d["message"]
        del d["tree_id"], d["distinct"], d["committer"]
    project = {
        "id": 15,
        "name": u["name"],
        "description": "",
        "web_url": u["html"],
        "avatar_url": None,
        "git_ssh_url": u["scp"],
        "git_http_url": u["clone"],
        "namespace": "org",
        "visibility_level": 0,
        "path_with_namespace": u["full_name"],
        "default_branch": default_branch,
        "ci_config_path": None,
        "homepage": u["html"],
        "url": u["scp"],
        "ssh_url": u["scp"],
        "http_url": u["clone"],
    }
    body = _json(
        {
            "object_kind": "tag_push" if tag else "push",
            "event_name": "tag_push" if tag else "push",
            "before": before or secrets.token_hex(20),
            "after": after,
            "ref": ref,
            "ref_protected": True,
            "checkout_sha": after,
            "message": None,
            "user_id": 4,
            "user_name": "Tester",
            "user_username": "tester",
            "user_email": "",
            "user_avatar": "",
            "project_id": 15,
            "project": project,
            "commits": docs,
            "total_commits_count": len(docs) if total is None else total,
            "push_options": {},
            "repository": {
                "name": u["name"],
                "url": u["scp"],
                "description": "",
                "homepage": u["html"],
                "git_http_url": u["clone"],
                "git_ssh_url": u["scp"],
                "visibility_level": 0,
            },
        }
    )
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitLab/18.0.0",
        "X-Gitlab-Event": "Tag Push Hook" if tag else "Push Hook",
        "X-Gitlab-Event-UUID": secrets.token_hex(16),
        "X-Gitlab-Webhook-UUID": secrets.token_hex(16),
        "X-Gitlab-Instance": f"https://{u['host']}",
        "X-Gitlab-Token": secret,
    }
    return Hook("gitlab", headers, body)


# --- Gitea (docs: "Webhooks", event information) --------------------------------


def gitea_push(
    clone_url: str,
    ref: str,
    after: str,
    commits: Sequence[Commit],
    *,
    secret: str,
    before: str | None = None,
    default_branch: str = "main",
    total: int | None = None,
) -> Hook:
    u = _forms(clone_url)
    docs = [_commit_doc(c, u["html"]) for c in commits]
    for d in docs:
        d["verification"] = None
        del d["tree_id"], d["distinct"]
    before = before or secrets.token_hex(20)
    body = _json(
        {
            "ref": ref,
            "before": before,
            "after": after,
            "compare_url": f"{u['html']}/compare/{before}...{after}",
            "commits": docs,
            "total_commits": len(docs) if total is None else total,
            "head_commit": docs[-1] if docs else None,
            "repository": {
                "id": 140,
                "owner": {"id": 1, "login": "org", "full_name": "", "username": "org"},
                "name": u["name"],
                "full_name": u["full_name"],
                "description": "",
                "private": False,
                "fork": False,
                "html_url": u["html"],
                "ssh_url": u["ssh"],
                "clone_url": u["clone"],
                "website": "",
                "default_branch": default_branch,
                "created_at": "2026-01-01T10:00:00Z",
                "updated_at": "2026-01-01T10:00:00Z",
            },
            "pusher": {"id": 1, "login": "tester", "username": "tester"},
            "sender": {"id": 1, "login": "tester", "username": "tester"},
        }
    )
    delivery = secrets.token_hex(16)
    mac = hmac_hex(secret, body)
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": "push",
        "X-Gogs-Delivery": delivery,
        "X-Gogs-Event": "push",
        "X-Gitea-Delivery": delivery,
        "X-Gitea-Event": "push",
        "X-Gitea-Signature": mac,
        "X-Hub-Signature-256": f"sha256={mac}",
    }
    return Hook("gitea", headers, body)


# --- Bitbucket Server / Data Center (docs: "Event payload", repo:refs_changed) --------


def bitbucket_server_push(
    host: str, project: str, slug: str, changes: Sequence[tuple[str, str]], *, secret: str
) -> Hook:
    """`changes`: (ref, toHash) per updated ref. Its clone URLs are
    `https://<host>/scm/<project>/<slug>.git` and `ssh://git@<host>:7999/<project>/<slug>.git`."""
    body = _json(
        {
            "eventKey": "repo:refs_changed",
            "date": "2026-01-01T10:00:00+1000",
            "actor": {
                "name": "admin",
                "emailAddress": "admin@example.com",
                "id": 1,
                "displayName": "Administrator",
                "active": True,
                "slug": "admin",
                "type": "NORMAL",
            },
            "repository": {
                "slug": slug,
                "id": 84,
                "name": slug,
                "hierarchyId": "af05451fc6eb4bbc3b4f",
                "scmId": "git",
                "state": "AVAILABLE",
                "statusMessage": "Available",
                "forkable": True,
                "project": {
                    "key": project.upper(),
                    "id": 84,
                    "name": project,
                    "public": False,
                    "type": "NORMAL",
                },
                "public": False,
                "links": {
                    "clone": [
                        {"href": f"ssh://git@{host}:7999/{project}/{slug}.git", "name": "ssh"},
                        {"href": f"https://{host}/scm/{project}/{slug}.git", "name": "http"},
                    ],
                    "self": [
                        {"href": f"https://{host}/projects/{project.upper()}/repos/{slug}/browse"}
                    ],
                },
            },
            "changes": [
                {
                    "ref": {
                        "id": ref,
                        "displayId": ref.rpartition("/")[2],
                        "type": "TAG" if ref.startswith("refs/tags/") else "BRANCH",
                    },
                    "refId": ref,
                    "fromHash": secrets.token_hex(20),
                    "toHash": to_hash,
                    "type": "UPDATE",
                }
                for ref, to_hash in changes
            ],
        }
    )
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "X-Event-Key": "repo:refs_changed",
        "X-Request-Id": secrets.token_hex(16),
        "X-Hub-Signature": f"sha256={hmac_hex(secret, body)}",
    }
    return Hook("bitbucket-server", headers, body)


# --- Bitbucket Cloud (docs: "Event payloads", repo:push) --------------------------


def bitbucket_cloud_push(
    full_name: str, changes: Sequence[tuple[str, str, str | None]], *, secret: str
) -> Hook:
    """`changes`: (type "branch" | "tag", name, new hash or None for a deletion)."""

    def ref(kind: str, name: str, sha: str) -> dict[str, Any]:
        return {
            "type": kind,
            "name": name,
            "target": {
                "type": "commit",
                "hash": sha,
                "message": "a change\n",
                "date": "2026-01-01T10:00:00+00:00",
                "parents": [],
                "author": {"raw": "Gitferry Test <test@gitferry.invalid>"},
            },
            "links": {"html": {"href": f"https://bitbucket.org/{full_name}/branch/{name}"}},
        }

    body = _json(
        {
            "actor": {"type": "user", "display_name": "Tester", "uuid": "{1}"},
            "repository": {
                "type": "repository",
                "full_name": full_name,
                "name": full_name.rpartition("/")[2],
                "uuid": "{b5b2a1a4-0000-0000-0000-000000000000}",
                "scm": "git",
                "is_private": True,
                "links": {
                    "self": {"href": f"https://api.bitbucket.org/2.0/repositories/{full_name}"},
                    "html": {"href": f"https://bitbucket.org/{full_name}"},
                    "avatar": {"href": "https://bytebucket.org/ravatar/x"},
                },
            },
            "push": {
                "changes": [
                    {
                        "new": ref(kind, name, sha) if sha else None,
                        "old": ref(kind, name, secrets.token_hex(20)),
                        "created": False,
                        "forced": False,
                        "closed": sha is None,
                        "truncated": False,
                        "commits": [],
                        "links": {},
                    }
                    for kind, name, sha in changes
                ]
            },
        }
    )
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Bitbucket-Webhooks/2.0",
        "X-Event-Key": "repo:push",
        "X-Hook-UUID": secrets.token_hex(16),
        "X-Request-UUID": secrets.token_hex(16),
        "X-Attempt-Number": "1",
        "X-Hub-Signature": f"sha256={hmac_hex(secret, body)}",
    }
    return Hook("bitbucket-cloud", headers, body)


# --- gitferry's generic hook (README "Push webhooks") -----------------------------


def generic_push(
    url: str,
    ref: str,
    *,
    secret: str,
    paths: Sequence[str] | None = None,
    after: str | None = None,
) -> Hook:
    doc: dict[str, Any] = {"url": url, "ref": ref}
    if paths is not None:
        doc["paths"] = list(paths)
    if after is not None:
        doc["after"] = after
    body = _json(doc)
    headers = {
        "Content-Type": "application/json",
        "X-Signature-256": f"sha256={hmac_hex(secret, body)}",
    }
    return Hook("generic", headers, body)


# --- the client ----------------------------------------------------------------


def post(base_url: str, hook: Hook, forge: str | None = None) -> tuple[int, dict[str, Any]]:
    """POST `hook` to `<base_url>/hook/<forge>`; the status and the JSON answer."""
    request = urllib.request.Request(
        f"{base_url}/hook/{forge or hook.forge}", data=hook.body, headers=hook.headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text or b"{}")
        except ValueError:
            return e.code, {"text": text.decode(errors="replace")}
