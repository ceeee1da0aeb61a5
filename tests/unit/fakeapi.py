"""An in-memory Kubernetes API server, small enough to read, for policy tests.

`FakeKube` stands in for `gitferry.kube.Kube` (same `request`, `as_user`,
`close`), so the real `Discovery`, `Engine`, `Pruner` and finalizer run against
it in milliseconds. It is a double for *policy*: what gitferry decides to read,
write, keep and delete. What the cluster itself does (field ownership, garbage
collection timing, admission, RBAC) is proven by the e2e suite against a real
kube-apiserver.

What it serves, as the real server does for these cases:

- aggregated discovery (`GET /api`, `GET /apis` with the apidiscovery v2 Accept
  header) for a fixed set of built-in kinds plus every CustomResourceDefinition
  stored (a CRD written becomes Established and discoverable at once; a CRD
  deleted takes its objects with it);
- GET of an object, LIST (all namespaces or one) with an equality
  `labelSelector` (`k=v,k2!=v2,k,!k`); list items of built-in kinds carry no
  apiVersion/kind;
- PATCH `application/apply-patch+yaml` (server-side apply, simplified: the body
  is merged into the object as a JSON merge patch would be; no field ownership,
  so a field git drops is not removed), `dryRun=All`, `fieldManager` required;
- PATCH `application/merge-patch+json` (RFC 7386) on the object or its
  `/status`, with `metadata.resourceVersion` / `metadata.uid` as preconditions;
- PATCH `application/json-patch+json` (RFC 6902: add, remove, replace, test; a
  failed test is a 422 in the API server's words); `managedFields` are stored
  as written (by `seed` or a JSON patch), never computed;
- DELETE with `preconditions` (uid, resourceVersion); an object with
  `metadata.finalizers` only gets a deletionTimestamp; a Namespace takes its
  contents with it, an owner its dependents (unless `propagationPolicy: Orphan`);
- POST (create; Events);
- a change that changes nothing is not written: resourceVersion stays;
  every real change takes the next resourceVersion; `generation` moves when
  anything outside metadata and status changes;
- namespaced objects cannot be created in a missing or terminating Namespace;
- validation that gitferry's recreate policy depends on: Deployment
  `spec.selector` and CRD `spec.scope` are immutable ("field is immutable"),
  a StatefulSet refuses spec changes outside its updatable fields (the
  "Forbidden: updates to statefulset spec for fields other than …" wording), a
  PersistentVolumeClaim's spec is immutable but for its resources.

Tests steer it with `fail(...)` (inject an API error), `before(...)` (change
the cluster just before a request, e.g. recreate an object between a read and a
delete), `seed(...)` (objects as they are, no request recorded) and read it back
with `object(...)`, `calls`, `writes(...)` and `events()`.
"""

from __future__ import annotations

import copy
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import unquote

import yaml

from gitferry.deadline import Deadline
from gitferry.kube import APPLY_PATCH, MERGE_PATCH, Kube, KubeError
from gitferry.kube.client import JSON_PATCH

Obj = dict[str, Any]

AGGREGATED = "as=APIGroupDiscoveryList"
ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")

_REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass(frozen=True)
class Kind:
    """One kind the fake serves, at one or more versions (the preferred first)."""

    group: str
    versions: tuple[str, ...]
    kind: str
    plural: str
    namespaced: bool
    builtin: bool = True  # list items of built-in kinds carry no apiVersion/kind

    def api_version(self, version: str | None = None) -> str:
        v = version or self.versions[0]
        return f"{self.group}/{v}" if self.group else v


BUILTIN_KINDS = (
    Kind("", ("v1",), "Namespace", "namespaces", False),
    Kind("", ("v1",), "ConfigMap", "configmaps", True),
    Kind("", ("v1",), "Secret", "secrets", True),
    Kind("", ("v1",), "Service", "services", True),
    Kind("", ("v1",), "ServiceAccount", "serviceaccounts", True),
    Kind("", ("v1",), "PersistentVolumeClaim", "persistentvolumeclaims", True),
    Kind("", ("v1",), "Event", "events", True),
    Kind("apps", ("v1",), "Deployment", "deployments", True),
    Kind("apps", ("v1",), "ReplicaSet", "replicasets", True),
    Kind("apps", ("v1",), "StatefulSet", "statefulsets", True),
    Kind(
        "apiextensions.k8s.io",
        ("v1",),
        "CustomResourceDefinition",
        "customresourcedefinitions",
        False,
    ),
)

