"""Local HTTP servers that stand in for the world gitferry reports to: a chat
webhook that records what Apprise's `json://` and `form://` targets POST, and a
forge that checks each commit-status request against the forge's documented
REST API (method, path, auth header form, content type, JSON fields, allowed
states) and records it. Both listen on 127.0.0.1 on a free port, in a thread
of the test process, and stop with `stop()`.

| forge | prefix here | documented endpoint |
|---|---|---|
| GitHub | `/github` | `POST /repos/{owner}/{repo}/statuses/{sha}` |
| GitLab | `/gitlab/api/v4` | `POST /projects/{id}/statuses/{sha}` |
| Gitea | `/gitea/api/v1` | `POST /repos/{owner}/{repo}/statuses/{sha}` |
| Bitbucket Cloud | `/bitbucket/2.0` | `POST /repositories/{workspace}/{slug}/commit/{sha}/statuses/build` |
| Bitbucket Server | `/bbs` | `POST /rest/api/latest/projects/{key}/repos/{slug}/commits/{sha}/builds` |
| Azure DevOps | `/azure/{org}` | `POST /{project}/_apis/git/repositories/{repo}/commits/{sha}/statuses?api-version=7.1` |
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

HOST = "127.0.0.1"
MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def json(self) -> Any:
        return json.loads(self.raw)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.raw.decode(), keep_blank_values=True).items()}

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        value = self.headers.get("authorization", "")
        if not value.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(value[6:]).decode().partition(":")
        return user, password


class _Server:
    """A ThreadingHTTPServer on a free loopback port answering with `answer`."""

    def __init__(self, answer: Callable[[Received], tuple[int, Any]]) -> None:
        answer_ = answer

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(min(length, MAX_BODY)) if length else b""
                url = urlsplit(self.path)
                got = Received(
                    self.command,
                    url.path,
                    parse_qs(url.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    raw,
                )
                code, body = answer_(got)
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET = do_PUT = _serve

            def log_message(self, *_: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)


def wait_until(what: str, fn: Callable[[], Any], timeout: float = 30) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {fn()!r}")


class ChatReceiver(_Server):
    """What Apprise's generic webhooks (`json://`, `form://`) POST, in order.
    Answers `status` (200 unless told otherwise)."""

    def __init__(self, status: int = 200) -> None:
        self.received: list[Received] = []
        self.status = status
        self._lock = threading.Lock()
        super().__init__(self._answer)

    def _answer(self, got: Received) -> tuple[int, Any]:
        with self._lock:
            self.received.append(got)
        return self.status, {}

    def apprise_url(
        self, scheme: str = "json", path: str = "/hook", user: str = "", password: str = ""
    ) -> str:
        auth = f"{user}:{password}@" if user else ""
        return f"{scheme}://{auth}{HOST}:{self.port}{path}"

    def messages(self) -> list[dict[str, Any]]:
        """Each message as Apprise sent it: JSON bodies parsed, forms decoded."""
        with self._lock:
            got = list(self.received)
        return [g.json() if g.content_type == "application/json" else g.form() for g in got]

    def wait(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        wait_until(f"{count} chat message(s)", lambda: len(self.received) >= count, timeout)
        return self.messages()


@dataclass
class StatusPost:
    """One commit status the fake forge accepted, in the forge's own words."""

    forge: str
    repo: str
    sha: str
    state: str
    key: str
    description: str
    body: dict[str, Any]
    auth: str


