"""accuracy.png: test and seed accuracy per iteration, the legend beside the axes so it never covers a point."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..files import atomic_file
from ..records import FinalModel, IterationRow

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def accuracy_figure(rows: list[IterationRow], final: FinalModel | None = None) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no display, no pyplot state
    from matplotlib.figure import Figure

    xs = [r.iteration for r in rows]
    # "constrained" layout makes room for a legend placed outside the axes ("outside ..." below).
    fig = Figure(figsize=(6, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(xs, [r.test_accuracy * 100 for r in rows], marker="o", label="LLM2LLM student (test)")
    ax.plot(xs, [r.seed_accuracy * 100 for r in rows], marker=".", linestyle=":", label="seed accuracy")
    if any(r.holdout_accuracy is not None for r in rows):
        ax.plot(xs, [r.holdout_accuracy * 100 if r.holdout_accuracy is not None else float("nan") for r in rows],
                marker="s", linestyle="-.", label="held-out seeds")
    if rows:
        ax.axhline(rows[0].test_accuracy * 100, color="grey", linestyle="--", label="plain fine-tuning (iteration 0)")
    if final and xs:
        ax.scatter([xs[-1]], [final.test_accuracy * 100], marker="*", s=120, color="tab:red", zorder=3,
                   label=f"final model (data of iteration {final.kept_iteration}, all seeds)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("accuracy (%)")
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    # Below the axes, never inside them: a legend in a corner covered the last test point (issue 25).
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return fig


def plot_accuracy(rows: list[IterationRow], path: Path, final: FinalModel | None = None) -> None:
    fig = accuracy_figure(rows, final)
    with atomic_file(path) as f:
        fig.savefig(f, format="png")
