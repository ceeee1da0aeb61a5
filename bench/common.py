"""What every benchmark shares: kubectl and git, the admin API client, the audit
log, the machine, and the four objects of one app (P1's unit)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from tests.harness.controlplane import ControlPlane

KUBECTL = str(Path(sys.executable).parent / "kubectl")
GROUP, VERSION, PLURAL = "gitferry.dev", "v1alpha1", "gitrepositorysyncs"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "gitferry bench",
    "GIT_AUTHOR_EMAIL": "bench@gitferry.invalid",
    "GIT_COMMITTER_NAME": "gitferry bench",
    "GIT_COMMITTER_EMAIL": "bench@gitferry.invalid",
}


def say(msg: str) -> None:
    """Progress on stderr, with the time: `make bench` runs for many minutes."""
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None, timeout: float = 600) -> str:
    proc = subprocess.run(
        [KUBECTL, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)[:200]}: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
    ).stdout.strip()


def docs(objs: Iterable[dict[str, Any]]) -> str:
    """One YAML document per object (JSON is YAML)."""
    return "".join(f"---\n{json.dumps(o, indent=2)}\n" for o in objs)


def epoch(stamp: str) -> float:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def percentile(values: list[float], p: float) -> float:
    """The p-th percentile (0..100), linear between the closest ranks."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


# --- one app: the four objects of P1 ------------------------------------------------
def app_objects(name: str, revision: str = "1") -> list[dict[str, Any]]:
    """A Deployment with 0 replicas, a ServiceAccount, a Service and an Ingress
    (issue 11's P1), all named `name`; `revision` is a label of the Deployment's
    metadata (a push changes it)."""
    labels = {"app": name}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "selector": labels,
                "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": {**labels, "revision": revision}},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": name,
                        "containers": [
                            {
                                "name": "app",
                                "image": "registry.example/app:1.0",
                                "ports": [{"containerPort": 8080}],
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": name},
            "spec": {
                "rules": [
                    {
                        "host": f"{name}.example.com",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": name, "port": {"number": 80}}},
                                }
                            ]
                        },
                    }
                ]
            },
        },
    ]


def sync_manifest(
    name: str, namespace: str, url: str, path: str, interval: str, **spec: Any
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GitRepositorySync",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"url": url, "ref": {"branch": "main"}, "path": path, "interval": interval, **spec},
    }


# --- the API, as admin -------------------------------------------------------------
def _json(resp: object) -> dict[str, Any]:
    """The body of an answer read with `_preload_content=False` (a urllib3 response)."""
    return json.loads(cast(Any, resp).data)  # type: ignore[no-any-return]


class Api:
    """The admin's API client for what the benchmark reads and writes often
    (polls of many syncs): one process, no kubectl per poll."""

    def __init__(self, kubeconfig: Path) -> None:
        self.api_client = k8s_config.new_client_from_config(str(kubeconfig))  # type: ignore[no-untyped-call]
        self.custom = k8s.CustomObjectsApi(self.api_client)
        self.core = k8s.CoreV1Api(self.api_client)

    def syncs(self, namespace: str) -> list[dict[str, Any]]:
        resp = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _preload_content=False
        )
        return _json(resp)["items"]  # type: ignore[no-any-return]

    def sync(self, namespace: str, name: str) -> dict[str, Any]:
        resp = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, _preload_content=False
        )
        return _json(resp)

    def patch_syncs(self, namespace: str, names: Iterable[str], patch: dict[str, Any]) -> None:
        def one(name: str) -> None:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, patch
            )

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(one, names))

    def create_syncs(self, syncs: list[dict[str, Any]], threads: int = 8) -> None:
        """POST each sync, `threads` at a time: many syncs created at once."""

        def one(sync: dict[str, Any]) -> None:
            ns = sync["metadata"]["namespace"]
            self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, sync)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, syncs))

    def configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            resp = self.core.read_namespaced_config_map(name, namespace, _preload_content=False)
        except k8s.ApiException as e:
            if e.status == 404:
                return None
            raise
        return _json(resp)

    def close(self) -> None:
        self.api_client.close()


def is_ready(sync: dict[str, Any], sha: str) -> bool:
    """Ready=True for its generation with `sha` applied."""
    st = sync.get("status") or {}
    if st.get("observedGeneration") != sync["metadata"].get("generation"):
        return False
    if not str(st.get("lastAppliedRevision") or "").endswith(sha):
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or []
    )


def wait_ready(
    api: Api, namespace: str, sha: str, count: int, timeout: float, every: float = 0.5,
    progress: Callable[[int], None] | None = None,
) -> float:  # fmt: skip
    """Poll (a LIST every `every` s) until `count` syncs of `namespace` are Ready on
    `sha`; returns time.monotonic() of the poll that saw them all."""
    end = time.monotonic() + timeout
    last_said = time.monotonic()
    while True:
        items = api.syncs(namespace)
        ready = sum(1 for s in items if is_ready(s, sha))
        now = time.monotonic()
        if ready >= count:
            return now
        if progress is not None and now - last_said > 15:
            progress(ready)
            last_said = now
        if now > end:
            failing = [
                (s["metadata"]["name"], (s.get("status") or {}).get("conditions"))
                for s in items
                if not is_ready(s, sha)
            ][:3]
            raise RuntimeError(
                f"{ready} of {count} syncs Ready after {timeout:.0f}s in {namespace}: {failing}"
            )
        time.sleep(every)


