"""The watch library: field sets read as paths, who owns a path, the Meta a watch
keeps, and the ways a watch fails — 410 Gone, 403, 5xx, a dropped connection,
an event too large — against a loopback server that speaks the watch protocol
(tests/unit/watchapi.py). What the real API server does is proven by
tests/e2e/test_watch_library.py."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gitferry.kube import Discovery, Kube, ObjRef, load_configuration
from gitferry.kube.managedfields import apply_fields_json, canonical, field_paths, owners
from gitferry.kube.watch import Meta, Watcher, WatchEvent, WatchOptions
from tests.unit.watchapi import Gate, WatchAPI, bookmark, error_event, event, serve

SYNC_NAME = "gitferry.dev/sync-name"
SYNC_NAMESPACE = "gitferry.dev/sync-namespace"

# A Deployment's managedFields as the API server writes them: gitferry's apply,
# the controller's status and revision annotation, and `kubectl scale`.
GITFERRY = {
    "f:metadata": {
        "f:labels": {
            "f:app": {},
            f"f:{SYNC_NAME}": {},
            f"f:{SYNC_NAMESPACE}": {},
        }
    },
    "f:spec": {
        "f:replicas": {},
        "f:selector": {},
        "f:template": {
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:containers": {
                    'k:{"name":"web"}': {
                        ".": {},
                        "f:image": {},
                        "f:name": {},
                        "f:ports": {
                            'k:{"containerPort":80,"protocol":"TCP"}': {
                                ".": {},
                                "f:containerPort": {},
                            }
                        },
                    }
                }
            },
        },
    },
}
MANAGED_FIELDS: list[dict[str, Any]] = [
    {
        "manager": "gitferry",
        "operation": "Apply",
        "apiVersion": "apps/v1",
        "time": "2025-01-01T00:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": GITFERRY,
    },
    {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "time": "2025-01-01T00:00:01Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {"f:annotations": {".": {}, "f:deployment.kubernetes.io/revision": {}}}
        },
    },
    {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "subresource": "status",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:status": {
                "f:conditions": {
                    ".": {},
                    'k:{"type":"Available"}': {".": {}, "f:status": {}, "f:type": {}},
                },
                "f:observedGeneration": {},
            }
        },
    },
    {
        "manager": "kubectl",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "subresource": "scale",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:replicas": {}}},
    },
    {
        "manager": "kubectl-patch",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "fieldsType": "FieldsV1",
        "fieldsV1": {
            "f:metadata": {"f:finalizers": {".": {}, 'v:"example.com/keep"': {}}},
        },
    },
]


# --- field sets as paths ---------------------------------------------------------


def test_a_field_set_reads_as_paths() -> None:
    assert field_paths(canonical(GITFERRY)) == {
        "metadata.labels.app",
        f'metadata.labels["{SYNC_NAME}"]',
        f'metadata.labels["{SYNC_NAMESPACE}"]',
        "spec.replicas",
        "spec.selector",
        "spec.template.metadata.labels.app",
        "spec.template.spec.containers[name=web]",
        "spec.template.spec.containers[name=web].image",
        "spec.template.spec.containers[name=web].name",
        "spec.template.spec.containers[name=web].ports[containerPort=80,protocol=TCP]",
        "spec.template.spec.containers[name=web].ports[containerPort=80,protocol=TCP].containerPort",
    }


def test_set_items_list_indexes_and_odd_names_have_a_spelling() -> None:
    fields = {
        "f:metadata": {
            "f:finalizers": {".": {}, 'v:"example.com/keep"': {}},
            "f:annotations": {"f:a.b/c d": {}},
        },
        "f:spec": {"f:args": {"i:0": {}}, "f:ports": {"v:8080": {}}},
    }
    assert field_paths(fields) == {
        "metadata.finalizers",
        "metadata.finalizers[=example.com/keep]",
        'metadata.annotations["a.b/c d"]',
        "spec.args[0]",
        "spec.ports[=8080]",
    }
    assert field_paths("{}") == set()


def test_owners_names_every_manager_of_a_path_once() -> None:
    assert owners(MANAGED_FIELDS, "spec.replicas") == ["gitferry", "kubectl"]
    assert owners(MANAGED_FIELDS, "status.observedGeneration") == ["kube-controller-manager"]
    assert owners(MANAGED_FIELDS, "spec.template.spec.containers[name=web].image") == ["gitferry"]
    assert owners(MANAGED_FIELDS, "spec.paused") == []


def test_the_apply_entry_is_canonical_json_of_the_main_resource_only() -> None:
    got = apply_fields_json(MANAGED_FIELDS, "gitferry")
    assert got == json.dumps(GITFERRY, sort_keys=True, separators=(",", ":"))
    # Key order in the API server's answer does not matter.
    reordered = [dict(MANAGED_FIELDS[0], fieldsV1=reversed_keys(GITFERRY))]
    assert apply_fields_json(reordered, "gitferry") == got
    assert apply_fields_json(MANAGED_FIELDS, "kube-controller-manager") is None  # Update only
    status_apply = [dict(MANAGED_FIELDS[0], subresource="status")]
    assert apply_fields_json(status_apply, "gitferry") is None
    assert apply_fields_json([], "gitferry") is None


def reversed_keys(d: dict[str, Any]) -> dict[str, Any]:
    return {k: reversed_keys(v) if isinstance(v, dict) else v for k, v in reversed(d.items())}


# --- the watch against the loopback server ------------------------------------------


def cm(name: str, *, labels: dict[str, str] | None = None, fields: dict[str, Any] | None = None,
       **extra: Any) -> dict[str, Any]:  # fmt: skip
    mf = [dict(MANAGED_FIELDS[0], apiVersion="v1", fieldsV1=fields or {"f:data": {"f:a": {}}})]
    return {
        "name": name,
        "namespace": "apps",
        "uid": f"uid-{name}",
        "labels": {SYNC_NAME: "web", SYNC_NAMESPACE: "apps", "team": "x", **(labels or {})},
        "managedFields": mf,
        **extra,
    }


CM = ("", "ConfigMap")
FAST = WatchOptions(backoff_min=0.01, backoff_max=0.05, forbidden_retry=0.2, unwatchable_retry=0.2)


class Recorder:
    def __init__(self) -> None:
        self.events: list[WatchEvent] = []
        self.relists: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def on_event(self, ev: WatchEvent) -> None:
        with self.lock:
            self.events.append(ev)

    def on_relist(self, gk: tuple[str, str]) -> None:
        with self.lock:
            self.relists.append(gk)

    def seen(self) -> list[tuple[str, str]]:
        with self.lock:
            return [(e.type, e.meta.ref.name) for e in self.events]


def until(what: str, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = fn()
        if got:
            return got
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}; last: {fn()!r}")


@pytest.fixture
def api() -> Iterator[WatchAPI]:
    yield from serve()


@pytest.fixture
def make(api: WatchAPI, tmp_path: Path) -> Iterator[Callable[..., tuple[Watcher, Recorder]]]:
    made: list[Watcher] = []
    kube = Kube(load_configuration(kubeconfig=str(api.kubeconfig(tmp_path))))

    def make_(
        options: WatchOptions = FAST,
        impersonate: str | None = None,
        on_event: Callable[[WatchEvent], None] | None = None,
    ) -> tuple[Watcher, Recorder]:
        rec = Recorder()
        w = Watcher(
            kube.as_user(impersonate),
            Discovery(kube),
            label_selector=SYNC_NAME,
            field_manager="gitferry",
            keep_labels=[SYNC_NAME, SYNC_NAMESPACE],
            on_event=on_event or rec.on_event,
            on_relist=rec.on_relist,
            options=options,
        )
        made.append(w)
        return w, rec

    yield make_
    for w in made:
        w.close(timeout=2)
    kube.close()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("watch-")]


def ref(name: str) -> ObjRef:
    return ObjRef("", "ConfigMap", "apps", name)


def test_the_first_list_fills_the_cache_quietly_and_events_follow(
    api: WatchAPI, make: Callable[..., tuple[Watcher, Recorder]]
) -> None:
    api.put(cm("a"))
    gate = Gate()
    b = cm("b")
    api.watch(
        event("ADDED", {**b, "resourceVersion": "102"}),
        event(
            "MODIFIED",
            {**cm("a", deletionTimestamp="2025-01-01T00:00:00Z"), "resourceVersion": "103"},
        ),
        bookmark("110"),
        gate,
        event("DELETED", {**b, "resourceVersion": "111"}),
    )
    w, rec = make(impersonate="someone")
    w.watch(*CM)
    w.watch(*CM)  # once is enough
    until("the watch to be synced", lambda: w.synced(*CM))
    meta = w.get(ref("a"))
    assert meta == Meta(
        ref=ref("a"),
        uid="uid-a",
        resource_version="101",
        labels={SYNC_NAME: "web", SYNC_NAMESPACE: "apps"},  # only the kept keys
        fields=canonical({"f:data": {"f:a": {}}}),
        deleting=False,
    )
    until("two events", lambda: len(rec.seen()) == 2)
    assert rec.seen() == [("ADDED", "b"), ("MODIFIED", "a")]
    assert w.get(ref("a")).deleting  # type: ignore[union-attr]
    assert rec.events[0].managed_fields == b["managedFields"]
    gate.go()
    until("the deletion", lambda: w.get(ref("b")) is None)
    assert rec.seen()[-1] == ("DELETED", "b")
    # The server ended that watch: the next one starts from the last event's version.
    until("a second watch", lambda: len(api.watches()) >= 2)
    first, second = api.watches()[:2]
    assert first.query["resourceVersion"] == "101"  # the list's
    assert second.query["resourceVersion"] == "111"
    assert first.query["labelSelector"] == SYNC_NAME
    assert first.query["allowWatchBookmarks"] == "true"
    assert "PartialObjectMetadata;" in first.headers["Accept"]
    assert "PartialObjectMetadataList" in api.lists()[0].headers["Accept"]
    # The watch runs as the operator, whoever the given Kube impersonated.
    assert not [r for r in api.requests if "Impersonate-User" in r.headers]
    assert rec.relists == []
    stats = w.stats()
    assert (stats.watches, stats.objects, stats.events, stats.relists) == (1, 1, 3, 0)
    assert stats.bytes == w.get(ref("a")).size  # type: ignore[union-attr]
    assert w.kinds() == {CM: "synced"}


def test_a_410_error_event_relists_and_reports_what_changed_meanwhile(
    api: WatchAPI, make: Callable[..., tuple[Watcher, Recorder]]
) -> None:
    api.put(cm("a"))
    api.put(cm("b"))
    api.put(cm("same"))
    gate = Gate()
    api.watch(gate, error_event(410))
    w, rec = make()
    w.watch(*CM)
    until("the gate", gate.reached.is_set)
    assert w.synced(*CM)
    # While the watch says nothing: a changes hands, b goes, c comes.
    api.put(cm("a", fields={"f:data": {}}))
    del api.objects["b"]
    api.put(cm("c"))
    gate.go()
    until("the relist", lambda: rec.relists)
    assert rec.relists == [CM]
    assert sorted(rec.seen()) == [("ADDED", "c"), ("DELETED", "b"), ("MODIFIED", "a")]
    by_name = {e.meta.ref.name: e for e in rec.events}
    assert by_name["a"].meta.fields == canonical({"f:data": {}})
    assert by_name["a"].managed_fields[0]["manager"] == "gitferry"
    assert by_name["b"].meta.uid == "uid-b"  # from the cache: it is gone
    assert by_name["b"].managed_fields == []
    assert w.get(ref("b")) is None and w.get(ref("c")) is not None
    assert w.stats().relists == 1
    until("synced again", lambda: w.synced(*CM))


def test_a_410_status_relists_too(
    api: WatchAPI, make: Callable[..., tuple[Watcher, Recorder]]
) -> None:
    api.put(cm("a"))
    api.watch(410)
    w, rec = make()
    w.watch(*CM)
    until("the relist", lambda: rec.relists)
    assert len(api.lists()) == 2
    assert rec.events == []  # nothing changed


def test_a_recreated_object_is_deleted_then_added(
    api: WatchAPI, make: Callable[..., tuple[Watcher, Recorder]]
) -> None:
    api.put(cm("a"))
    gate = Gate()
    api.watch(gate, error_event(410))
    w, rec = make()
    w.watch(*CM)
    until("the gate", gate.reached.is_set)
    api.put(cm("a", uid="uid-a-2"))
    gate.go()
    until("the relist", lambda: rec.relists)
    assert [(e.type, e.meta.uid) for e in rec.events] == [
        ("DELETED", "uid-a"),
        ("ADDED", "uid-a-2"),
    ]


def test_a_broken_connection_resumes_from_its_version_without_a_relist(
    api: WatchAPI, make: Callable[..., tuple[Watcher, Recorder]]
) -> None:
    api.put(cm("a"))
    api.watch(event("MODIFIED", {**cm("a"), "resourceVersion": "150"}), b"DROP")
    api.watch(500)
    api.watch(503)
    w, rec = make()
    w.watch(*CM)
    until("the fourth watch", lambda: len(api.watches()) >= 4)
    assert [r.query["resourceVersion"] for r in api.watches()[:4]] == ["101", "150", "150", "150"]
    until("synced again", lambda: w.synced(*CM))
    assert len(api.lists()) == 1 and rec.relists == []
    assert rec.seen() == [("MODIFIED", "a")]


def test_backoff_shows_in_the_state(
    api: WatchAPI, make: Callable[..., tuple[Watcher, Recorder]]
) -> None:
    api.watch(500)
    w, _ = make(WatchOptions(backoff_min=1.0, backoff_max=1.0))
    w.watch(*CM)
    state = until("backoff", lambda: w.kinds()[CM].startswith("backoff") and w.kinds()[CM])
    assert "fake 500" in state
    assert not w.synced(*CM)
    until("synced after the backoff", lambda: w.synced(*CM))


def test_forbidden_is_a_state_and_is_tried_again(
    api: WatchAPI, make: Callable[..., tuple[Watcher, Recorder]]
) -> None:
    api.list_status = [403]
    w, _ = make()
    w.watch(*CM)
    state = until("forbidden", lambda: w.kinds()[CM].startswith("forbidden") and w.kinds()[CM])
    assert state == "forbidden: fake 403"
    assert not w.synced(*CM)
    until("synced once allowed", lambda: w.synced(*CM))  # forbidden_retry is 0.2 s here


def test_an_event_too_large_is_dropped_and_relisted(
    api: WatchAPI, make: Callable[..., tuple[Watcher, Recorder]]
) -> None:
    api.put(cm("a"))
    huge = cm("a", annotations={"big": "x" * 5000})
    api.watch(event("MODIFIED", {**huge, "resourceVersion": "120"}))
    w, rec = make(WatchOptions(max_line_bytes=4096, backoff_min=0.01, backoff_max=0.05))
    w.watch(*CM)
    until("the relist", lambda: rec.relists)
    assert rec.events == []  # the relist found a unchanged (the event never happened here)


def test_kinds_that_cannot_be_watched_say_why(
    make: Callable[..., tuple[Watcher, Recorder]],
) -> None:
    w, _ = make()
    w.watch("example.com", "Widget")
    w.watch("example.com", "Review")
    until(
        "both unwatchable",
        lambda: (
            w.kinds()
            == {
                ("example.com", "Widget"): "unwatchable: not served",
                ("example.com", "Review"): "unwatchable: cannot be listed and watched",
            }
        ),
    )
    assert not w.synced("example.com", "Widget")


def test_retain_stops_the_watches_of_other_kinds_and_drops_their_objects(
    api: WatchAPI, make: Callable[..., tuple[Watcher, Recorder]]
) -> None:
    api.put(cm("a"))
    w, _ = make()
    w.watch(*CM)
    w.watch("example.com", "Widget")
    until("synced", lambda: w.synced(*CM))
    w.retain([("example.com", "Widget")])
    assert w.get(ref("a")) is None and list(w.kinds()) == [("example.com", "Widget")]
    until("the ConfigMap thread to end", lambda: "watch-ConfigMap" not in _threads())
    assert "watch-Widget.example.com" in _threads()
    w.retain([])
    until("no thread", lambda: not [t for t in _threads() if t.startswith("watch-")])
    assert w.stats().watches == 0


def test_close_ends_an_idle_watch_at_once(
    api: WatchAPI, make: Callable[..., tuple[Watcher, Recorder]]
) -> None:
    api.put(cm("a"))
    w, _ = make()
    w.watch(*CM)
    until("synced", lambda: w.synced(*CM))  # the watch is open, and quiet
    started = time.monotonic()
    w.close()
    assert time.monotonic() - started < 1.0
    assert "watch-ConfigMap" not in _threads()
    w.watch(*CM)  # closed: nothing starts
    assert w.kinds() == {}


def test_a_callback_that_fails_does_not_end_the_watch(
    api: WatchAPI, make: Callable[..., tuple[Watcher, Recorder]]
) -> None:
    api.put(cm("a"))
    api.watch(event("MODIFIED", {**cm("a"), "resourceVersion": "150"}),
              event("MODIFIED", {**cm("a"), "resourceVersion": "151"}))  # fmt: skip
    calls: list[str] = []

    def boom(ev: WatchEvent) -> None:
        calls.append(ev.meta.resource_version)
        raise RuntimeError("a bug in the caller")

    w, _ = make(on_event=boom)
    w.watch(*CM)
    until("both events", lambda: len(calls) == 2)
    assert w.get(ref("a")).resource_version == "151"  # type: ignore[union-attr]


def _threads() -> list[str]:
    return [t.name for t in threading.enumerate()]