# --- the forges' documented shapes ---------------------------------------------------
_SHA = r"(?P<sha>[0-9a-f]{40})"
_STATES = {
    "github": {"error", "failure", "pending", "success"},
    "gitlab": {"pending", "running", "success", "failed", "canceled", "skipped"},
    "gitea": {"pending", "success", "error", "failure", "warning"},
    "bitbucket": {"INPROGRESS", "SUCCESSFUL", "FAILED", "STOPPED"},
    "bitbucketserver": {"INPROGRESS", "SUCCESSFUL", "FAILED", "CANCELLED", "UNKNOWN"},
    "azuredevops": {"notSet", "pending", "succeeded", "failed", "error", "notApplicable"},
}
_FIELDS = {
    "github": {"state", "target_url", "description", "context"},
    "gitlab": {
        "state",
        "ref",
        "name",
        "context",
        "target_url",
        "description",
        "coverage",
        "pipeline_id",
    },  # fmt: skip
    "gitea": {"state", "target_url", "description", "context"},
    "bitbucket": {"key", "state", "name", "description", "url", "refname"},
    "bitbucketserver": {
        "key",
        "state",
        "url",
        "name",
        "description",
        "buildNumber",
        "duration",
        "lastUpdated",
        "parent",
        "ref",
        "testResults",
    },  # fmt: skip
    "azuredevops": {"state", "description", "context", "targetUrl"},
}
_ROUTES = {
    "github": re.compile(rf"^/github/repos/(?P<repo>[^/]+/[^/]+)/statuses/{_SHA}$"),
    "gitlab": re.compile(rf"^/gitlab/api/v4/projects/(?P<repo>[^/]+)/statuses/{_SHA}$"),
    "gitea": re.compile(rf"^/gitea/api/v1/repos/(?P<repo>[^/]+/[^/]+)/statuses/{_SHA}$"),
    "bitbucket": re.compile(
        rf"^/bitbucket/2\.0/repositories/(?P<repo>[^/]+/[^/]+)/commit/{_SHA}/statuses/build/?$"
    ),
    "bitbucketserver": re.compile(
        rf"^/bbs/rest/api/latest/projects/(?P<project>[^/]+)/repos/(?P<slug>[^/]+)/commits/{_SHA}/builds$"
    ),
    "azuredevops": re.compile(
        rf"^/azure/(?P<org>[^/]+)/(?P<project>[^/]+)/_apis/git/repositories/(?P<slug>[^/]+)/commits/{_SHA}/statuses$"
    ),
}


class Rejected(Exception):
    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code
        self.why = why


