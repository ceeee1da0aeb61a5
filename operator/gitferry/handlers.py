"""The Kopf adapter: thin handlers that hand every trigger to the scheduler.

Nothing below this module imports kopf.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import kopf

from .alerts import AlertKey
from .api import SyncKey
from .constants import (
    ALERT_PLURAL,
    FINALIZER,
    GROUP,
    KOPF_PREFIX,
    PLURAL,
    VERSION,
)
from .runtime import Runtime

log = logging.getLogger("gitferry.handlers")
RESOURCE = (GROUP, VERSION, PLURAL)
ALERTS = (GROUP, VERSION, ALERT_PLURAL)
_runtime: Runtime | None = None
_background: set[asyncio.Task[None]] = set()


def runtime() -> Runtime:
    assert _runtime is not None, "the startup handler has not run"
    return _runtime


def _key(namespace: str | None, name: str | None) -> SyncKey:
    return SyncKey(namespace or "", name or "")


class NoDiffBase(kopf.DiffBaseStorage):
    """Kopf keeps no copy of a sync to diff against: gitferry judges spec
    changes and requests from the watch events itself (syncs.Triggers).

    Kopf's own storage writes its copy into an annotation whenever a label or
    annotation changes, the ApplySet parent's included: a PATCH of the sync for
    nothing gitferry needs (2 of a new sync's 20 requests in `make bench`). To
    Kopf every body now equals its last-handled state, so it writes none; its
    creation, deletion (the finalizer) and daemons work as before."""

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self.build(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


# Kopf's own HTTP session has no connection limit: each request in flight opens
# a TLS connection that then stays in the pool. 1000 syncs created at once made
# it open about 240 (their finalizer patches), each keeping asyncio's 256 KiB
# read buffer and OpenSSL's state: +95 MiB of the operator's peak memory in
# `make bench`. Its requests share this many connections instead (the others
# wait their turn), on top of one per watch stream it holds open.
KOPF_CONNECTIONS = 16
# The watch streams Kopf may hold: syncs and Alerts per watched namespace (or
# cluster-wide), and its own of namespaces and CRDs.
_streams = 4
_unbounded = False


def watching(namespaces: list[str]) -> None:
    """Tell the login handler which namespaces Kopf will watch (none: all)."""
    global _streams, _unbounded
    _streams = 4 + 2 * len(namespaces)
    # A glob or a list (Kopf's "a,b", "!c") matches namespaces as they come: the
    # streams cannot be counted.
    _unbounded = any(c in ns for ns in namespaces for c in "*?[!,")


# Errors ignored, as Kopf's own login handlers: none answering is Kopf's LoginError.
@kopf.on.login(errors=kopf.ErrorsMode.IGNORED)
async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
    """Kopf's usual login (in-cluster, then kubeconfig), with a bounded pool."""
    info = kopf.login_via_client(**kwargs)
    if info is None:
        return None
    limit = 0 if _unbounded else KOPF_CONNECTIONS + _streams
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        default_namespace=info.default_namespace,
        expiration=info.expiration,
        priority=info.priority,
    )


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _runtime
    # Kopf's bookkeeping (the deletion handler's progress) lives under its own prefix.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = NoDiffBase()
    # The finalizer guards the prune that runs when a sync is deleted.
    settings.persistence.finalizer = FINALIZER
    settings.posting.enabled = False  # gitferry posts its own Events
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    _runtime = Runtime.start()
    await _runtime.serve()  # /metrics and /readyz
    _background.add(asyncio.create_task(_runtime.watch_uninstall()))
    try:
        await _runtime.serve_webhooks()
    except OSError as e:  # the address is taken or not this host's: a setting to fix
        raise kopf.PermanentError(f"GITFERRY_WEBHOOK_ADDR: cannot listen: {e}") from None


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    for task in _background:
        task.cancel()
    if _runtime is not None:
        await _runtime.stop_webhooks()  # no push asks for a reconcile after this
        # In a thread: the event loop (liveness) keeps answering.
        await asyncio.get_running_loop().run_in_executor(None, _runtime.close)
        await _runtime.stop_serving()


# A new (or, after a restart, resumed) sync needs no request: its worker daemon
# reconciles as soon as it starts. Every event of a sync feeds the sync cache
# (reconciles read it, not the API) and asks for a reconcile now when it brings a
# new generation or gitferry.dev/requested-at.
@kopf.on.event(*RESOURCE)
async def observed(*, type: str | None, body: kopf.Body, **_: Any) -> None:
    runtime().observe(type, dict(body))


@kopf.daemon(*RESOURCE, cancellation_timeout=5.0)
async def worker(
    *, namespace: str | None, name: str, stopped: kopf.DaemonStopped, body: kopf.Body, **_: Any
) -> None:
    stop = asyncio.Event()

    async def watch_stop() -> None:
        await stopped.wait()
        stop.set()

    watcher = asyncio.create_task(watch_stop())
    try:
        first_in = runtime().first_delay(dict(body))
        await runtime().scheduler.run(_key(namespace, name), stop, first_in)
    finally:
        watcher.cancel()


@kopf.on.delete(*RESOURCE)
async def deleted(*, namespace: str | None, name: str, body: kopf.Body, **_: Any) -> None:
    await runtime().finalize(_key(namespace, name), dict(body))


# Alerts: every watch event (the first listing included) refreshes the runtime's
# index; no finalizer and no Kopf bookkeeping on them, a deleted Alert is just
# forgotten. The index's status writes run off the event loop.
@kopf.on.event(*ALERTS)
async def alert_event(*, type: str | None, body: kopf.Body, **_: Any) -> None:
    notifier = runtime().notifier
    loop = asyncio.get_running_loop()
    if type == "DELETED":
        meta = body.get("metadata") or {}
        notifier.remove(AlertKey(str(meta.get("namespace") or ""), str(meta.get("name") or "")))
    else:
        await loop.run_in_executor(None, notifier.upsert, dict(body))
