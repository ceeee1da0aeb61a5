"""The watch library against the real API server: what gitferry applied is
watched, metadata only, and a hand edit that takes one of its fields shows.

Drives `gitferry.kube.Watcher` directly, as the operator would: an object applied
by the field manager `gitferry` with the sync's label appears; a merge patch by
another manager that changes one of its fields takes that field out of the
cached field set and names the other manager; status, label and annotation
changes by others leave the field set alone; deletions arrive; unlabelled
objects never do. Watches stop when their kind is no longer wanted, close at
once, survive a connection cut off (the changes made meanwhile arrive) and an
API server restart, and hold a measured amount of memory for 1000 objects.
Every thread and process a test starts is stopped before it ends.
"""

from __future__ import annotations

import contextlib
import gc
import json
import secrets
import select
import socket
import struct
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from gitferry.kube import (
    APPLY_PATCH,
    Discovery,
    Kube,
    ObjRef,
    Watcher,
    WatchEvent,
    WatchOptions,
    field_paths,
    load_configuration,
    owners,
)
from tests.harness.cluster_fixtures import Cluster, wait_for
from tests.harness.controlplane import write_kubeconfig
from tests.harness.syncs import SYNC_NAME, SYNC_NAMESPACE

pytestmark = pytest.mark.e2e

CM = ("", "ConfigMap")
DEPLOYMENT = ("apps", "Deployment")


class Recorder:
    """What the callbacks saw; they only record, as the operator's do."""

    def __init__(self) -> None:
        self.events: list[WatchEvent] = []
        self.relists: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def on_event(self, ev: WatchEvent) -> None:
        with self._lock:
            self.events.append(ev)

    def on_relist(self, gk: tuple[str, str]) -> None:
        with self._lock:
            self.relists.append(gk)

    def of(self, name: str, type_: str | None = None) -> list[WatchEvent]:
        with self._lock:
            return [
                e
                for e in self.events
                if e.meta.ref.name == name and (type_ is None or e.type == type_)
            ]

    def names(self) -> set[str]:
        with self._lock:
            return {e.meta.ref.name for e in self.events}


def watch_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("watch-")]


@pytest.fixture
def kube(cluster: Cluster) -> Iterator[Kube]:
    k = Kube(load_configuration(kubeconfig=str(cluster.kubeconfig)))
    yield k
    k.close()


@pytest.fixture
def sync_name() -> str:
    """A sync name of this test's own: the watches select only its objects."""
    return f"w-{secrets.token_hex(4)}"


@pytest.fixture
def make_watcher(kube: Kube, sync_name: str) -> Iterator[Callable[..., tuple[Watcher, Recorder]]]:
    made: list[Watcher] = []

    def make(
        k: Kube | None = None, options: WatchOptions | None = None
    ) -> tuple[Watcher, Recorder]:
        rec = Recorder()
        k = k or kube
        watcher = Watcher(
            k,
            Discovery(k),
            label_selector=f"{SYNC_NAME}={sync_name}",
            field_manager="gitferry",
            keep_labels=[SYNC_NAME, SYNC_NAMESPACE],
            on_event=rec.on_event,
            on_relist=rec.on_relist,
            options=options or WatchOptions(backoff_min=0.2, backoff_max=2.0),
        )
        made.append(watcher)
        return watcher, rec

    yield make
    for w in made:
        w.close()
    assert not watch_threads(), f"watch threads left running: {watch_threads()}"


def apply(kube: Kube, obj: dict[str, Any], manager: str = "gitferry") -> dict[str, Any]:
    """Server-side apply, as gitferry's engine does it (conflicts forced)."""
    meta = obj["metadata"]
    group = obj["apiVersion"].rpartition("/")[0]
    plural = {"ConfigMap": "configmaps", "Deployment": "deployments"}[obj["kind"]]
    base = f"/apis/{obj['apiVersion']}" if group else f"/api/{obj['apiVersion']}"
    path = f"{base}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"
    return kube.request(
        "PATCH",
        path,
        query={"fieldManager": manager, "force": "true"},
        body=obj,
        content_type=APPLY_PATCH,
    )


def labels(sync_name: str, namespace: str) -> dict[str, str]:
    return {SYNC_NAME: sync_name, SYNC_NAMESPACE: namespace, "app": "web"}


def config_map(name: str, namespace: str, sync_name: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels(sync_name, namespace)},
        "data": data,
    }


def deployment(name: str, namespace: str, sync_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels(sync_name, namespace)},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]},
            },
        },
    }