# Fields that can never change, with the API server's words.
_IMMUTABLE: dict[tuple[str, str], tuple[tuple[str, ...], ...]] = {
    ("apps", "Deployment"): (("spec", "selector"),),
    ("apps", "ReplicaSet"): (("spec", "selector"),),
    ("apiextensions.k8s.io", "CustomResourceDefinition"): (("spec", "scope"),),
}
_STATEFULSET_UPDATABLE = {
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
}
STATEFULSET_FORBIDDEN = (
    "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', "
    "'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' "
    "are forbidden"
)
PVC_FORBIDDEN = (
    "spec: Forbidden: spec is immutable after creation except resources.requests and "
    "volumeAttributesClassName for bound claims"
)

# Kinds whose spec is fixed but for some fields: (the updatable fields, the words).
_FIXED_SPEC: dict[tuple[str, str], tuple[set[str], str]] = {
    ("apps", "StatefulSet"): (_STATEFULSET_UPDATABLE, STATEFULSET_FORBIDDEN),
    ("", "PersistentVolumeClaim"): ({"resources"}, PVC_FORBIDDEN),
}


# --- manifests tests build -----------------------------------------------------
def manifest(api_version: str, kind: str, name: str, namespace: str = "", **fields: Any) -> Obj:
    """`{"apiVersion", "kind", "metadata": {name, namespace}, **fields}`; `labels=`
    and `annotations=` go into metadata."""
    meta: Obj = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    for key in ("labels", "annotations", "ownerReferences", "finalizers", "deletionTimestamp"):
        if key in fields:
            meta[key] = fields.pop(key)
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **fields}


def crd_manifest(
    group: str,
    kind: str,
    plural: str,
    *,
    namespaced: bool = True,
    versions: Iterable[str] = ("v1",),
    **fields: Any,
) -> Obj:
    return manifest(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        f"{plural}.{group}",
        spec={
            "group": group,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "scope": "Namespaced" if namespaced else "Cluster",
            "versions": [
                {"name": v, "served": True, "storage": i == 0} for i, v in enumerate(versions)
            ],
        },
        **fields,
    )


# The operator's own CRD and a sample kind of another team, installed by default.
GITFERRY_CRD = crd_manifest(
    "gitferry.dev", "GitRepositorySync", "gitrepositorysyncs", versions=("v1alpha1",)
)
WIDGET_CRD = crd_manifest("example.com", "Widget", "widgets")


# --- the record of what was asked ---------------------------------------------
@dataclass(frozen=True)
class Call:
    """One request as the API server saw it; `user` is the impersonated identity."""

    method: str
    path: str
    query: Mapping[str, str]
    user: str | None
    body: Any = None
    content_type: str | None = None

    @property
    def dry_run(self) -> bool:
        return self.query.get("dryRun") == "All"

    @property
    def write(self) -> bool:
        """A request that changes (or would change) the cluster for real."""
        return self.method in ("PATCH", "PUT", "POST", "DELETE") and not self.dry_run

    def __str__(self) -> str:
        flags = " dryRun" if self.dry_run else ""
        who = f" as {self.user}" if self.user else ""
        return f"{self.method} {self.path}{flags}{who}"


_ANY: Any = object()


@dataclass
class _Fault:
    method: str
    path_prefix: str
    error: KubeError
    times: int | None
    user: str | None
    dry_run: bool | None

    def matches(self, call: Call) -> bool:
        return (
            self.method in ("*", call.method)
            and call.path.startswith(self.path_prefix)
            and (self.user is _ANY or self.user == call.user)
            and (self.dry_run is None or self.dry_run == call.dry_run)
            and (self.times is None or self.times > 0)
        )


@dataclass
class _Hook:
    method: str
    path_prefix: str
    action: Callable[[], None]
    times: int


@dataclass
class _State:
    lock: threading.RLock = field(default_factory=threading.RLock)
    kinds: dict[tuple[str, str], Kind] = field(default_factory=dict)  # (group, plural)
    objects: dict[tuple[str, str, str, str], Obj] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    faults: list[_Fault] = field(default_factory=list)
    hooks: list[_Hook] = field(default_factory=list)
    rv: int = 1000  # the cluster's (etcd's) latest resourceVersion
    namespace_defaults: bool = True
    closed: bool = False


