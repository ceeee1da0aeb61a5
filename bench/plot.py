"""The time-to-Ready plot: N syncs × 4 objects, gitferry against kubectl."""

from __future__ import annotations

from pathlib import Path

from .scale import P1


def time_to_ready(runs: list[P1], out: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    runs = sorted(runs, key=lambda r: r.n)
    ns = [r.n for r in runs]
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    ax.plot(ns, [r.gitferry_s for r in runs], "o-", label="gitferry: N syncs created → all Ready")
    ax.plot(ns, [r.kubectl_s for r in runs], "s--",
            label="kubectl apply --server-side -R of the same 4N objects")  # fmt: skip
    ax.plot(ns, [1.5 * r.kubectl_s for r in runs], ":", color="grey",
            label="goal: 1.5 × kubectl")  # fmt: skip
    if 1000 in ns:
        ax.plot([1000], [60], "x", color="red", markersize=10, label="goal: 60 s at N = 1000")
    for r in runs:
        ax.annotate(f"{r.gitferry_s:.0f} s", (r.n, r.gitferry_s), textcoords="offset points",
                    xytext=(-8, 8), fontsize=8)  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("N (GitRepositorySyncs of 4 objects each)")
    ax.set_ylabel("seconds")
    ax.set_title("Time to Ready against N", fontsize=11)
    fig.text(0.5, 0.005, subtitle, ha="center", fontsize=7, color="dimgrey")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out)
    plt.close(fig)