def synced(watcher: Watcher, *kinds: tuple[str, str], timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while not all(watcher.synced(*gk) for gk in kinds):
        assert time.monotonic() < end, f"not synced after {timeout}s: {watcher.kinds()}"
        time.sleep(0.05)


def until(what: str, fn: Callable[[], Any], timeout: float = 30) -> Any:
    return wait_for(what, fn, timeout, 0.05)


# --- 1. what the watch sees, and what it does not ---------------------------------


def test_a_field_taken_by_a_merge_patch_shows_and_others_changes_do_not(
    cluster: Cluster,
    kube: Kube,
    namespace: str,
    sync_name: str,
    make_watcher: Callable[..., tuple[Watcher, Recorder]],
) -> None:
    watcher, rec = make_watcher()
    watcher.watch(*CM)
    watcher.watch(*DEPLOYMENT)
    synced(watcher, CM, DEPLOYMENT)
    assert watcher.stats().objects == 0

    # Not labelled, or labelled for another sync: never seen.
    cluster.kubectl("create", "configmap", "plain", "-n", namespace, "--from-literal=a=1")
    other = config_map("other", namespace, "another-sync", a="1")
    apply(kube, other)

    apply(kube, config_map("web", namespace, sync_name, a="1", b="2"))
    added = until("web to be ADDED", lambda: rec.of("web", "ADDED"))[0]
    ref = ObjRef("", "ConfigMap", namespace, "web")
    assert added.meta.ref == ref
    assert added.meta.labels == {SYNC_NAME: sync_name, SYNC_NAMESPACE: namespace}
    assert added.meta.fields is not None
    applied = field_paths(added.meta.fields)
    assert {"data.a", "data.b", "metadata.labels.app"} <= applied
    assert f'metadata.labels["{SYNC_NAME}"]' in applied
    assert watcher.get(ref) == added.meta

    # `kubectl edit`-style: a merge patch by another manager changes data.a.
    cluster.kubectl(
        "patch", "configmap", "web", "-n", namespace, "--type=merge",
        "-p", json.dumps({"data": {"a": "changed by hand"}}), "--field-manager=kubectl-edit",
    )  # fmt: skip
    taken = until("the edit", lambda: rec.of("web", "MODIFIED"))[-1]
    assert taken.meta.fields is not None
    assert applied - field_paths(taken.meta.fields) == {"data.a"}
    assert owners(taken.managed_fields, "data.a") == ["kubectl-edit"]
    assert owners(taken.managed_fields, "data.b") == ["gitferry"]
    assert watcher.get(ref) == taken.meta

    # A label and an annotation added by hand: the field set stays as it was.
    before = len(rec.of("web", "MODIFIED"))
    cluster.kubectl("label", "configmap", "web", "-n", namespace, "team=blue")
    cluster.kubectl("annotate", "configmap", "web", "-n", namespace, "note=hello")
    until("two more events", lambda: len(rec.of("web", "MODIFIED")) >= before + 2)
    later = rec.of("web", "MODIFIED")[before:]
    assert [e.meta.fields for e in later] == [taken.meta.fields] * 2
    assert owners(later[-1].managed_fields, "metadata.labels.team") == ["kubectl-label"]
    assert later[-1].meta.labels == added.meta.labels  # only the kept keys

    # A Deployment: the controller writes its status; gitferry's fields stay.
    apply(kube, deployment("app", namespace, sync_name))
    first = until("app to be ADDED", lambda: rec.of("app", "ADDED"))[0]
    assert first.meta.fields is not None
    assert "spec.template.spec.containers[name=web].image" in field_paths(first.meta.fields)

    def status_fields(e: Any) -> set[str]:
        entry = next((m for m in e.managed_fields if m.get("subresource") == "status"), None)
        return field_paths(entry["fieldsV1"]) if entry else set()

    # The controller writes its status in steps: wait for the one with observedGeneration.
    until(
        "the controller's status",
        lambda: [
            e for e in rec.of("app", "MODIFIED")
            if "status.observedGeneration" in status_fields(e)
        ],
    )  # fmt: skip
    assert {e.meta.fields for e in rec.of("app")} == {first.meta.fields}

    # Deletion arrives, and leaves the cache.
    cluster.kubectl("delete", "configmap", "web", "-n", namespace, "--wait=false")
    gone = until("web to be DELETED", lambda: rec.of("web", "DELETED"))[0]
    assert gone.meta.uid == added.meta.uid
    assert watcher.get(ref) is None

    assert rec.names() == {"web", "app"}, "an object without the sync's label was seen"
    assert watcher.get(ObjRef("", "ConfigMap", namespace, "plain")) is None
    assert watcher.kinds() == {CM: "synced", DEPLOYMENT: "synced"}
    assert rec.relists == []


def test_kinds_not_served_wait_and_retain_and_close_stop_threads_at_once(
    kube: Kube, make_watcher: Callable[..., tuple[Watcher, Recorder]]
) -> None:
    watcher, _ = make_watcher()
    watcher.watch(*CM)
    watcher.watch("", "Secret")
    watcher.watch("example.invalid", "Nothing")
    synced(watcher, CM, ("", "Secret"))
    until(
        "the unknown kind to be unwatchable",
        lambda: watcher.kinds()[("example.invalid", "Nothing")] == "unwatchable: not served",
    )
    assert {"watch-ConfigMap", "watch-Secret", "watch-Nothing.example.invalid"} <= set(
        watch_threads()
    )

    started = time.monotonic()
    watcher.retain([CM])
    until("the other watches to stop", lambda: watch_threads() == ["watch-ConfigMap"], 2)
    print(f"retain stopped two watches in {time.monotonic() - started:.2f}s")
    assert list(watcher.kinds()) == [CM]

    started = time.monotonic()
    watcher.close()
    took = time.monotonic() - started
    print(f"close took {took:.2f}s")
    assert took < 2, f"close() took {took:.1f}s"
    assert watch_threads() == []


# --- 2. connections lost ------------------------------------------------------------


class CuttableProxy:
    """A TCP proxy on loopback to the API server. `cut()` resets every relayed
    connection and every new one (an RST, as a network failure would) until
    `restore()`; the API server itself keeps running."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self._cut = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads = [threading.Thread(target=self._accept, name="proxy", daemon=True)]
        self._threads[0].start()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for s in list(self._open):
                _reset(s)

    def restore(self) -> None:
        self._cut.clear()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            if self._cut.is_set():
                _reset(conn)
                continue
            relay = threading.Thread(target=self._relay, args=(conn,), name="proxy", daemon=True)
            self._threads.append(relay)
            relay.start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, 10)
        except OSError:
            _reset(client)
            return
        with self._lock:
            self._open |= {client, upstream}
        peer = {client: upstream, upstream: client}
        try:
            while not self._stopped.is_set() and not self._cut.is_set():
                readable, _, _ = select.select([client, upstream], [], [], 0.1)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        return
                    peer[s].sendall(data)
        except OSError:
            return
        finally:
            with self._lock:
                self._open -= {client, upstream}
            _reset(client)
            _reset(upstream)

    def stop(self) -> None:
        self._stopped.set()
        for t in self._threads:
            t.join(5)
        self.sock.close()


def _reset(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()


@pytest.fixture
def proxy_kube(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[Kube, CuttableProxy]]:
    """A Kube that reaches the API server through a CuttableProxy."""
    cfg = json.loads(cluster.kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    server = cfg["clusters"][0]["cluster"]["server"]
    u = urlsplit(server)
    assert u.hostname == "127.0.0.1", "the proxy serves a certificate for 127.0.0.1"
    ca = cfg["clusters"][0]["cluster"].get("certificate-authority")
    token = cfg["users"][0]["user"].get("token")
    if not ca or not token:
        pytest.skip("the proxy test needs a token and a CA file in the kubeconfig")
    proxy = CuttableProxy(("127.0.0.1", int(u.port or 443)))
    kubeconfig = tmp_path / "proxied.kubeconfig"
    write_kubeconfig(kubeconfig, f"https://127.0.0.1:{proxy.port}", Path(ca), token, "admin")
    k = Kube(load_configuration(kubeconfig=str(kubeconfig)))
    try:
        yield k, proxy
    finally:
        k.close()
        proxy.stop()


def test_changes_made_while_the_watch_was_cut_off_arrive_after_it_reconnects(
    kube: Kube,
    namespace: str,
    sync_name: str,
    proxy_kube: tuple[Kube, CuttableProxy],
    make_watcher: Callable[..., tuple[Watcher, Recorder]],
) -> None:
    through_proxy, proxy = proxy_kube
    for name in ("keep", "edit", "drop"):
        apply(kube, config_map(name, namespace, sync_name, a="1"))
    watcher, rec = make_watcher(through_proxy)
    watcher.watch(*CM)
    synced(watcher, CM)
    assert watcher.stats().objects == 3
    uid = watcher.get(ObjRef("", "ConfigMap", namespace, "drop")).uid  # type: ignore[union-attr]

    proxy.cut()
    until("the watch to notice", lambda: not watcher.synced(*CM), 10)
    state = watcher.kinds()[CM]
    assert state.startswith("backoff: "), state
    # The cluster changes while nobody watches.
    apply(kube, config_map("edit", namespace, sync_name, a="2"), manager="someone")
    kube.request("DELETE", f"/api/v1/namespaces/{namespace}/configmaps/drop")
    apply(kube, config_map("new", namespace, sync_name, a="1"))
    time.sleep(1)
    assert rec.events == []
    proxy.restore()

    synced(watcher, CM)
    until(
        "the three changes",
        lambda: {e.meta.ref.name for e in rec.events} >= {"edit", "drop", "new"},
    )
    edit = rec.of("edit")[-1]
    assert edit.type == "MODIFIED"
    assert owners(edit.managed_fields, "data.a") == ["someone"]
    assert edit.meta.fields is not None and "data.a" not in field_paths(edit.meta.fields)
    dropped = rec.of("drop")[-1]
    assert (dropped.type, dropped.meta.uid) == ("DELETED", uid)
    assert rec.of("new")[-1].type == "ADDED"
    assert rec.of("keep") == []
    print(f"reconnected with relists={rec.relists} stats={watcher.stats()}")


def test_watches_resume_after_the_api_server_restarts(
    cluster: Cluster,
    kube: Kube,
    namespace: str,
    sync_name: str,
    make_watcher: Callable[..., tuple[Watcher, Recorder]],
) -> None:
    if cluster.control_plane is None:
        pytest.skip("restarting kube-apiserver needs the local control plane")
    control_plane = cluster.control_plane
    apply(kube, config_map("web", namespace, sync_name, a="1"))
    watcher, rec = make_watcher()
    watcher.watch(*CM)
    synced(watcher, CM)

    try:
        control_plane.stop_apiserver(grace=2)
        until("the watch to notice", lambda: not watcher.synced(*CM), 20)
        down = watcher.kinds()[CM]
        assert down.startswith("backoff: "), down
        time.sleep(2)
    finally:
        if "kube-apiserver" not in control_plane.pids:
            control_plane.start_apiserver()
    print(f"while down: {down}")

    synced(watcher, CM, timeout=60)
    apply(kube, config_map("web", namespace, sync_name, a="2"), manager="someone")
    apply(kube, config_map("after", namespace, sync_name, a="1"))
    until("the change made after the restart", lambda: rec.of("after", "ADDED"), 60)
    edit = until("the edit", lambda: rec.of("web", "MODIFIED"), 60)[-1]
    assert owners(edit.managed_fields, "data.a") == ["someone"]
    # Whether it resumed from its resourceVersion or was told it is too old (410)
    # and listed again depends on the new API server's watch cache; either way
    # nothing was lost. Say which.
    print(f"after the restart: relists={rec.relists} stats={watcher.stats()}")


def test_the_real_api_server_answers_a_too_old_version_with_410(kube: Kube) -> None:
    """The protocol the watch relies on: a version older than the watch cache
    holds is answered with 410 Gone, as a status or as an ERROR event."""
    try:
        stream = kube.stream(
            "/api/v1/configmaps",
            query={"watch": "true", "resourceVersion": "1", "timeoutSeconds": "5"},
            accept="application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
        )
    except Exception as e:  # a 410 status
        assert getattr(e, "status", None) == 410, e
        return
    try:
        first = json.loads(next(iter(stream.lines(1 << 20))))
    finally:
        stream.close()
    assert first["type"] == "ERROR", first
    assert first["object"]["code"] == 410, first
    print(f"the API server said: {first['object']['message']}")


# --- 3. memory ---------------------------------------------------------------------


def test_memory_for_1000_objects_is_small_and_measured(
    kube: Kube,
    namespace: str,
    sync_name: str,
    make_watcher: Callable[..., tuple[Watcher, Recorder]],
) -> None:
    n = 1000

    def make(i: int) -> None:
        apply(kube, config_map(f"cm-{i:04d}", namespace, sync_name, a="1", b="2", c="3"))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(make, range(n)))

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        watcher, rec = make_watcher(options=WatchOptions(page_size=200))
        watcher.watch(*CM)
        synced(watcher, CM, timeout=120)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    held = sum(
        s.size_diff
        for s in after.compare_to(before, "filename")
        if "gitferry" in s.traceback[0].filename or "json" in s.traceback[0].filename
    )
    total = sum(s.size_diff for s in after.compare_to(before, "filename"))
    stats = watcher.stats()
    assert stats.objects == n
    assert rec.events == []  # the first LIST reports nothing
    one = watcher.get(ObjRef("", "ConfigMap", namespace, "cm-0000"))
    assert one is not None and one.fields is not None
    print(
        f"{n} ConfigMaps: stats.bytes={stats.bytes} ({stats.bytes / n:.0f} B/object, "
        f"fields {len(one.fields)} B); traced Python memory held after the LIST: "
        f"{total} B in all ({total / n:.0f} B/object), {held} B in gitferry and json"
    )
    # Bounded: the strings of a small object, not the object; Python's overhead
    # on top stays under 2 KiB an object.
    assert stats.bytes / n < 1024
    assert total / n < 4096