def _err(status: int, message: str, reason: str = "", **details: Any) -> KubeError:
    return KubeError(status, reason or _REASONS.get(status, "Unknown"), message, details)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces.
    Shares the parts of `target` that `patch` does not touch: pass a copy."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _content(obj: Obj) -> Obj:
    """What `generation` counts: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}


def _selector(text: str) -> Callable[[Mapping[str, str]], bool]:
    """Equality-based label selectors: `k=v`, `k==v`, `k!=v`, `k`, `!k`."""
    tests: list[Callable[[Mapping[str, str]], bool]] = []
    for req in (r.strip() for r in text.split(",")):
        if not req:
            continue
        if re.search(r"\s(in|notin)\s", req) or "(" in req:
            raise _err(400, f"set-based selector {req!r} is not supported by the fake")
        if "!=" in req:
            k, v = (s.strip() for s in req.split("!=", 1))
            tests.append(lambda ls, k=k, v=v: ls.get(k) != v)
        elif "=" in req:
            k, v = (s.strip() for s in req.replace("==", "=").split("=", 1))
            tests.append(lambda ls, k=k, v=v: ls.get(k) == v)
        elif req.startswith("!"):
            key = req[1:].strip()
            tests.append(lambda ls, k=key: k not in ls)
        else:
            tests.append(lambda ls, k=req: k in ls)
    return lambda labels: all(t(labels) for t in tests)


def _version_priority(version: str) -> tuple[int, int, int, str]:
    """Kubernetes' version order: GA before beta before alpha, higher first."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0, version)
    stability = {"": 0, "beta": 1, "alpha": 2}[m.group(2) or ""]
    return (stability, -int(m.group(1)), -int(m.group(3) or 0), version)


@dataclass(frozen=True)
class _Target:
    kind: Kind
    version: str
    namespace: str
    name: str
    subresource: str

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.kind.group, self.kind.plural, self.namespace, self.name)