def watch_ready(
    api: Api, namespace: str, sha: str, count: int, timeout: float,
    progress: Callable[[int], None] | None = None,
) -> float:  # fmt: skip
    """Like `wait_ready`, through a watch: one LIST, then only the changes (a LIST of
    1000 syncs every 0.5 s would cost the API server and this process much more than
    what it measures). Returns time.monotonic() of the event that made `count`."""
    end = time.monotonic() + timeout
    last_said = time.monotonic()
    while True:
        listed = _json(
            api.custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, _preload_content=False
            )
        )
        ready = {s["metadata"]["name"] for s in listed["items"] if is_ready(s, sha)}
        if len(ready) >= count:
            return time.monotonic()
        w = k8s_watch.Watch()  # type: ignore[no-untyped-call]
        stream = w.stream(  # type: ignore[no-untyped-call]
            api.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
            resource_version=listed["metadata"]["resourceVersion"],
            timeout_seconds=int(max(1, min(300, end - time.monotonic()))),
        )  # fmt: skip
        try:
            for ev in stream:
                if ev["type"] == "ERROR":  # 410 Gone: list again
                    break
                name = ev["object"]["metadata"]["name"]
                if ev["type"] != "DELETED" and is_ready(ev["object"], sha):
                    ready.add(name)
                else:
                    ready.discard(name)
                now = time.monotonic()
                if len(ready) >= count:
                    return now
                if progress is not None and now - last_said > 15:
                    progress(len(ready))
                    last_said = now
                if now > end:
                    break
        except k8s.ApiException as e:
            if e.status != 410:
                raise
        finally:
            w.stop()  # type: ignore[no-untyped-call]
        if time.monotonic() > end:
            raise RuntimeError(f"{len(ready)} of {count} syncs Ready after {timeout:.0f}s")


def delete_namespace(api: Api, kubeconfig: Path, namespace: str, timeout: float = 240) -> float:
    """Delete a namespace whose operator is stopped: drop the syncs' finalizers (no
    prune runs), delete it, wait until it is gone; returns the seconds it took."""
    t0 = time.monotonic()
    names = [s["metadata"]["name"] for s in api.syncs(namespace)]
    api.patch_syncs(namespace, names, {"metadata": {"finalizers": None}})
    kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false")
    end = t0 + timeout
    while time.monotonic() < end:
        try:
            api.core.read_namespace(namespace)
        except k8s.ApiException as e:
            if e.status == 404:
                return time.monotonic() - t0
            raise
        time.sleep(1)
    say(f"  namespace {namespace} still terminating after {timeout:.0f}s; going on")
    return time.monotonic() - t0


# --- the audit log ---------------------------------------------------------------
@dataclass
class Requests:
    """What one client asked of the API server in a time window."""

    total: int = 0
    writes: int = 0
    dry_runs: int = 0
    watches: int = 0
    by_verb: dict[str, int] = field(default_factory=dict)
    write_uris: list[str] = field(default_factory=list)  # "verb requestURI" of each write
    # (verb, requestURI, the user agent's first word) of each request
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, other: Requests) -> None:
        self.total += other.total
        self.writes += other.writes
        self.dry_runs += other.dry_runs
        self.watches += other.watches
        for k, v in other.by_verb.items():
            self.by_verb[k] = self.by_verb.get(k, 0) + v
        self.write_uris += other.write_uris
        self.calls += other.calls