class FakeForge(_Server):
    """Accepts commit statuses as the forges document them, for `token`; every
    other request is refused (and kept in `rejected` with the reason)."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.posts: list[StatusPost] = []
        self.rejected: list[tuple[str, str]] = []
        self.fail_next: list[int] = []  # HTTP codes to answer next, in order
        self._lock = threading.Lock()
        super().__init__(self._answer)

    def _answer(self, got: Received) -> tuple[int, Any]:
        with self._lock:
            if self.fail_next:
                code = self.fail_next.pop(0)
                return code, {"message": "injected failure"}
        try:
            post = self._check(got)
        except Rejected as e:
            with self._lock:
                self.rejected.append((f"{got.method} {got.path}", e.why))
            return e.code, {"message": e.why}
        with self._lock:
            if post.forge == "gitlab":  # GitLab refuses to re-enter the state a status is in
                last = next((p for p in reversed(self.posts) if p.forge == "gitlab" and
                             p.sha == post.sha and p.key == post.key), None)  # fmt: skip
                if (
                    last is not None
                    and last.state == post.state
                    and post.state in ("pending", "running")
                ):
                    return 400, {"message": f"Cannot transition status via :run from :{post.state}"}
            self.posts.append(post)
        return 201, {"id": len(self.posts), "state": post.state}

    def _check(self, got: Received) -> StatusPost:
        forge, found = next(
            ((f, m) for f, r in _ROUTES.items() if (m := r.match(got.path))), (None, None)
        )
        if forge is None or found is None:
            raise Rejected(404, f"no such endpoint: {got.path}")
        if got.method != "POST":
            raise Rejected(405, f"{got.method}: commit statuses are created with POST")
        auth = self._auth(forge, got)
        if forge == "gitlab":
            if got.content_type not in ("application/json", "application/x-www-form-urlencoded"):
                raise Rejected(415, f"content type {got.content_type!r}")
        elif got.content_type != "application/json":
            raise Rejected(415, f"content type {got.content_type!r}: JSON expected")
        try:
            body = got.json() if got.content_type == "application/json" else got.form()
        except ValueError:
            raise Rejected(400, "body is not JSON") from None
        if not isinstance(body, dict):
            raise Rejected(400, "body is not an object")
        unknown = set(body) - _FIELDS[forge]
        if unknown:
            raise Rejected(422, f"unknown fields {sorted(unknown)}")
        state = body.get("state")
        if state not in _STATES[forge]:
            raise Rejected(422, f"state {state!r} is not one of {sorted(_STATES[forge])}")
        desc = body.get("description", "")
        if not isinstance(desc, str):
            raise Rejected(422, "description must be a string")
        if forge == "github":
            if "/" not in found["repo"] or not body.get("context"):
                raise Rejected(422, "context is required here")
            if len(desc) > 140:
                raise Rejected(422, "description is too long (maximum is 140 characters)")
            if got.headers.get("accept") != "application/vnd.github+json":
                raise Rejected(415, "Accept: application/vnd.github+json expected")
            key, repo = body["context"], found["repo"]
        elif forge == "gitlab":
            repo = unquote(found["repo"])
            if "%2F" not in found["repo"].upper() and not repo.isdigit():
                raise Rejected(404, "project id: a number or the URL-encoded path")
            key = body.get("name") or body.get("context") or "default"
            if len(desc) > 255:
                raise Rejected(400, "description is too long")
        elif forge == "gitea":
            key, repo = body.get("context", ""), found["repo"]
        elif forge in ("bitbucket", "bitbucketserver"):
            for need in ("key", "state", "url"):
                if not body.get(need):
                    raise Rejected(400, f"{need} is required")
            if len(body["key"]) > 40 and forge == "bitbucket":
                raise Rejected(400, "key: at most 40 characters")
            key = body["key"]
            repo = found["repo"] if forge == "bitbucket" else f"{found['project']}/{found['slug']}"
        else:  # azuredevops
            if got.query.get("api-version") != ["7.1"]:
                raise Rejected(400, "api-version=7.1 is required")
            ctx = body.get("context")
            if not isinstance(ctx, dict) or not ctx.get("name") or not ctx.get("genre"):
                raise Rejected(400, "context: {name, genre} required")
            key = f"{ctx['genre']}/{ctx['name']}"
            repo = f"{found['org']}/{found['project']}/{found['slug']}"
        return StatusPost(forge, repo, found["sha"], state, key, desc, body, auth)

    def _auth(self, forge: str, got: Received) -> str:
        header = got.headers.get("authorization", "")
        basic = got.basic_auth
        if forge == "github":
            ok = header in (f"Bearer {self.token}", f"token {self.token}")
            form = header.split(" ")[0]
        elif forge == "gitlab":
            ok = got.headers.get("private-token") == self.token or header == f"Bearer {self.token}"
            form = "PRIVATE-TOKEN" if got.headers.get("private-token") else "Bearer"
        elif forge == "gitea":
            ok = header in (f"token {self.token}", f"Bearer {self.token}")
            form = header.split(" ")[0]
        elif forge in ("bitbucket", "bitbucketserver"):
            ok = header == f"Bearer {self.token}" or (
                basic is not None and f"{basic[0]}:{basic[1]}" == self.token
            )
            form = header.split(" ")[0]
        else:  # Azure DevOps: a PAT as the password of Basic auth, any user
            ok = basic is not None and basic[1] == self.token
            form = "Basic"
        if not ok:
            raise Rejected(401, "Bad credentials")
        return form

    def statuses(self, forge: str | None = None) -> list[StatusPost]:
        with self._lock:
            return [p for p in self.posts if forge is None or p.forge == forge]


@dataclass
class Recorder:
    """Collects things in order across threads (tests of the delivery machinery)."""

    items: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, item: Any) -> None:
        with self.lock:
            self.items.append(item)