class FakeKube:
    """An in-memory API server behind the `gitferry.kube.Kube` interface.

    `as_user(user)` returns a view on the same cluster that records `user` as the
    impersonated identity of its requests; every helper works from any view."""

    def __init__(
        self,
        *,
        crds: Iterable[Obj] = (GITFERRY_CRD, WIDGET_CRD),
        namespaces: Iterable[str] = ("default", "kube-system"),
        namespace_defaults: bool = True,
    ) -> None:
        self._s = _State(namespace_defaults=namespace_defaults)
        self.impersonate: str | None = None
        for k in BUILTIN_KINDS:
            self._s.kinds[(k.group, k.plural)] = k
        self.seed(*crds)
        self.seed(*(manifest("v1", "Namespace", ns) for ns in namespaces))

    # --- the Kube interface ------------------------------------------------------
    @property
    def kube(self) -> Kube:
        """This fake, typed as what gitferry's code expects (it is duck-typed)."""
        return cast(Kube, self)

    def as_user(self, user: str | None) -> FakeKube:
        if user == self.impersonate:
            return self
        view = object.__new__(FakeKube)
        view._s = self._s
        view.impersonate = user
        return view

    def close(self) -> None:
        self._s.closed = True

    def request(
        self,
        method: str,
        path: str,
        *,
        deadline: Deadline | None = None,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str | None = None,
        accept: str = "application/json",
    ) -> dict[str, Any]:
        if deadline is not None:
            deadline.remaining(f"{method} {path}")
        call = Call(
            method.upper(),
            path,
            dict(query or {}),
            self.impersonate,
            copy.deepcopy(body),
            content_type,
        )
        with self._s.lock:
            if self._s.closed:
                raise _err(0, f"{method} {path}: the client was closed", "ConnectionError")
            self._s.calls.append(call)
            for hook in list(self._s.hooks):
                if hook.method in ("*", call.method) and path.startswith(hook.path_prefix):
                    hook.times -= 1
                    if hook.times <= 0:
                        self._s.hooks.remove(hook)
                    hook.action()
            for fault in self._s.faults:
                if fault.matches(call):
                    if fault.times is not None:
                        fault.times -= 1
                    raise fault.error
            return copy.deepcopy(self._handle(call, accept))

    # --- steering ------------------------------------------------------------------
    def fail(
        self,
        method: str,
        path_prefix: str,
        status: int,
        message: str,
        *,
        times: int | None = 1,
        reason: str = "",
        user: str | None = _ANY,
        dry_run: bool | None = None,
    ) -> None:
        """The next `times` requests (None: all) with this method ("*": any) whose
        path starts with `path_prefix` fail with `KubeError(status, reason, message)`;
        `user` and `dry_run` narrow which requests match."""
        with self._s.lock:
            self._s.faults.append(
                _Fault(
                    method.upper(), path_prefix, _err(status, message, reason), times, user, dry_run
                )
            )

    def before(
        self, method: str, path_prefix: str, action: Callable[[], None], *, times: int = 1
    ) -> None:
        """Run `action` (e.g. `fake.seed(...)`) just before the next matching request."""
        with self._s.lock:
            self._s.hooks.append(_Hook(method.upper(), path_prefix, action, times))

    def seed(self, *objs: Obj) -> list[Obj]:
        """Store objects as given (no request recorded, no validation): a fresh
        resourceVersion, and uid, creationTimestamp and generation when absent; a
        CRD becomes Established and served. Returns the stored copies."""
        stored = []
        with self._s.lock:
            for obj in objs:
                kind = self.kind_of(obj["apiVersion"], obj["kind"])
                new = copy.deepcopy(obj)
                meta = new.setdefault("metadata", {})
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", _now())
                meta.setdefault("generation", 1)
                meta["resourceVersion"] = self._next_rv()
                ns = meta.get("namespace", "") if kind.namespaced else ""
                if not kind.namespaced:
                    meta.pop("namespace", None)
                self._store(kind, ns, meta["name"], new)
                stored.append(copy.deepcopy(new))
        return stored

    def remove(self, api_version: str, kind: str, name: str, namespace: str = "") -> None:
        """Make an object vanish at once (no request recorded, no cascade)."""
        k = self.kind_of(api_version, kind)
        with self._s.lock:
            self._s.objects.pop((k.group, k.plural, namespace if k.namespaced else "", name), None)

    # --- reading back ----------------------------------------------------------------
    def kind_of(self, api_version: str, kind: str) -> Kind:
        group = api_version.rpartition("/")[0]
        with self._s.lock:
            for k in self._s.kinds.values():
                if k.group == group and k.kind == kind:
                    return k
        raise KeyError(f"the fake serves no {api_version} {kind}")

    def object(self, api_version: str, kind: str, name: str, namespace: str = "") -> Obj | None:
        """The stored object (a copy), or None."""
        k = self.kind_of(api_version, kind)
        with self._s.lock:
            obj = self._s.objects.get((k.group, k.plural, namespace if k.namespaced else "", name))
            return copy.deepcopy(obj) if obj is not None else None

    def objects(self, api_version: str, kind: str, namespace: str | None = None) -> list[Obj]:
        k = self.kind_of(api_version, kind)
        with self._s.lock:
            return [
                copy.deepcopy(o)
                for (g, p, ns, _), o in sorted(self._s.objects.items())
                if (g, p) == (k.group, k.plural) and namespace in (None, ns)
            ]

    def events(self, reason: str | None = None) -> list[Obj]:
        return [e for e in self.objects("v1", "Event") if reason in (None, e.get("reason"))]

    @property
    def calls(self) -> list[Call]:
        with self._s.lock:
            return list(self._s.calls)

    def writes(self, method: str | None = None, path_prefix: str = "") -> list[Call]:
        """Requests that changed (or tried to change) the cluster for real: no GETs,
        no dry-runs. Events count; filter with `method` / `path_prefix`."""
        return [
            c
            for c in self.calls
            if c.write and method in (None, c.method) and c.path.startswith(path_prefix)
        ]

    def forget_calls(self) -> None:
        with self._s.lock:
            self._s.calls.clear()

    # --- the server ----------------------------------------------------------------
    def _next_rv(self) -> str:
        self._s.rv += 1
        return str(self._s.rv)

    def _store(self, kind: Kind, namespace: str, name: str, obj: Obj) -> None:
        self._s.objects[(kind.group, kind.plural, namespace, name)] = obj
        if kind.kind == "CustomResourceDefinition":
            self._serve_crd(obj)
        if kind.kind == "Namespace" and self._s.namespace_defaults:
            # What kube-controller-manager puts in every namespace.
            for k, default in (
                (self._s.kinds[("", "serviceaccounts")], "default"),
                (self._s.kinds[("", "configmaps")], "kube-root-ca.crt"),
            ):
                key = (k.group, k.plural, name, default)
                if key not in self._s.objects:
                    self._s.objects[key] = {
                        "apiVersion": "v1",
                        "kind": k.kind,
                        "metadata": {
                            "name": default,
                            "namespace": name,
                            "uid": str(uuid.uuid4()),
                            "resourceVersion": self._next_rv(),
                            "creationTimestamp": _now(),
                        },
                    }

    def _serve_crd(self, crd: Obj) -> None:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        versions = sorted(
            (v["name"] for v in spec.get("versions") or [] if v.get("served", True)),
            key=_version_priority,
        )
        if not versions:
            return
        self._s.kinds[(spec["group"], names["plural"])] = Kind(
            spec["group"],
            tuple(versions),
            names["kind"],
            names["plural"],
            spec.get("scope", "Namespaced") == "Namespaced",
            builtin=False,
        )
        status = crd.setdefault("status", {})
        status["acceptedNames"] = copy.deepcopy(names)
        status["storedVersions"] = [
            v["name"] for v in spec.get("versions") or [] if v.get("storage")
        ]
        status["conditions"] = [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
        ]

    def _handle(self, call: Call, accept: str) -> Obj:
        if call.path in ("/api", "/apis"):
            if call.method != "GET":
                raise _err(405, f"{call.method} {call.path} is not allowed")
            return self._discovery(call.path, accept)
        t = self._target(call.path)
        if call.method == "GET":
            return self._list(t, call) if not t.name else self._out(t, self._get(t))
        if t.subresource and not (call.method == "PATCH" and t.subresource == "status"):
            raise _err(405, f"{call.method} on {t.subresource} is not supported by the fake")
        if call.method == "PATCH" and t.name:
            if call.content_type == APPLY_PATCH:
                return self._out(t, self._apply(t, call))
            if call.content_type == MERGE_PATCH:
                return self._out(t, self._merge(t, call))
            if call.content_type == JSON_PATCH:
                return self._out(t, self._json_patch(t, call))
            raise _err(
                415, f"the fake does not take {call.content_type!r} patches", "UnsupportedMediaType"
            )
        if call.method == "DELETE" and t.name:
            return self._out(t, self._delete(t, call))
        if call.method == "POST" and not t.name:
            return self._out(t, self._create(t, call))
        raise _err(405, f"{call.method} {call.path} is not allowed", "MethodNotAllowed")

    def _discovery(self, root: str, accept: str) -> Obj:
        core = root == "/api"
        kinds = [k for k in self._s.kinds.values() if (k.group == "") == core]
        if AGGREGATED not in accept:  # the legacy documents: not what gitferry reads
            if core:
                return {"kind": "APIVersions", "versions": ["v1"]}
            return {
                "kind": "APIGroupList",
                "groups": [{"name": g} for g in sorted({k.group for k in kinds})],
            }
        groups: dict[str, dict[str, list[Obj]]] = {}
        for k in kinds:
            for v in k.versions:
                groups.setdefault(k.group, {}).setdefault(v, []).append(
                    {
                        "resource": k.plural,
                        "responseKind": {"group": k.group, "version": v, "kind": k.kind},
                        "scope": "Namespaced" if k.namespaced else "Cluster",
                        "singularResource": k.kind.lower(),
                        "verbs": list(ALL_VERBS),
                        "subresources": [
                            {"subresource": "status", "verbs": ["get", "patch", "update"]}
                        ],
                    }
                )
        return {
            "kind": "APIGroupDiscoveryList",
            "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {},
            "items": [
                {
                    "metadata": {"name": g},
                    "versions": [
                        {"version": v, "resources": rs, "freshness": "Current"}
                        for v, rs in sorted(by_v.items(), key=lambda i: _version_priority(i[0]))
                    ],
                }
                for g, by_v in groups.items()
            ],
        }

    def _target(self, path: str) -> _Target:
        segs = [unquote(s) for s in path.strip("/").split("/")]
        if len(segs) >= 2 and segs[0] == "api":
            group, version, rest = "", segs[1], segs[2:]
        elif len(segs) >= 3 and segs[0] == "apis":
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise _err(404, f"the server could not find the requested resource ({path})")
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        if not 1 <= len(rest) <= 3:
            raise _err(404, f"the server could not find the requested resource ({path})")
        kind = self._s.kinds.get((group, rest[0]))
        if kind is None or version not in kind.versions:
            raise _err(404, f"the server could not find the requested resource ({path})")
        name = rest[1] if len(rest) > 1 else ""
        if name and kind.namespaced and not namespace:
            raise _err(404, f"the server could not find the requested resource ({path})")
        if namespace and not kind.namespaced:
            raise _err(404, f"the server could not find the requested resource ({path})")
        return _Target(kind, version, namespace, name, rest[2] if len(rest) > 2 else "")

    def _out(self, t: _Target, obj: Obj) -> Obj:
        obj = copy.deepcopy(obj)
        obj["apiVersion"] = t.kind.api_version(t.version)
        obj["kind"] = t.kind.kind
        return obj

    def _not_found(self, t: _Target) -> KubeError:
        return _err(
            404,
            f'{t.kind.plural}{"." + t.kind.group if t.kind.group else ""} "{t.name}" not found',
            name=t.name,
            kind=t.kind.plural,
        )

    def _get(self, t: _Target) -> Obj:
        obj = self._s.objects.get(t.key)
        if obj is None:
            raise self._not_found(t)
        return obj

    def _list(self, t: _Target, call: Call) -> Obj:
        match = _selector(call.query.get("labelSelector", ""))
        items = []
        for (g, p, ns, _), obj in sorted(self._s.objects.items()):
            if (g, p) != (t.kind.group, t.kind.plural) or t.namespace not in ("", ns):
                continue
            if not match((obj.get("metadata") or {}).get("labels") or {}):
                continue
            item = self._out(t, obj)
            if t.kind.builtin:
                item.pop("apiVersion")
                item.pop("kind")
            items.append(item)
        return {
            "apiVersion": t.kind.api_version(t.version),
            "kind": f"{t.kind.kind}List",
            "metadata": {"resourceVersion": str(self._s.rv)},
            "items": items,
        }

    def _check_body(self, t: _Target, body: Obj) -> None:
        if (
            body.get("apiVersion") != t.kind.api_version(t.version)
            or body.get("kind") != t.kind.kind
        ):
            raise _err(
                400,
                f"the API version and kind in the data ({body.get('apiVersion')}, "
                f"{body.get('kind')}) do not match the URL ({t.kind.api_version(t.version)}, "
                f"{t.kind.kind})",
            )
        meta = body.get("metadata") or {}
        if t.name and meta.get("name") not in (None, t.name):
            raise _err(
                400,
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({t.name})",
            )
        if t.kind.namespaced and meta.get("namespace") not in (None, "", t.namespace):
            raise _err(
                400,
                "the namespace of the provided object does not match the namespace sent on the request",
            )

    def _check_namespace(self, t: _Target) -> None:
        if not t.kind.namespaced:
            return
        ns = self._s.objects.get(("", "namespaces", "", t.namespace))
        if ns is None:
            raise _err(
                404, f'namespaces "{t.namespace}" not found', name=t.namespace, kind="namespaces"
            )
        if (ns.get("metadata") or {}).get("deletionTimestamp"):
            raise _err(
                403,
                f'{t.kind.plural} "{t.name}" is forbidden: unable to create new content in '
                f"namespace {t.namespace} because it is being terminated",
            )

    def _validate(self, t: _Target, old: Obj | None, new: Obj) -> None:
        prefix = (
            f'{t.kind.kind}{"." + t.kind.group if t.kind.group else ""} "{t.name}" is invalid: '
        )
        if old is None:
            return
        for path in _IMMUTABLE.get((t.kind.group, t.kind.kind), ()):
            before, after = _dig(old, path), _dig(new, path)
            if before != after:
                raise _err(
                    422, f"{prefix}{'.'.join(path)}: Invalid value: {after!r}: field is immutable"
                )
        fixed_spec = _FIXED_SPEC.get((t.kind.group, t.kind.kind))
        if fixed_spec:
            updatable, words = fixed_spec
            if _spec_without(old, updatable) != _spec_without(new, updatable):
                raise _err(422, prefix + words)

    def _preconditions(self, t: _Target, current: Obj, uid: Any, rv: Any) -> None:
        meta = current.get("metadata") or {}
        if uid and uid != meta.get("uid"):
            raise _err(
                409,
                f"Precondition failed: UID in precondition: {uid}, UID in object meta: {meta.get('uid')}",
            )
        if rv and rv != meta.get("resourceVersion"):
            raise _err(
                409,
                f'Operation cannot be fulfilled on {t.kind.plural} "{t.name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
            )

    def _write(self, t: _Target, old: Obj, new: Obj, call: Call) -> Obj:
        """Store `new` when it differs from `old` (and this is no dry-run)."""
        if new == old:
            return old  # a no-op is not written: resourceVersion stays
        meta = new.setdefault("metadata", {})
        if _content(new) != _content(old):
            meta["generation"] = int(meta.get("generation") or 1) + 1
        if call.dry_run:
            return new
        meta["resourceVersion"] = self._next_rv()
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(t.kind, t.namespace, t.name, "Background")
            return new
        self._store(t.kind, t.namespace, t.name, new)
        return new

    def _new_object(self, t: _Target, body: Obj, call: Call) -> Obj:
        self._check_namespace(t)
        new = copy.deepcopy(body)
        new.pop("status", None)
        meta = new.setdefault("metadata", {})
        for k in ("resourceVersion", "uid", "creationTimestamp", "deletionTimestamp", "generation"):
            meta.pop(k, None)
        meta["name"] = t.name
        if t.kind.namespaced:
            meta["namespace"] = t.namespace
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        if call.dry_run:
            return new
        meta["resourceVersion"] = self._next_rv()
        self._store(t.kind, t.namespace, t.name, new)
        return new

    def _apply(self, t: _Target, call: Call) -> Obj:
        body = yaml.safe_load(call.body) if isinstance(call.body, (str, bytes)) else call.body
        if not isinstance(body, dict):
            raise _err(400, "the apply body is not an object")
        if not call.query.get("fieldManager"):
            raise _err(
                400,
                "PATCH, application/apply-patch+yaml: fieldManager is required for apply requests",
            )
        self._check_body(t, body)
        current = self._s.objects.get(t.key)
        if current is None:
            created = copy.deepcopy(body)
            _record_apply(created, call.query["fieldManager"], body)
            return self._new_object(t, created, call)
        meta = body.get("metadata") or {}
        self._preconditions(t, current, meta.get("uid"), meta.get("resourceVersion"))
        body = copy.deepcopy(body)
        body.pop("status", None)
        for k in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
            body.get("metadata", {}).pop(k, None)
        new = merge_patch(copy.deepcopy(current), body)
        _record_apply(new, call.query["fieldManager"], body)
        self._validate(t, current, new)
        return self._write(t, current, new, call)

    def _merge(self, t: _Target, call: Call) -> Obj:
        current = self._get(t)
        patch = copy.deepcopy(call.body if isinstance(call.body, dict) else {})
        meta = patch.get("metadata") or {}
        self._preconditions(t, current, meta.pop("uid", None), meta.pop("resourceVersion", None))
        if t.subresource == "status":
            patch = {"status": patch.get("status")} if "status" in patch else {}
        else:
            patch.pop("status", None)
        new = merge_patch(copy.deepcopy(current), patch)
        self._validate(t, current, new)
        return self._write(t, current, new, call)

    def _json_patch(self, t: _Target, call: Call) -> Obj:
        current = self._get(t)
        ops = call.body if isinstance(call.body, list) else []
        new = copy.deepcopy(current)
        for op in ops:
            new = _json_patch_op(new, op)
        if t.subresource != "status":
            new["status"] = copy.deepcopy(current.get("status"))
            if new["status"] is None:
                del new["status"]
        self._validate(t, current, new)
        return self._write(t, current, new, call)

    def _create(self, t: _Target, call: Call) -> Obj:
        body = call.body if isinstance(call.body, dict) else {}
        self._check_body(t, body)
        meta = body.get("metadata") or {}
        name = meta.get("name") or (meta.get("generateName", "") + uuid.uuid4().hex[:5])
        t = _Target(t.kind, t.version, t.namespace or meta.get("namespace", ""), name, "")
        if t.key in self._s.objects:
            raise _err(409, f'{t.kind.plural} "{name}" already exists', "AlreadyExists")
        return self._new_object(t, body, call)

    def _delete(self, t: _Target, call: Call) -> Obj:
        current = self._get(t)
        options = call.body if isinstance(call.body, dict) else {}
        pre = options.get("preconditions") or {}
        self._preconditions(t, current, pre.get("uid"), pre.get("resourceVersion"))
        if call.dry_run:
            return current
        meta = current.get("metadata") or {}
        if meta.get("finalizers"):
            if not meta.get("deletionTimestamp"):
                new = copy.deepcopy(current)
                new["metadata"]["deletionTimestamp"] = _now()
                new["metadata"]["resourceVersion"] = self._next_rv()
                self._store(t.kind, t.namespace, t.name, new)
                return new
            return current
        self._remove(t.kind, t.namespace, t.name, options.get("propagationPolicy") or "Background")
        return current

    def _remove(self, kind: Kind, namespace: str, name: str, propagation: str) -> None:
        """Delete one object and what goes with it: a Namespace's contents, a CRD's
        objects, an owner's dependents (the garbage collector, at once)."""
        gone = self._s.objects.pop((kind.group, kind.plural, namespace, name), None)
        if gone is None:
            return
        uid = (gone.get("metadata") or {}).get("uid")
        dependents: list[tuple[str, str, str, str]] = []
        if kind.kind == "Namespace":
            dependents = [
                key for key in self._s.objects if key[2] == name and self._kind(key).namespaced
            ]
        elif kind.kind == "CustomResourceDefinition":
            spec = gone.get("spec") or {}
            served = (spec.get("group"), (spec.get("names") or {}).get("plural"))
            dependents = [key for key in self._s.objects if key[:2] == served]
            self._s.kinds.pop(cast(tuple[str, str], served), None)
        if propagation != "Orphan":
            for key, obj in self._s.objects.items():
                owners = (obj.get("metadata") or {}).get("ownerReferences") or []
                if owners and all(o.get("uid") == uid for o in owners):
                    dependents.append(key)
        for key in dependents:
            k = self._kind(key)
            self._remove(k, key[2], key[3], propagation)

    def _kind(self, key: tuple[str, str, str, str]) -> Kind:
        return self._s.kinds.get(key[:2]) or Kind(key[0], ("v1",), "", key[1], True)


