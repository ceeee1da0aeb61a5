"""Push webhooks: a forge's push becomes a reconcile of every sync it changed.

    POST /hook/<forge> → read (bounded) → verify → parse → match → poke + request

The webhook library verifies and parses; this module knows GitRepositorySync: it
matches each push against every sync this operator runs (Flux pokes only the
objects a Receiver lists) and, for each match, marks the sync so that its next
fetch hears the remote afresh (`Context.poke`) and asks the scheduler for a
reconcile. A sync of the pushed repository whose path the push did not touch is
left alone, unless its last render may have read beyond its path.

The syncs are listed from the API server on each push rather than indexed from
watch events: pushes are rare next to reconciles, the LIST of one resource is
served from the API server's watch cache, and there is no second copy of the
syncs to keep in step.

The forges' secrets live in one Kubernetes Secret (settings.webhook_secret),
read when a request needs it and cached for SECRET_TTL seconds; they never reach
a log line, a response or an environment variable.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from aiohttp import web

from .api import Sync, SyncKey, parse_meta, parse_sync
from .constants import GROUP, PLURAL, VERSION
from .context import Context
from .deadline import Deadline, DeadlineExceeded
from .errors import InvalidSpec
from .kube import Kube, KubeError
from .render.walker import IGNORE_FILE
from .scheduler import Scheduler
from .settings import Settings
from .source import GitRef
from .webhook import (
    FORGES,
    Delivery,
    Kind,
    Push,
    WebhookError,
    clean_path,
    parse,
    repo_key,
    signed,
    touches,
    verify,
)

log = logging.getLogger("gitferry.receiver")

SECRET_TTL = 10.0  # seconds a read of the webhook Secret is used
SECRET_FALLBACK_KEY = "token"  # the Secret's key for every forge without its own
READ_TIMEOUT = 10.0  # seconds to receive a whole body
API_TIMEOUT = 10.0
MAX_IN_FLIGHT = 16  # requests handled at once; bounds memory to 16 bodies
LIST_PAGE = "500"
_SHA_RE = re.compile(r"^[0-9a-fA-F]{7,64}$")


# --- matching: pure ------------------------------------------------------------


class Match(Enum):
    YES = "yes"
    UNTOUCHED = "untouched"  # its repository and ref, but none of its paths
    NO = "no"


def ref_matches(ref: GitRef, push: Push) -> bool:
    """Whether a push of `push.ref` may move what `ref` selects. A commit pin never
    moves; a semver range may pick any new tag; no ref follows the default branch
    (any branch, when the payload does not say which is the default)."""
    if ref.commit:
        return False
    if ref.tag:
        return push.tag == ref.tag
    if ref.semver:
        return push.tag is not None
    if ref.branch:
        return push.branch == ref.branch
    if push.branch is None:
        return False
    return push.default_branch is None or push.branch == push.default_branch


def decide(sync: Sync, push: Push, confined: bool) -> Match:
    """What `push` means for `sync`; `confined`: its last render read only files
    under spec.path (Context.confined)."""
    if sync.spec.suspend or repo_key(sync.spec.url) not in push.repo_keys:
        return Match.NO
    if not ref_matches(sync.spec.ref, push):
        return Match.NO
    changed = push.changed_paths
    if not confined or changed is None or touches(changed, sync.spec.path):
        return Match.YES
    if any(clean_path(p) == IGNORE_FILE for p in changed):  # the checkout's own ignore file
        return Match.YES
    return Match.UNTOUCHED


def match(
    pushes: Iterable[Push], syncs: Iterable[Sync], confined: Callable[[SyncKey], bool]
) -> tuple[list[SyncKey], list[SyncKey]]:
    """The syncs to reconcile, and those of a pushed repository and ref whose paths
    no push touched."""
    pushes = tuple(pushes)
    matched, untouched = [], []
    for sync in syncs:
        verdicts = {decide(sync, push, confined(sync.key)) for push in pushes}
        if Match.YES in verdicts:
            matched.append(sync.key)
        elif Match.UNTOUCHED in verdicts:
            untouched.append(sync.key)
    return matched, untouched


# --- the Secret ------------------------------------------------------------------


class SecretUnavailable(Exception):
    """The webhook Secret could not be read and no earlier read is at hand."""


class Secrets:
    """The forges' webhook secrets: one Secret, a key per forge (`github`, `gitlab`,
    …) or `token` for all; values trimmed of surrounding whitespace. Read at most
    once per SECRET_TTL; a Secret that is gone refuses every request, an API
    error keeps the last values read."""

    def __init__(self, kube: Kube, namespace: str, name: str, ttl: float = SECRET_TTL) -> None:
        self.kube = kube
        self.where = f"{namespace}/{name}"
        self._path = f"/api/v1/namespaces/{namespace}/secrets/{name}"
        self._ttl = ttl
        self._lock = threading.Lock()
        self._data: dict[str, bytes] | None = None
        self._read_at = float("-inf")

    def get(self, forge: str) -> bytes | None:
        """The secret for `forge`, or None when the Secret holds none for it.
        Blocks on the API (run it in a thread); raises SecretUnavailable."""
        with self._lock:
            if time.monotonic() - self._read_at >= self._ttl:
                self._read()
            data = self._data
        if data is None:
            raise SecretUnavailable(f"Secret {self.where} could not be read")
        return data.get(forge) or data.get(SECRET_FALLBACK_KEY) or None

    def _read(self) -> None:
        try:
            body = self.kube.request("GET", self._path, deadline=Deadline.after(API_TIMEOUT))
        except KubeError as e:
            if e.not_found:
                log.warning("action=webhook-secret secret=%s error=not-found", self.where)
                self._data, self._read_at = {}, time.monotonic()
            else:
                log.warning("action=webhook-secret secret=%s error=%s", self.where, e.message)
            return
        except DeadlineExceeded as e:
            log.warning("action=webhook-secret secret=%s error=%s", self.where, e.message)
            return
        data: dict[str, bytes] = {}
        for key, value in (body.get("data") or {}).items():
            try:
                data[str(key)] = base64.b64decode(str(value)).strip()
            except ValueError:
                continue
        self._data, self._read_at = data, time.monotonic()


# --- the HTTP receiver -----------------------------------------------------------


class _Refused(Exception):
    def __init__(self, status: int, why: str, detail: str = "") -> None:
        super().__init__(why)
        self.status = status
        self.why = why
        self.detail = detail  # for the sender; never holds a secret


@dataclass
class _Outcome:
    """One request's log line."""

    forge: str
    remote: str
    status: int = 500
    why: str = ""
    detail: str = ""
    event: str = ""
    repo: str = ""
    ref: str = ""
    after: str = ""
    matched: int = 0
    untouched: int = 0
    started: float = field(default_factory=time.monotonic)

    def log(self) -> None:
        ms = int((time.monotonic() - self.started) * 1000)
        if self.why:
            log.info(
                "action=webhook forge=%s remote=%s status=%d why=%s detail=%r duration_ms=%d",
                self.forge, self.remote, self.status, self.why, self.detail, ms,
            )  # fmt: skip
            return
        log.info(
            "action=webhook forge=%s remote=%s status=%d event=%r repo=%s ref=%s after=%s "
            "matched=%d untouched=%d duration_ms=%d",
            self.forge, self.remote, self.status, self.event, self.repo or "-",
            self.ref or "-", self.after or "-", self.matched, self.untouched, ms,
        )  # fmt: skip


