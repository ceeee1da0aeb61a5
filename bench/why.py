"""Where the time goes: the notes under the goals table, built from what this
run measured (a missed goal is explained with its own numbers)."""

from __future__ import annotations

import statistics

from .common import kinds_of_requests, per_unit
from .report import Results

# Measured apart, at N = 300 with `python -m bench.run --only p1 --sizes 300
# --env GITFERRY_MAX_CONCURRENT_RECONCILES=16` against the default (4), the
# same day on the same shared machine (load 5–8).
THREADS_EXPERIMENT = (
    "More reconcile threads do not help here: at N = 300, 16 threads instead of 4 took"
    " 43.6 s instead of 48.7 s (−10 %), while each reconcile took 4 × longer (p50 1.97 s"
    " instead of 0.49 s: the requests queue at the API server) and the peak RSS grew from"
    " 148 to 169 MiB (`python -m bench.run --only p1 --sizes 300 --env"
    " GITFERRY_MAX_CONCURRENT_RECONCILES=16`, load 5–8). The default stays 4."
)


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
    p = r.p1_at(1000)
    if p is not None and p.peak_rss_mib > 200:
        notes.append(
            f"- **Memory** at 1000 syncs: {p.peak_rss_mib:.0f} MiB peak ({p.rss_at_start_mib:.0f}"
            " MiB before the first sync): Kopf keeps a task, a daemon and a copy of each"
            " sync's body; the watch cache keeps each object's metadata."
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
    return [
        f"- **P1, N = {p.n}: {p.gitferry_s:.0f} s, {p.ratio:.1f} × kubectl.** The operator"
        f" is not what is busy: it used {p.cpu_own / p.gitferry_s * 100:.0f} % of one core"
        f" (its threads were {p.busy * 100:.0f} % busy, each waiting on a request). The API"
        f" server is: it answered the operator {rate:.0f} requests per second and kubectl"
        f" {k_rate:.0f}, about the same rate, so the time follows the number of requests."
        f" gitferry asks {p.per_sync:.1f} requests for a new sync of 4 objects, kubectl"
        f" {p.kubectl_requests / p.n:.1f} per 4 objects (one server-side apply each, after"
        f" its discovery): the ratio of requests ({p.per_sync / (p.kubectl_requests / p.n):.1f})"
        f" is about the ratio of times ({p.ratio:.1f}). Per sync: {per}.",
        "- What the extra requests buy, and what would remove them (each a design change,"
        " not made here): the dry-run of every object before any is written"
        f" ({dry:.1f} per sync: a stage's invalid object fails the stage before anything is"
        " written — for objects that do not exist yet a create could go without it); the"
        f" ownership reads ({reads:.1f} GETs: whose object is it? — the drift watch cache"
        " already holds gitferry's labels and annotations of every object it applied, and"
        " a new object is in no cache); the sync's status"
        f" ({status:.1f}: Progressing for the new generation, the inventory before the"
        " apply for crash safety, then Ready — the first two could be one write) and its"
        f" ApplySet parent metadata ({meta:.1f}); Kopf's own patches of the sync ({kopf:.1f}:"
        " its finalizer and its bookkeeping annotations). Dropping the dry-run of new objects"
        " and reading owners from the cache would halve the requests of a new sync.",
        f"- {THREADS_EXPERIMENT}",
    ]