def _json_patch_op(doc: Obj, op: Mapping[str, Any]) -> Obj:
    """One RFC 6902 operation (add, remove, replace, test) on `doc`, in place."""
    parts = [
        p.replace("~1", "/").replace("~0", "~") for p in str(op.get("path", "")).split("/")[1:]
    ]
    kind = op.get("op")
    if not parts:
        raise _err(
            422,
            f"the server rejected our request: {kind} on the whole document is not supported by the fake",
        )
    parent: Any = doc
    for p in parts[:-1]:
        parent = parent[int(p)] if isinstance(parent, list) else (parent or {}).get(p)
        if parent is None:
            raise _err(
                422,
                f"the server rejected our request due to an error in our request: doc is missing path: {op.get('path')}",
            )
    last = parts[-1]
    exists = (
        (0 <= int(last) < len(parent))
        if isinstance(parent, list) and last.isdigit()
        else (isinstance(parent, dict) and last in parent)
    )
    current = (parent[int(last)] if isinstance(parent, list) else parent[last]) if exists else None
    if kind == "test":
        if not exists or current != op.get("value"):
            raise _err(422, f"testing value {op.get('path')} failed: test failed")
    elif kind in ("remove", "replace") and not exists:
        raise _err(
            422,
            f"the server rejected our request due to an error in our request: {kind} operation does not apply: doc is missing path: {op.get('path')}",
        )
    elif kind == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    elif kind in ("add", "replace"):
        value = copy.deepcopy(op.get("value"))
        if isinstance(parent, list):
            if kind == "add":
                parent.insert(len(parent) if last == "-" else int(last), value)
            else:
                parent[int(last)] = value
        else:
            parent[last] = value
    else:
        raise _err(400, f"the fake does not support the JSON patch operation {kind!r}")
    return doc