class Receiver:
    """The aiohttp server at `settings.webhook_addr`: POST /hook/<forge>."""

    def __init__(self, ctx: Context, scheduler: Scheduler[SyncKey], settings: Settings) -> None:
        assert settings.webhook_secret is not None
        self.ctx = ctx
        self.scheduler = scheduler
        self.secrets = Secrets(ctx.kube, *settings.webhook_secret)
        self.host, self.port = settings.webhook_addr
        self.max_body = settings.webhook_max_body_bytes
        self._runner: web.AppRunner | None = None
        self._in_flight = 0

    async def start(self) -> None:
        app = web.Application(client_max_size=self.max_body + 1)
        app.router.add_post("/hook/{forge}", self._hook)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = self._runner.addresses[0][1]  # the one bound, when asked for port 0
        log.info(
            "action=webhook-listen addr=%s:%d secret=%s max_body_bytes=%d",
            self.host, self.port, self.secrets.where, self.max_body,
        )  # fmt: skip

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _hook(self, request: web.Request) -> web.Response:
        forge = request.match_info["forge"]
        out = _Outcome(forge[:40] if forge in FORGES else "-", str(request.remote or "-"))
        try:
            if forge not in FORGES:
                raise _Refused(404, "unknown-forge")
            if self._in_flight >= MAX_IN_FLIGHT:
                raise _Refused(503, "busy")
            self._in_flight += 1
            try:
                reply = await self._handle(request, forge, out)
            finally:
                self._in_flight -= 1
        except _Refused as e:
            out.status, out.why, out.detail = e.status, e.why, e.detail
            reply = {"error": e.why, **({"detail": e.detail} if e.detail else {})}
        except Exception:  # a bug: the forge sees a 500, the log the traceback
            log.exception("action=webhook forge=%s error=internal", out.forge)
            out.status, out.why = 500, "internal-error"
            reply = {"error": out.why}
        out.log()
        return web.json_response(reply, status=out.status)

    async def _handle(self, request: web.Request, forge: str, out: _Outcome) -> dict[str, Any]:
        body = await self._read(request)
        loop = asyncio.get_running_loop()
        try:
            secret = await loop.run_in_executor(None, self.secrets.get, forge)
        except SecretUnavailable:
            raise _Refused(503, "secret-unavailable") from None
        if secret is None:
            raise _Refused(404, "no-secret-for-forge")
        headers: Mapping[str, str] = request.headers
        if not signed(forge, headers):
            raise _Refused(401, "unsigned")
        if not verify(forge, headers, body, secret):
            raise _Refused(403, "bad-signature")
        try:
            delivery = parse(forge, headers, body)
        except WebhookError as e:
            raise _Refused(400, "bad-payload", str(e)) from None
        out.event = delivery.event
        if delivery.kind is not Kind.PUSH:
            out.status = 200
            return {"event": delivery.event, "kind": delivery.kind.value}
        self._describe(delivery, out)
        watched = self.scheduler.watched()
        try:
            syncs = await loop.run_in_executor(None, self._syncs, watched)
        except (KubeError, DeadlineExceeded) as e:
            log.warning("action=webhook-list error=%s", e.message)
            raise _Refused(503, "cannot-list-syncs") from None
        matched, untouched = match(delivery.pushes, syncs, self.ctx.confined)
        for key in matched:
            self.ctx.poke(key)
            self.scheduler.request(key, "webhook")
        out.status, out.matched, out.untouched = 202, len(matched), len(untouched)
        return {"event": delivery.event, "kind": "push", "matched": len(matched)}

    async def _read(self, request: web.Request) -> bytes:
        """The body, at most max_body bytes (413 beyond), within READ_TIMEOUT (408)."""
        if request.content_length is not None and request.content_length > self.max_body:
            raise _Refused(413, "body-too-large")
        body = bytearray()
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                async for chunk in request.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > self.max_body:
                        raise _Refused(413, "body-too-large")
        except TimeoutError:
            raise _Refused(408, "body-too-slow") from None
        return bytes(body)

    def _syncs(self, watched: frozenset[SyncKey]) -> list[Sync]:
        """The syncs this operator runs, as the API server has them now (a thread:
        blocking API calls). One namespace: a namespaced LIST (what an operator
        limited to one namespace may do); several: one cluster-wide LIST."""
        if not watched:
            return []
        namespaces = {k.namespace for k in watched}
        base = f"/apis/{GROUP}/{VERSION}"
        path = (
            f"{base}/namespaces/{next(iter(namespaces))}/{PLURAL}"
            if len(namespaces) == 1
            else f"{base}/{PLURAL}"
        )
        deadline = Deadline.after(API_TIMEOUT)
        out: list[Sync] = []
        page: dict[str, Any] = {}
        while True:
            query = {"limit": LIST_PAGE}
            token = (page.get("metadata") or {}).get("continue")
            if token:
                query["continue"] = token
            page = self.ctx.kube.request("GET", path, deadline=deadline, query=query)
            for body in page.get("items") or []:
                meta = parse_meta(body)
                if meta.key not in watched or meta.deleting:
                    continue
                try:
                    out.append(parse_sync(body))
                except InvalidSpec:  # its own reconcile says why
                    continue
            if not (page.get("metadata") or {}).get("continue"):
                return out

    @staticmethod
    def _describe(delivery: Delivery, out: _Outcome) -> None:
        if not delivery.pushes:
            return
        first = delivery.pushes[0]
        out.repo = min(first.repo_keys, default="")
        more = f"+{len(delivery.pushes) - 1}" if len(delivery.pushes) > 1 else ""
        out.ref = first.ref + more
        out.after = first.after if first.after and _SHA_RE.match(first.after) else ""
