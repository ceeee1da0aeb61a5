"""`make bench`: gitferry against the goals of issues 11 and 12, in one run
against the local control plane, written to BENCHMARKS.md and a plot.

Starts its own control plane, installs gitferry (`kubectl apply -k manifests/`,
the in-cluster Deployment scaled to 0) and runs, each in its own namespace:

1. direct.py      a 100-object sync through `reconcile()` directly: full verification
2. drift.py       the no-op reconcile through the operator process, drift latency
3. git_traffic.py git requests per interval for 100 syncs, push → applied by webhook
4. scale.py       one 500-object sync; P1 at N = 10, 100, 300, 1000 beside kubectl,
                  the steady state at 1000
5. render_memory  rendering files at the limits beside kubectl kustomize

Every process it starts (control plane, operators, git server) is stopped by
pid at the end, also on failure.

    python -m bench.run [--sizes 10,100,300,1000] [--only drift,p1,…] [--out FILE]
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import sys
import tempfile
import time
from pathlib import Path

from tests.harness.controlplane import REPO, ControlPlane, build_binaries

from . import direct, drift, git_traffic, scale
from .common import machine, other_work, say
from .fleet import Bench
from .plot import time_to_ready
from .process import EXTRA_ENV, install
from .report import PLOT, Results, now, render
from .why import analyse

THREADS_AT = 300  # P1's N measured again with more reconcile threads
SECTIONS = ("direct", "drift", "traffic", "big", "p1", "render")


def run(work: Path, sizes: list[int], only: set[str], steady: bool = True) -> Results:
    t_start = time.monotonic()
    load = os.getloadavg()
    busy = other_work()
    say(f"load {load[0]:.2f}; busy: {'; '.join(busy) or 'nothing else'}")
    bin_dir = build_binaries()
    say("starting the control plane …")
    t0 = time.perf_counter()
    cp = ControlPlane.start(work / "controlplane", bin_dir)
    cp_start = time.perf_counter() - t0
    try:
        bench = Bench.make(cp, work)
        install(bench.cluster)
        res = Results(machine(cp.kubeconfig, load, busy), cp_start, now())
        try:
            if "direct" in only:
                say("direct reconcile() of 100 objects (full verification) …")
                res.direct = direct.run(cp, work)
            if "drift" in only:
                res.noop, res.drift = drift.run(bench)
            if "traffic" in only:
                res.traffic = git_traffic.run(bench)
            if "big" in only:
                res.big = scale.big_sync(bench)
            if "p1" in only:
                for n in sizes:
                    res.p1.append(scale.p1(bench, n, steady=n == 1000 and steady))
                if THREADS_AT in sizes and "GITFERRY_MAX_CONCURRENT_RECONCILES" not in EXTRA_ENV:
                    # Would more reconcile threads help? The same N, 4 × the default.
                    more = {"GITFERRY_MAX_CONCURRENT_RECONCILES": str(4 * scale.threads({}))}
                    res.p1_threads.append(scale.p1(bench, THREADS_AT, env=more))
        finally:
            bench.api.close()
    finally:
        say("stopping the control plane …")
        cp.stop()
    if "render" in only:
        say("rendering files at the limits …")
        from bench.render_memory import measure

        res.render = measure()
    res.load_end = os.getloadavg()
    res.busy_end = other_work()
    res.total_s = time.monotonic() - t_start
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.run")
    ap.add_argument("--sizes", default="10,100,300,1000", help="P1's N values")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"of {','.join(SECTIONS)}")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for every operator")
    ap.add_argument("--no-steady", action="store_true", help="skip the steady state at 1000")
    ap.add_argument("--save", help="also pickle the measurements to this file")
    ap.add_argument("--report", help="no measuring: write the report of a --save file")
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
    for kv in args.env:
        key, _, value = kv.partition("=")
        EXTRA_ENV[key] = value
    sizes = sorted(int(n) for n in args.sizes.split(","))
    only = set(args.only.split(","))
    out = Path(args.out)
    if args.report:
        res = pickle.loads(Path(args.report).read_bytes())
    else:
        with tempfile.TemporaryDirectory(prefix="gitferry-bench-") as tmp:
            res = run(Path(tmp), sizes, only, steady=not args.no_steady)
    if args.save:
        Path(args.save).write_bytes(pickle.dumps(res))
    if res.p1:
        plot = out.parent / PLOT
        plot.parent.mkdir(parents=True, exist_ok=True)
        time_to_ready(
            res.p1, plot,
            f"{res.started:%Y-%m-%d}, {res.machine.cpus} CPUs, load {res.machine.load[0]:.1f}"
            " at the start; local control plane; operator as a process",
        )  # fmt: skip
        say(f"plot written to {plot}")
    out.write_text(render(res, analyse(res)))
    say(f"written to {out} after {res.total_s / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
