"""A loopback HTTP server that speaks the list and watch protocol, for the watch
library's failure paths that a real API server gives only by chance: a watch
that answers 410 Gone (as a status or as an ERROR event), 403, 500, a dropped
connection, an event too large to keep.

It serves aggregated discovery for ConfigMaps (and a kind that cannot be
watched), LIST of ConfigMaps as PartialObjectMetadataList from `objects`, and
each WATCH from the next script the test queued (`watch(...)`): lines to send,
an HTTP status to answer, a pause until the test says go (`Gate`), or, with no
script left, a connection held open and idle until the server stops. Every
request is recorded with its query and headers.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

DISCOVERY_CORE = {
    "kind": "APIGroupDiscoveryList",
    "items": [
        {
            "metadata": {"name": ""},
            "versions": [
                {
                    "version": "v1",
                    "resources": [
                        {
                            "resource": "configmaps",
                            "responseKind": {"kind": "ConfigMap"},
                            "scope": "Namespaced",
                            "verbs": ["get", "list", "watch", "patch"],
                        }
                    ],
                }
            ],
        }
    ],
}
DISCOVERY_GROUPS = {
    "kind": "APIGroupDiscoveryList",
    "items": [
        {
            "metadata": {"name": "example.com"},
            "versions": [
                {
                    "version": "v1",
                    "resources": [
                        {
                            "resource": "reviews",
                            "responseKind": {"kind": "Review"},
                            "scope": "Cluster",
                            "verbs": ["create"],
                        }
                    ],
                }
            ],
        }
    ],
}


class Gate:
    """A pause in a watch script: the server waits here until `go()`."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self._go = threading.Event()

    def go(self) -> None:
        self._go.set()


Step = dict[str, Any] | bytes | int | Gate


@dataclass
class Request:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class WatchAPI:
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → metadata
    rv: int = 100
    requests: list[Request] = field(default_factory=list)
    list_status: list[int] = field(default_factory=list)  # statuses for the next LISTs
    _scripts: queue.Queue[list[Step]] = field(default_factory=queue.Queue)
    _stop: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None

    # --- what the test does ---------------------------------------------------
    def put(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """Store an object's metadata with the next resourceVersion; returns it."""
        self.rv += 1
        md = {**metadata, "resourceVersion": str(self.rv)}
        self.objects[md["name"]] = md
        return md

    def watch(self, *steps: Step) -> None:
        """Queue the script of the next watch request."""
        self._scripts.put(list(steps))

    def watches(self) -> list[Request]:
        return [r for r in self.requests if r.query.get("watch") == "true"]

    def lists(self) -> list[Request]:
        return [r for r in self.requests if "watch" not in r.query and "configmaps" in r.path]

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def kubeconfig(self, d: Path) -> Path:
        path = d / "kubeconfig"
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "u", "context": {"cluster": "fake", "user": "u"}}],
            "current-context": "u",
        }
        path.write_text(json.dumps(cfg))
        return path

    # --- serving -------------------------------------------------------------------
    def start(self) -> WatchAPI:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                u = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(u.query).items()}
                api.requests.append(Request(u.path, query, dict(self.headers.items())))
                if u.path == "/api":
                    self._json(200, DISCOVERY_CORE)
                elif u.path == "/apis":
                    self._json(200, DISCOVERY_GROUPS)
                elif u.path == "/api/v1/configmaps" and query.get("watch") == "true":
                    self._watch()
                elif u.path == "/api/v1/configmaps":
                    status = api.list_status.pop(0) if api.list_status else 200
                    if status != 200:
                        self._json(status, _status(status))
                        return
                    items = [{"metadata": md} for md in api.objects.values()]
                    self._json(
                        200,
                        {
                            "kind": "PartialObjectMetadataList",
                            "apiVersion": "meta.k8s.io/v1",
                            "metadata": {"resourceVersion": str(api.rv)},
                            "items": items,
                        },
                    )
                else:
                    self._json(404, _status(404))

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _watch(self) -> None:
                try:
                    script = api._scripts.get_nowait()
                except queue.Empty:
                    script = []
                if script and isinstance(script[0], int):
                    self._json(script[0], _status(script[0]))
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                for step in script:
                    if isinstance(step, Gate):
                        step.reached.set()
                        while not step._go.wait(0.02):
                            if api._stop.is_set():
                                return
                    elif isinstance(step, bytes):
                        if step == b"DROP":  # the connection breaks mid-watch
                            self.close_connection = True
                            return
                        self._chunk(step)
                    elif isinstance(step, dict):
                        self._chunk(json.dumps(step).encode() + b"\n")
                if not script:  # nothing to say: an idle watch, open until the end
                    while not api._stop.wait(0.02):
                        pass
                    return
                self._chunk(b"")  # the server ends the watch (its timeout)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(
            target=server.serve_forever, args=(0.05,), name="watchapi", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _status(code: int) -> dict[str, Any]:
    reasons = {403: "Forbidden", 404: "NotFound", 410: "Expired", 500: "InternalError"}
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reasons.get(code, "Unknown"),
        "message": f"fake {code}",
    }


def event(kind: str, metadata: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": kind,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": metadata,
        },
    }


def error_event(code: int) -> dict[str, Any]:
    return {"type": "ERROR", "object": _status(code)}


def bookmark(rv: str) -> dict[str, Any]:
    return event("BOOKMARK", {"resourceVersion": rv})


def serve() -> Iterator[WatchAPI]:
    api = WatchAPI().start()
    try:
        yield api
    finally:
        api.stop()
