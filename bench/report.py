"""BENCHMARKS.md from the measurements: the goals of issues 11 and 12 first (met,
or missed by how much and why), then each measure with its details."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime

from . import direct
from .common import Machine, kinds_of_requests, per_unit, percentile
from .drift import EDITS, NOOP_INTERVAL, Latency, NoOp
from .git_traffic import Traffic
from .scale import P1, BigSync

PLOT = "bench/time-to-ready.png"


@dataclass
class Results:
    machine: Machine
    cp_start_s: float
    started: datetime
    load_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    busy_end: list[str] = field(default_factory=list)
    total_s: float = 0.0
    p1: list[P1] = field(default_factory=list)
    p1_threads: list[P1] = field(default_factory=list)  # P1 again with more reconcile threads
    big: BigSync | None = None
    noop: NoOp | None = None
    drift: Latency | None = None
    traffic: Traffic | None = None
    direct: direct.Direct | None = None
    render: str = ""

    def p1_at(self, n: int) -> P1 | None:
        return next((r for r in self.p1 if r.n == n), None)


def _verdict(met: bool, missed: str) -> str:
    return "**met**" if met else f"**missed**: {missed}"


def _p50(values: list[float]) -> float:
    return statistics.median(values)


def _ms(values: list[int]) -> str:
    return f"{statistics.median(values):.0f}" if values else "-"


def goals(r: Results) -> list[str]:
    rows = ["| measure | goal | measured | verdict |", "|---|---|---|---|"]
    for n in (100, 1000):
        p = r.p1_at(n)
        if p is None:
            continue
        if n == 1000:  # two goals, each with its own verdict
            rows.append(
                f"| P1: {n} syncs × 4 objects, all Ready | ≤ 60 s | {p.gitferry_s:.1f} s | "
                + _verdict(p.gitferry_s <= 60, f"{p.gitferry_s - 60:.0f} s over")
                + " |"
            )
        rows.append(
            f"| P1: {n} syncs × 4 objects, all Ready | ≤ 1.5 × kubectl"
            f" | {p.gitferry_s:.1f} s = {p.ratio:.2f} × kubectl ({p.kubectl_s:.1f} s) | "
            + _verdict(
                p.ratio <= 1.5,
                f"{p.ratio / 1.5:.1f} × over the ratio ([why](#where-the-time-goes))",
            )
            + " |"
        )
    if r.big is not None:
        b = r.big
        rows.append(
            f"| one sync of {b.objects} objects, first apply | beside kubectl (no number set)"
            f" | {b.gitferry_s:.1f} s = {b.gitferry_s / b.kubectl_s:.2f} × kubectl"
            f" ({b.kubectl_s:.1f} s) | — |"
        )
    p = r.p1_at(1000)
    if p is not None:
        rows.append(
            f"| operator peak memory at 1000 syncs | ≤ 200 MiB | {p.peak_rss_mib:.0f} MiB (VmHWM) | "
            + _verdict(p.peak_rss_mib <= 200, f"{p.peak_rss_mib - 200:.0f} MiB over")
            + " |"
        )
        if p.steady is not None:
            s = p.steady
            rows.append(
                f"| operator CPU, 1000 syncs at `interval: 1m`, nothing changing | ≤ 10 % of a"
                f" core | {s.percent:.1f} % (+ {s.percent_children:.1f} % in git processes) | "
                + _verdict(s.percent <= 10, f"{s.percent - 10:.1f} points over")
                + " |"
            )
    if r.noop is not None:
        o = r.noop
        ms = statistics.median(o.durations_ms) if o.durations_ms else 0
        rows.append(
            f"| no-op reconcile of 100 objects (operator process, watch cache) | ≤ 20 ms,"
            f" 0 requests | {ms:.0f} ms (median of {len(o.durations_ms)}),"
            f" {o.in_namespace} requests about the sync in {o.reconciles} reconciles | "
            + _verdict(ms <= 20 and o.in_namespace == 0, f"{ms:.0f} ms, {o.in_namespace} requests")
            + " |"  # fmt: skip
        )
    if r.drift is not None:
        e50 = _p50(r.drift.edits)
        d50 = _p50(r.drift.deletions)
        rows.append(
            f"| a hand edit of a managed field corrected (`interval: 1h`) | ≤ 2 s p50 |"
            f" edits {e50:.2f} s p50, deletions {d50:.2f} s p50 | "
            + _verdict(max(e50, d50) <= 2, f"{max(e50, d50) - 2:.2f} s over")
            + " |"
        )
    if r.traffic is not None and r.traffic.push_s:
        t50 = _p50(r.traffic.push_s)
        rows.append(
            f"| push → applied, signed GitHub webhook, `interval: 1h` (issue 12) | ≤ 2 s p50 |"
            f" {t50:.2f} s p50 | " + _verdict(t50 <= 2, f"{t50 - 2:.2f} s over") + " |"
        )
    return rows


def machine_lines(r: Results) -> list[str]:
    m = r.machine
    busy = "; ".join(m.busy) or "none over 10 % of a core"
    busy_end = "; ".join(r.busy_end) or "none over 10 % of a core"
    return [
        f"- Machine: {m.cpus} CPUs ({m.cpu_model}), {m.memory_gib:.1f} GiB memory.",
        f"- Load average at the start {m.load[0]:.2f} / {m.load[1]:.2f} / {m.load[2]:.2f}"
        f" (1 / 5 / 15 min), at the end {r.load_end[0]:.2f} / {r.load_end[1]:.2f} /"
        f" {r.load_end[2]:.2f}. Other processes busy at the start (share of one core over"
        f" 3 s): {busy}; at the end: {busy_end}.",
        f"- Python {m.python}, Kubernetes {m.kubernetes} (the local control plane: etcd,"
        " kube-apiserver, kube-controller-manager, kube-scheduler and kwok on 127.0.0.1,"
        f" audit log on), {m.git}. Control plane start: {r.cp_start_s:.1f} s.",
        f"- The whole `make bench`: {r.total_s / 60:.1f} min.",
    ]


def p1_section(r: Results) -> list[str]:
    if not r.p1:
        return []
    rows = [
        "## P1: N syncs × 4 objects created at once",
        "",
        "One file:// repository with 1000 directories of 4 objects each (a Deployment with 0"
        " replicas, a ServiceAccount, a Service and an Ingress, all named `app-NNNN`); N"
        " GitRepositorySyncs in one namespace, sync `app-NNNN` with `path: app-NNNN`,"
        " `interval: 1m`: 4N distinct objects, from one namespace and one clone (the"
        " cheapest setup that gives 4000 distinct objects; 1000 target namespaces would"
        " add 1000 namespaces' own controller work to both sides). The syncs are created"
        " at once by 8 threads of the benchmark, each POSTing one after another (the"
        " column 'creating the syncs' says how long that took); gitferry runs as a process"
        " (`python -m gitferry run --namespace p1-N`, the install's ServiceAccount, default"
        " settings) started before the syncs, fresh for each N. Time: from the start of"
        " the create to the watch event (a watch on the syncs, not a LIST every 0.5 s:"
        " that would load the API server it measures) that makes all N Ready with the"
        " commit applied. Baseline, in the same run, in another namespace, just before: `kubectl"
        " apply --server-side -f <dir> -R -n kubectl-N` of a copy of the same N"
        " directories (one process, as a user would apply them). Both namespaces are"
        " deleted, and waited for, before the next N.",
        "",
        f"![time to Ready against N]({PLOT})",
        "",
        "| N | gitferry: all Ready | kubectl --server-side | ratio | creating the syncs | operator peak RSS | operator CPU (+ git) | reconcile p50 (fetch /"
        " apply done) | reconcile threads busy | API requests per 4 objects: gitferry /"
        " kubectl |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in [*sorted(r.p1, key=lambda x: x.n), *r.p1_threads]:
        label = f"{p.n}" if p in r.p1 else f"{p.n}, {p.threads} threads"
        rows.append(
            f"| {label} | {p.gitferry_s:.1f} s | {p.kubectl_s:.1f} s | {p.ratio:.2f} |"
            f" {p.create_s:.1f} s | {p.peak_rss_mib:.0f} MiB ({p.rss_at_start_mib:.0f} at start)"
            f" | {p.cpu_own:.1f} s = {p.cpu_own / p.gitferry_s * 100:.0f} % (+ {p.cpu_children:.1f}"
            f" s) | {_ms(p.reconcile_ms)} ms ({_ms(p.fetch_ms)} / {_ms(p.apply_ms)}) |"
            f" {p.busy * 100:.0f} % of {p.threads} | {p.per_sync:.1f} /"
            f" {p.kubectl_requests / p.n:.1f} |"
        )
    rows += [
        "",
        "- Operator CPU: its process's utime + stime from the first create to all Ready,"
        " and as a share of one core over that time; + the git processes it started.",
        "- Reconcile p50: the `duration_ms` of each first reconcile's `result=ok` line"
        " (fetch, render, ownership reads, dry-run, apply, status); in brackets when its"
        " fetch and its apply stage ended (`duration_ms` of the `action=fetch` and"
        " `action=apply` lines, counted from the reconcile's start). Threads busy: the sum"
        " of reconcile durations over threads × wall time.",
        "- API requests: the operator's (its ServiceAccount in the audit log, watches"
        " apart) from the first create to all Ready, per sync; kubectl's (the admin's"
        " requests with a `kubectl` user agent) per 4 objects, its discovery included.",
    ]
    if r.p1_threads:
        rows.append(
            f"- The row with {r.p1_threads[0].threads} threads: the same N again, every"
            f" operator setting the same but `GITFERRY_MAX_CONCURRENT_RECONCILES`"
            f" (default {r.p1[0].threads}): would more reconcile threads help?"
        )
    big = max(r.p1, key=lambda x: x.n)
    if big.requests is not None:
        kinds = kinds_of_requests(big.requests.calls)
        rows.append(
            f"- The operator's requests at N = {big.n}, per sync: {per_unit(kinds, big.n)}."
        )
    rows += ["", *cpu_table(r)]
    at_1000 = r.p1_at(1000)
    if at_1000 is not None and at_1000.steady is not None:
        s = at_1000.steady
        rows += [
            "### Steady state at 1000 syncs",
            "",
            f"After all 1000 were Ready, {s.seconds:.0f} s of nothing changing (`interval:"
            f" 1m` ± 10 % jitter): the operator used {s.cpu_own:.1f} s of CPU ="
            f" **{s.percent:.1f} % of one core** (its own threads, /proc/<pid>/stat utime +"
            f" stime), plus {s.cpu_children:.1f} s ({s.percent_children:.1f} %) in the git"
            f" processes it started. {s.reconciles} reconciles ran, {s.noop_reconciles} of"
            f" them answered by the watch cache (no API request); git was asked"
            f" {', '.join(f'{k} {v:.0f}×' for k, v in sorted(s.git.items())) or 'nothing'}"
            f" (`gitferry_git_requests_total`). RSS at the end: {s.rss_mib:.0f} MiB. One"
            f" /metrics page: {s.metrics_kib:.0f} KiB.",
            "",
        ]
    if r.big is not None:
        b = r.big
        rows += [
            "## One sync of 500 objects",
            "",
            f"One sync of `big-500/` (125 apps × the same 4 objects = {b.objects} objects in"
            " 125 files), created with the operator process running, against `kubectl apply"
            " --server-side -f big-500 -R` of the same files in another namespace.",
            "",
            "| | first apply |",
            "|---|---:|",
            f"| gitferry: sync created → Ready | {b.gitferry_s:.1f} s |",
            f"| gitferry: the reconcile's own `duration_ms` (apply stage done at) |"
            f" {b.reconcile_ms / 1000:.1f} s ({b.apply_ms / 1000:.1f} s) |",
            f"| `kubectl apply --server-side` | {b.kubectl_s:.1f} s |",
            f"| ratio | {b.gitferry_s / b.kubectl_s:.2f} |",
            "",
        ]
    return rows


CPU_COLUMNS = ("kube-apiserver", "etcd", "kube-controller-manager", "gitferry", "other")


def cpu_table(r: Results) -> list[str]:
    """Where the machine's CPU went during each side's run."""
    rows = [
        "Where the CPU went during each run (share of one core; the machine's busy share"
        " is of all its CPUs; `other`: the rest of the busy time — kubectl and git"
        " processes, kube-scheduler and kwok, the benchmark's own polling, other work on"
        " the machine):",
        "",
        "| N | run | load (1 min) at its start | machine busy | " + " | ".join(CPU_COLUMNS) + " |",
        "|---|---|---:|---:|" + "---:|" * len(CPU_COLUMNS),
    ]
    for p in [*sorted(r.p1, key=lambda x: x.n), *r.p1_threads]:
        label = f"{p.n}" if p in r.p1 else f"{p.n}, {p.threads} threads"
        for side, shares, machine in (
            ("kubectl", p.cpu_kubectl, p.machine_kubectl),
            ("gitferry", p.cpu_gitferry, p.machine_gitferry),
        ):
            cells = " | ".join(f"{shares[c]:.0f} %" if c in shares else "-" for c in CPU_COLUMNS)
            load = f"{p.load:.2f}" if side == "kubectl" else ""
            rows.append(f"| {label} | {side} | {load} | {machine:.0f} % | {cells} |")
    return [*rows, ""]


def noop_section(r: Results) -> list[str]:
    out: list[str] = []
    if r.noop is not None:
        o = r.noop
        verbs = ", ".join(f"{k} {v}" for k, v in sorted(o.requests.by_verb.items())) or "none"
        out += [
            "## No-op reconcile through the operator (the watch cache)",
            "",
            f"One sync of 100 objects (`hundred/`: 60 ConfigMaps, 20 Services, 20 Deployments)"
            f" at `interval: {NOOP_INTERVAL}`, the operator running as a process; once it"
            f" was Ready and settled, a window of {o.window_s:.0f} s:",
            "",
            f"- {o.reconciles} reconciles, {o.watch_cache} of them answered by the watch cache"
            " (`revision=… unchanged (watch cache)`).",
            f"- Their `duration_ms`: median {_ms(o.durations_ms)} ms, max"
            f" {max(o.durations_ms or [0])} ms (the interval's git question through the"
            " shared cache, then the baseline compared with the watch cache).",
            f"- The operator's requests in the window (audit log, its ServiceAccount, watches"
            f" apart): {o.requests.total} ({verbs}: {o.asked()}), {o.in_namespace} of them"
            f" about the sync's namespace; {o.requests.watches} watch requests opened or reopened"
            f" — {o.per_reconcile:.2f} requests per reconcile.",
            "",
        ]
    if r.direct is not None:
        out += direct.section(r.direct)
    if r.drift is not None:
        d = r.drift
        out += [
            "## Drift correction latency",
            "",
            f"The same sync at `interval: 1h`: {EDITS} merge patches of a field gitferry"
            " manages (`data.revision` of 20 different ConfigMaps, so that no fight"
            " backoff starts) and 20 deletions (20 other ConfigMaps), one at a time; each"
            " timed from just before the write to the first GET (every 20 ms) that shows"
            " git's value again (for a deletion: the object with a new uid).",
            "",
            "| | p50 | p90 | max |",
            "|---|---:|---:|---:|",
            f"| edit put back | {_p50(d.edits):.2f} s | {percentile(d.edits, 90):.2f} s |"
            f" {max(d.edits):.2f} s |",
            f"| deletion recreated | {_p50(d.deletions):.2f} s | {percentile(d.deletions, 90):.2f}"
            f" s | {max(d.deletions):.2f} s |",
            "",
            "Each correction waits `DEBOUNCE_SECONDS` (0.5 s, drift.py) after the watch event"
            " so that a burst makes one reconcile, then reconciles the sync (fetch from the"
            " shared cache, render, dry-run and apply of what changed).",
            "",
        ]
    return out


def traffic_section(r: Results) -> list[str]:
    t = r.traffic
    if t is None:
        return []
    metric = ", ".join(f"{k} {v:.0f}" for k, v in sorted(t.metric.items())) or "none"
    push = ", ".join(f"{s:.2f}" for s in t.push_s)
    return [
        "## Git requests per interval, and push → applied",
        "",
        f"{t.syncs} syncs of one repository (one directory of 4 objects each), served over"
        " smart HTTP by the harness's git server, which logs each protocol-v2 command."
        f" At `interval: {t.interval_s}s` (± 10 % jitter), nothing pushed, over"
        f" {t.window_s:.0f} s ({t.window_s / t.interval_s:.1f} intervals):",
        "",
        f"- {t.ls_refs} `ls-refs` and {t.fetches} `fetch` requests ({t.http_requests} HTTP"
        f" requests in all) = **{t.per_interval:.1f} git requests per interval for"
        f" {t.syncs} syncs**; the operator's `gitferry_git_requests_total` rose by {metric};"
        f" {t.reconciles} reconciles ran.",
        "",
        f"Then `interval: 1h`, and {len(t.push_s)} commits each changing one sync's directory,"
        " each pushed and announced with a GitHub push webhook signed with the receiver's"
        " secret (`X-Hub-Signature-256`), naming the changed file. From just before the"
        " push to the sync's status showing the commit applied (GET every 20 ms):"
        f" **p50 {_p50(t.push_s):.2f} s**, p90 {percentile(t.push_s, 90):.2f} s ({push} s)."
        f" Each webhook matched {', '.join(str(m) for m in sorted(t.matched))} sync(s) of the"
        f" {t.syncs}.",
        "",
    ]


def why_section(r: Results, notes: list[str]) -> list[str]:
    if not notes:
        return []
    return ["## Where the time goes", "", *notes, ""]


def render(r: Results, notes: list[str]) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Measured {r.started.strftime('%Y-%m-%d %H:%M UTC')} by `make bench` (`python -m"
        " bench.run`), which rewrites this file and the plot; one run against the local"
        " control plane. Numbers live here, never as timing assertions in tests.",
        "",
        *machine_lines(r),
        "",
        "## Goals (issues 11 and 12)",
        "",
        *goals(r),
        "",
        *why_section(r, notes),
        *p1_section(r),
        *noop_section(r),
        *traffic_section(r),
        "Reproduce: `make bench` (builds the control plane on first use).",
        "",
    ]
    if r.render:
        lines += [r.render, ""]
    return "\n".join(lines)


def now() -> datetime:
    return datetime.now(UTC)
