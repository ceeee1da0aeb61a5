"""Where the time goes: the notes under the goals table, built from what this
run measured (a missed goal is explained with its own numbers)."""

from __future__ import annotations

import statistics

from .common import kinds_of_requests, per_unit
from .report import Results
from .scale import QUEUE_EVERY


def analyse(r: Results) -> list[str]:
    notes: list[str] = []
    m = r.machine
    if m.load[0] > m.cpus or r.load_end[0] > m.cpus:
        notes.append(
            f"- **The machine was shared.** Load average {m.load[0]:.1f} at the start and"
            f" {r.load_end[0]:.1f} at the end on {m.cpus} CPUs (other work: "
            f"{'; '.join(m.busy + r.busy_end) or 'not caught in the samples'}). Every time"
            " here is longer than on an idle machine, and the API server, etcd and the"
            " operator got less than the 2 cores. gitferry and kubectl ran in the same run"
            " on the same machine, so their ratio is fairer than either absolute time."
        )
    notes += _p1(r)
    notes += _threads(r)
    p = r.p1_at(1000)
    if p is not None and p.peak_rss_mib > 200:
        per_sync = (p.peak_rss_mib - p.rss_at_start_mib) / p.n * 1024
        growth = ", ".join(f"{x.n}: {x.peak_rss_mib:.0f}" for x in sorted(r.p1, key=lambda x: x.n))
        after = f"; {p.steady.rss_mib:.0f} MiB resident after the steady state" if p.steady else ""
        notes.append(
            f"- **Memory** at 1000 syncs: {p.peak_rss_mib:.0f} MiB peak, missed by"
            f" {p.peak_rss_mib - 200:.0f} MiB: {p.rss_at_start_mib:.0f} MiB before the first"
            f" sync (Python, Kopf, the clients), then about {per_sync:.0f} KiB per sync (peak"
            f" RSS in MiB by N: {growth}){after}. It grows with the syncs, not with"
            " time: the watch cache (about 2 KiB an object, tests/e2e/test_watch_library.py),"
            " Kopf's daemon task and body of each sync, the drift baseline and the per-sync"
            " metric series. Kopf's connections are bounded (16 + one per watch): unbounded,"
            " 1000 new syncs opened about 240 TLS connections and added 95 MiB."
        )
    if p is not None and p.steady is not None and p.steady.percent > 10:
        s = p.steady
        per = s.cpu_own / max(1, s.reconciles) * 1000
        notes.append(
            f"- **Steady-state CPU** {s.percent:.1f} % of a core: {s.reconciles} reconciles in"
            f" {s.seconds:.0f} s ({s.reconciles / s.seconds:.1f} per second), {per:.1f} ms of"
            f" CPU each, {s.noop_reconciles} of them answered by the watch cache."
        )
    if r.noop is not None and r.noop.durations_ms:
        ms = statistics.median(r.noop.durations_ms)
        if ms > 20 or r.noop.in_namespace:
            notes.append(
                f"- **No-op reconcile**: {ms:.0f} ms median, {r.noop.in_namespace} requests"
                " about the sync in the window: the interval's git question (through the"
                " shared cache) and the comparison with the watch cache."
            )
    return notes


