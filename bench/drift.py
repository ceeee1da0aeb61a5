"""The no-op reconcile through the operator process (the watch cache's path) and
drift correction latency, on one sync of 100 objects (`hundred/` of the fleet:
60 ConfigMaps, 20 Services, 20 Deployments).

1. No-op: the sync at a 2 s interval, settled; over a window, the operator's
   reconciles (its log) and its requests (the audit log, as its ServiceAccount).
2. Drift: the interval set to 1h; 20 merge patches of a managed field (a
   ConfigMap's `data.revision`, 20 different ConfigMaps: no fight backoff) and 20
   deletions (20 other ConfigMaps); each timed from just before the write to
   the first read that shows git's value again (a GET every 20 ms).
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import dataclass, field

from .common import Requests, audit_size, count_requests, percentile, say, sync_manifest
from .common import wait_ready as wait_all_ready
from .fleet import Bench
from .process import USER, GitferryProcess, wait_quiet

NAMESPACE = "noop"
SYNC = "hundred"
NOOP_INTERVAL = "2s"
NOOP_WINDOW = 20.0
EDITS = DELETIONS = 20
POLL = 0.02


@dataclass
class NoOp:
    reconciles: int
    watch_cache: int  # of them, answered by the watch cache
    requests: Requests  # the operator's, in the window
    in_namespace: int  # of them, about the sync's namespace
    window_s: float
    durations_ms: list[int] = field(default_factory=list)

    def asked(self) -> str:
        """Each distinct request (verb and path) with its count."""
        seen: dict[str, int] = {}
        for verb, uri, _ in self.requests.calls:
            key = f"{verb} {uri.split('?')[0]}"
            seen[key] = seen.get(key, 0) + 1
        return ", ".join(f"`{k}` ×{v}" for k, v in sorted(seen.items())) or "none"

    @property
    def per_reconcile(self) -> float:
        return self.requests.total / max(1, self.reconciles)


@dataclass
class Latency:
    edits: list[float]
    deletions: list[float]


def _p(values: list[float], p: float) -> float:
    return percentile(values, p)


def run(bench: Bench) -> tuple[NoOp, Latency]:
    say("no-op and drift: one sync of 100 objects through the operator …")
    bench.kubectl("create", "namespace", NAMESPACE)
    proc = GitferryProcess(bench.cluster, bench.work / "operator-noop", NAMESPACE)
    try:
        proc.start()
        bench.create([sync_manifest(SYNC, NAMESPACE, bench.url, "hundred", NOOP_INTERVAL)])
        wait_all_ready(bench.api, NAMESPACE, bench.sha, 1, timeout=120, every=0.2)
        time.sleep(5)  # the Deployments settle; the first no-ops go by
        noop = _noop(bench, proc)
        latency = _drift(bench, proc)
        proc.alive()
        return noop, latency
    finally:
        proc.stop()
        from .common import delete_namespace

        delete_namespace(bench.api, bench.kubeconfig, NAMESPACE)


def _noop(bench: Bench, proc: GitferryProcess) -> NoOp:
    offset = audit_size(bench.cp)
    before = len(proc.reconcile_lines(SYNC))
    start = time.time()
    time.sleep(NOOP_WINDOW)
    end = time.time()
    time.sleep(0.5)  # the audit log is written as each request completes
    lines = proc.reconcile_lines(SYNC)[before:]
    reqs = count_requests(bench.cp, start, end, user=USER, offset=offset)
    in_ns = sum(1 for _, uri, _ in reqs.calls if f"/namespaces/{NAMESPACE}/" in uri)
    out = NoOp(
        reconciles=len(lines),
        watch_cache=sum("unchanged (watch cache)" in x for x in lines),
        requests=reqs,
        in_namespace=in_ns,
        window_s=end - start,
        durations_ms=[int(m) for x in lines for m in re.findall(r"duration_ms=(\d+)", x)],
    )
    say(f"  no-op: {out.reconciles} reconciles ({out.watch_cache} from the watch cache) in"
        f" {out.window_s:.0f} s, {reqs.total} requests ({reqs.by_verb}), {reqs.watches} watches"
        f" opened, median {statistics.median(out.durations_ms or [0])} ms")  # fmt: skip
    return out


def _drift(bench: Bench, proc: GitferryProcess) -> Latency:
    # interval 1h: only the drift watches can put things back within the measure
    bench.api.patch_syncs(NAMESPACE, [SYNC], {"spec": {"interval": "1h"}})
    time.sleep(1)
    wait_all_ready(bench.api, NAMESPACE, bench.sha, 1, timeout=60, every=0.2)
    wait_quiet(proc)
    api = bench.api
    edits: list[float] = []
    for i in range(EDITS):
        name = f"config-{20 + i:03d}"
        want = (api.configmap(NAMESPACE, name) or {})["data"]["revision"]
        t0 = time.monotonic()
        api.core.patch_namespaced_config_map(
            name, NAMESPACE, {"data": {"revision": f"by-hand-{i}"}}
        )
        edits.append(_until(lambda n=name, w=want: ((api.configmap(NAMESPACE, n) or {})
                                                    .get("data") or {}).get("revision") == w,
                            t0, f"{name} put back"))  # fmt: skip
        time.sleep(0.3)
    deletions: list[float] = []
    for i in range(DELETIONS):
        name = f"config-{40 + i:03d}"
        uid = (api.configmap(NAMESPACE, name) or {})["metadata"]["uid"]
        t0 = time.monotonic()
        api.core.delete_namespaced_config_map(name, NAMESPACE)
        deletions.append(_until(lambda n=name, u=uid: ((api.configmap(NAMESPACE, n) or {})
                                                       .get("metadata") or {}).get("uid")
                                not in (None, u), t0, f"{name} recreated"))  # fmt: skip
        time.sleep(0.3)
    corrected = sum(1 for x in proc.log().splitlines() if "action=drift " in x)
    say(f"  drift: edits p50 {_p(edits, 50):.2f} s p90 {_p(edits, 90):.2f} s; deletions p50"
        f" {_p(deletions, 50):.2f} s p90 {_p(deletions, 90):.2f} s ({corrected} drift lines)")  # fmt: skip
    return Latency(edits, deletions)


def _until(check: object, t0: float, what: str, timeout: float = 30.0) -> float:
    assert callable(check)
    while True:
        if check():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{what}: not within {timeout:.0f}s")
        time.sleep(POLL)