def _spec_without(obj: Obj, keys: set[str]) -> Obj:
    return {k: v for k, v in (obj.get("spec") or {}).items() if k not in keys}


def _dig(obj: Any, path: tuple[str, ...]) -> Any:
    for p in path:
        obj = obj.get(p) if isinstance(obj, dict) else None
    return obj


def _applied_fields(value: Any, top: bool = True) -> dict[str, Any]:
    """A simplified fieldsV1 of an applied body: maps become `f:<key>` trees,
    anything else a leaf; apiVersion, kind and the object's name are left out,
    as the API server leaves them out. (The real set also tracks list items.)"""
    out: dict[str, Any] = {}
    for key, item in value.items():
        if top and key in ("apiVersion", "kind"):
            continue
        if top and key == "metadata" and isinstance(item, dict):
            item = {k: v for k, v in item.items() if k not in ("name", "namespace")}
            if not item:
                continue
        out[f"f:{key}"] = _applied_fields(item, False) if isinstance(item, dict) and item else {}
    return out


def _record_apply(obj: Obj, manager: str, body: Obj) -> None:
    """Set `manager`'s Apply entry to the fields of `body`, as server-side apply
    does (the simplification: no fields move from other managers)."""
    meta = obj.setdefault("metadata", {})
    entries = [
        e
        for e in meta.get("managedFields") or []
        if (e.get("manager"), e.get("operation")) != (manager, "Apply")
    ]
    entries.append(
        {
            "manager": manager,
            "operation": "Apply",
            "apiVersion": obj.get("apiVersion", ""),
            "fieldsType": "FieldsV1",
            "fieldsV1": _applied_fields(body),
        }
    )
    meta["managedFields"] = entries