def _p1(r: Results) -> list[str]:
    missed = [p for p in r.p1 if p.n in (100, 1000) and (p.ratio > 1.5 or
              (p.n == 1000 and p.gitferry_s > 60))]  # fmt: skip
    if not missed:
        return []
    p = max(missed, key=lambda x: x.n)
    if p.requests is None:
        return []
    rate = p.requests.total / p.gitferry_s
    k_rate = p.kubectl_requests / p.kubectl_s
    kinds = kinds_of_requests(p.requests.calls)
    per = per_unit(kinds, p.n)
    dry = sum(v for k, v in kinds.items() if "dry-run" in k) / p.n
    reads = kinds.get("object get", 0) / p.n
    status = sum(v for k, v in kinds.items() if k.startswith("sync status")) / p.n
    meta = sum(v for k, v in kinds.items() if k.startswith("sync metadata")) / p.n
    kopf = sum(v for k, v in kinds.items() if k.startswith("Kopf")) / p.n
    queued = (
        f", with up to {p.max_queued:.0f} syncs queued for a thread"
        f" (`gitferry_reconcile_queue_depth`, every {QUEUE_EVERY:g} s)"
        if p.max_queued is not None
        else ""
    )
    req_ratio = p.per_sync / (p.kubectl_requests / p.n)
    saturated = (
        " The machine's CPUs were nearly all busy: what limits both is the API server and"
        " etcd answering requests on these 2 cores."
        if p.machine_gitferry >= 85
        else ""
    )
    return [
        f"- **P1, N = {p.n}: {p.gitferry_s:.0f} s, {p.ratio:.1f} × kubectl.** The operator"
        f" is not what is busy: it used {p.cpu_own / p.gitferry_s * 100:.0f} % of one core;"
        f" its {p.threads} reconcile threads were {p.busy * 100:.0f} % busy, each waiting"
        f" on a request{queued}. While it ran, the machine was"
        f" {p.machine_gitferry:.0f} % busy ({_shares(p.cpu_gitferry)}); during kubectl's"
        f" run {p.machine_kubectl:.0f} % ({_shares(p.cpu_kubectl)}).{saturated} The time"
        " is the requests over the rate they are answered at:"
        f" gitferry asks {p.per_sync:.1f} requests for a new sync of 4 objects, kubectl"
        f" {p.kubectl_requests / p.n:.1f} per 4 objects (one server-side apply each, its"
        f" discovery cached), {req_ratio:.1f} × as many; the API server answered the"
        f" operator {rate:.0f} requests per second and kubectl {k_rate:.0f}"
        f" ({k_rate / rate:.2f} ×): {req_ratio:.1f} × {k_rate / rate:.2f} ="
        f" {req_ratio * k_rate / rate:.1f} × kubectl's time. Per sync: {per}.",
        "- What the requests beyond kubectl's buy: the ownership reads"
        f" ({reads:.1f} GETs: whose object is it? a new object is in no watch cache, and an"
        " object that exists without gitferry's labels is adopted, never overwritten"
        f" unmarked); the sync's status ({status:.1f}: Progressing for the new generation,"
        " then Ready); its ApplySet parent metadata, written before any object so that a"
        f" crash leaves nothing unknown ({meta:.1f}); Kopf's finalizer ({kopf:.1f}, which"
        " guards the prune when a sync is deleted); the Event that says what changed; and"
        f" the dry-runs ({dry:.1f}: every object of a stage is validated before any is"
        " written, as Flux and Argo CD do, so one invalid file leaves a new sync with"
        " nothing applied rather than half; skipping them for objects that do not exist"
        " yet measured 13 requests and 35-39 s, and was taken back for that reason)."
        " Earlier versions asked 20 per new sync: an inventory write before the apply"
        " (the ApplySet parent and labels now cover a crash) and two more Kopf patches of"
        " its own bookkeeping (P1 at N = 1000 took 67 s with them on a quiet machine,"
        f" {p.gitferry_s:.0f} s here). To reach 1.5 × kubectl a new sync could ask at most"
        " about 6: no ownership read, no dry-run and no status before Ready, which would"
        " overwrite other syncs' objects unseen, half-apply invalid commits and leave"
        " `kubectl wait` blind; not done.",
    ]


def _shares(shares: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f} %" for k, v in shares.items())


def _threads(r: Results) -> list[str]:
    if not r.p1_threads:
        return []
    more = r.p1_threads[0]
    base = r.p1_at(more.n)
    if base is None or not base.reconcile_ms or not more.reconcile_ms:
        return []
    # The machine's other work changes between the two runs: each is compared with
    # the kubectl run made just before it, on the same machine state.
    change = (more.ratio / base.ratio - 1) * 100
    slower = statistics.median(more.reconcile_ms) / statistics.median(base.reconcile_ms)
    verdict = (
        "More threads would pay here: the default is worth raising."
        if change < -25
        else f"The default stays {base.threads}: each reconcile only waits longer."
    )
    return [
        f"- **More reconcile threads?** At N = {more.n}, {more.threads} threads instead of"
        f" {base.threads}: {more.gitferry_s:.1f} s = {more.ratio:.2f} × kubectl (its run just"
        f" before: {more.kubectl_s:.1f} s) against {base.gitferry_s:.1f} s = {base.ratio:.2f} ×"
        f" ({base.kubectl_s:.1f} s): {change:+.0f} % against kubectl, while each reconcile"
        f" took {slower:.1f} × longer (p50 {statistics.median(more.reconcile_ms):.0f} ms"
        f" against {statistics.median(base.reconcile_ms):.0f} ms: the requests wait at the"
        f" API server) and the peak RSS was {more.peak_rss_mib:.0f} MiB against"
        f" {base.peak_rss_mib:.0f}. {verdict}"
    ]