def kinds_of_requests(calls: list[tuple[str, str, str]]) -> dict[str, int]:
    """Requests by what they were for: the managed objects (read, dry-run, apply),
    the sync (its metadata, its status; Kopf's own apart), Events, the rest."""
    out: dict[str, int] = {}
    for verb, uri, agent in calls:
        path = uri.split("?")[0]
        who = "Kopf: " if agent.lower().startswith("kopf") else ""
        if f"/{PLURAL}/" in path:
            what = f"sync {'status' if path.endswith('/status') else 'metadata'} {verb}"
        elif path.endswith("/events") or "/events/" in path:
            what = f"Event {verb}"
        elif "dryRun=" in uri:
            what = f"object dry-run {verb}"
        elif verb in ("get", "patch", "create", "update", "delete"):
            what = f"object {verb}"
        else:
            what = f"{verb} {path}"
        out[who + what] = out.get(who + what, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def per_unit(kinds: dict[str, int], units: int, least: float = 0.1) -> str:
    """`kinds_of_requests` per unit (per sync), the rare ones (a start's LISTs) summed."""
    shown = [f"{k} {v / units:.1f}" for k, v in kinds.items() if v / units >= least]
    rest = sum(v for v in kinds.values() if v / units < least)
    return ", ".join(shown + ([f"other {rest / units:.2f} ({rest} in all)"] if rest else []))


def audit_events(cp: ControlPlane, offset: int = 0) -> Iterator[dict[str, Any]]:
    """Audit events from byte `offset` of the log on (the log only grows)."""
    if not cp.audit_log.exists():
        return
    with cp.audit_log.open("rb") as f:
        f.seek(offset)
        for line in f:
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:  # a line being written
                    continue


def audit_size(cp: ControlPlane) -> int:
    return cp.audit_log.stat().st_size if cp.audit_log.exists() else 0


def count_requests(
    cp: ControlPlane,
    start: float,
    end: float,
    *,
    user: str,
    skip_agents: tuple[str, ...] = (),
    offset: int = 0,
) -> Requests:
    """`user`'s requests received in [start, end] (epoch seconds); watches (long
    lived, opened once) counted apart and not in `total`."""
    out = Requests()
    for ev in audit_events(cp, offset):
        if ev.get("stage") != "ResponseComplete":
            continue
        who = ev.get("user")
        if not isinstance(who, dict) or who.get("username") != user:
            continue
        if skip_agents and str(ev.get("userAgent", "")).startswith(skip_agents):
            continue
        if not start <= epoch(str(ev.get("requestReceivedTimestamp", ""))) <= end:
            continue
        verb = str(ev.get("verb"))
        if verb == "watch":
            out.watches += 1
            continue
        out.total += 1
        agent = str(ev.get("userAgent") or "-").split("/")[0]
        out.calls.append((verb, str(ev.get("requestURI")), agent))
        out.by_verb[verb] = out.by_verb.get(verb, 0) + 1
        if verb in WRITE_VERBS:
            if "dryRun=" in str(ev.get("requestURI", "")):
                out.dry_runs += 1
            else:
                out.writes += 1
                out.write_uris.append(f"{verb} {ev.get('requestURI')}")
    return out


# --- the machine -------------------------------------------------------------------
@dataclass
class Machine:
    cpus: int
    cpu_model: str
    memory_gib: float
    python: str
    kubernetes: str
    git: str
    load: tuple[float, float, float]  # load averages when the benchmark started
    busy: list[str]  # other heavy processes seen at the start


def _cpu_ticks() -> dict[int, tuple[str, int]]:
    """Every process's (command, utime + stime in clock ticks)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            raw = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        out[int(d)] = (comm, int(fields[11]) + int(fields[12]))
    return out


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs together, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


class CpuWatch:
    """Where the CPU went while a block ran: the machine's busy share (of all its
    CPUs) and each named process's share of one core; `other` is the rest of the
    busy time (short-lived processes such as kubectl and git, the benchmark
    itself, other work on the machine)."""

    def __init__(self, named: dict[str, int]) -> None:
        self.named = named
        self.shares: dict[str, float] = {}
        self.machine = 0.0  # busy share of all CPUs, 0..100

    def __enter__(self) -> CpuWatch:
        self._t0 = time.monotonic()
        self._m0 = _machine_ticks()
        self._p0 = _cpu_ticks()
        return self

    def __exit__(self, *_: object) -> None:
        seconds = time.monotonic() - self._t0
        m1, p1 = _machine_ticks(), _cpu_ticks()
        hz = os.sysconf("SC_CLK_TCK")
        busy, total = m1[0] - self._m0[0], m1[1] - self._m0[1]
        self.machine = busy / max(1, total) * 100
        cores = len(os.sched_getaffinity(0))
        for name, pid in self.named.items():
            if pid in p1 and pid in self._p0:
                self.shares[name] = (p1[pid][1] - self._p0[pid][1]) / hz / seconds * 100
        self.shares["other"] = max(0.0, self.machine * cores - sum(self.shares.values()))


def other_work(seconds: float = 3.0) -> list[str]:
    """The other processes that used at least 10 % of a core over `seconds` now
    (a shared machine skews every number), busiest first."""
    hz = os.sysconf("SC_CLK_TCK")
    before = _cpu_ticks()
    time.sleep(seconds)
    after = _cpu_ticks()
    busy: dict[str, float] = {}
    for pid, (comm, ticks) in after.items():
        if pid in before and pid != os.getpid():
            share = (ticks - before[pid][1]) / hz / seconds * 100
            busy[comm] = busy.get(comm, 0.0) + share
    top = sorted(((v, k) for k, v in busy.items() if v >= 10), reverse=True)
    return [f"{k} {v:.0f} %" for v, k in top]


def machine(kubeconfig: Path, load: tuple[float, float, float], busy: list[str]) -> Machine:
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    model = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    version = json.loads(kubectl(kubeconfig, "version", "-o", "json"))
    return Machine(
        cpus=len(os.sched_getaffinity(0)),
        cpu_model=model,
        memory_gib=mem_kib / 1024 / 1024,
        python=platform.python_version(),
        kubernetes=version["serverVersion"]["gitVersion"],
        git=subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip(),
        load=load,
        busy=busy,
    )
