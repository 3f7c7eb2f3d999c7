"""Figures in the paper's layout, from records only.

For each pipeline and m: test accuracy and test loss against training wall-clock time (left) and against epochs
(right), one line per K (Figures 1-3). The adaptive-lr comparison puts constant (solid) against k*mu (dashed) for each
K > 1 (Figures 4-5). Lines are the mean over seeds; the band spans the lowest to the highest seed. Each reuse variant
(--reuse) gets its own figures, and where both ran, a figure sets them side by side.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import pandas

from persist.config import persistency_label

PANELS = [
    ("test_acc", "train_time_s", "test accuracy", "training time (s)"),
    ("test_acc", "epoch", "test accuracy", "epoch"),
    ("test_loss", "train_time_s", "test loss", "training time (s)"),
    ("test_loss", "epoch", "test loss", "epoch"),
]


def seed_curves(runs: pandas.DataFrame) -> pandas.DataFrame:
    """Per epoch: mean, min and max over seeds of accuracy, loss and cumulative training time."""
    runs = runs.sort_values("epoch").copy()
    runs["train_time_s"] = runs.groupby("run")["wall_s"].cumsum()
    return runs.groupby("epoch")[["test_acc", "test_loss", "train_time_s"]].agg(["mean", "min", "max"])


def _draw(axes, curves: pandas.DataFrame, label: str, style: dict) -> None:
    for ax, (y, x, _, _) in zip(axes.flat, PANELS, strict=True):
        if curves[(y, "mean")].isna().all():  # nothing recorded for this panel (a loop that gave no test loss)
            continue
        xs = curves.index if x == "epoch" else curves[(x, "mean")]
        line = ax.plot(xs, curves[(y, "mean")], label=label, **style)[0]
        ax.fill_between(xs, curves[(y, "min")], curves[(y, "max")], color=line.get_color(), alpha=0.15, linewidth=0)


def _figure(title: str):
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), constrained_layout=True)
    for ax, (_, _, ylabel, xlabel) in zip(axes.flat, PANELS, strict=True):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig, axes


def _save(fig, axes, path: Path) -> Path:
    for ax, (_, _, ylabel, _) in zip(axes.flat, PANELS, strict=True):
        if not ax.lines:  # an empty panel says why, instead of showing an axis with no meaning
            ax.cla()
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"no {ylabel} was recorded", ha="center", va="center", transform=ax.transAxes)
    if axes.flat[0].lines:
        axes.flat[0].legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _by_reuse(epochs: pandas.DataFrame, pipeline: str):
    """(reuse, its runs with K > 1 plus every K=1 run) per reuse variant: K=1 is the same run under both."""
    data = epochs[epochs["pipeline"] == pipeline]
    for reuse in sorted(data.loc[data["persistency"] > 1, "reuse"].unique(), key=lambda r: r != "same"):
        yield reuse, data[(data["persistency"] == 1) | (data["reuse"] == reuse)]


def _suffix(reuse: str) -> tuple[str, str]:
    return ("", "") if reuse == "same" else (f", reuse {reuse}", f"-{reuse}")


def paper_figures(epochs: pandas.DataFrame, pipeline: str, out: Path) -> list[Path]:
    paths = []
    for reuse, data in _by_reuse(epochs, pipeline):
        title, name = _suffix(reuse)
        for m, by_m in data.groupby("batch_size"):
            by_m, lr = _paper_schedule(by_m)
            fig, axes = _figure(f"{pipeline} pipeline, m = {m}, {lr}{title}: K = 1 (standard) against K > 1")
            for (k, adaptive, schedule), runs in by_m.groupby(["persistency", "adaptive", "lr_schedule"]):
                label = f"K = {persistency_label(int(k), bool(adaptive))}"
                label += f", {schedule} lr" if k > 1 and schedule != "constant" else ""
                _draw(axes, seed_curves(runs), f"{label} ({runs['seed'].nunique()} seeds)", {})
            paths.append(_save(fig, axes, out / f"fig-{pipeline}-m{m}{name}.png"))
    return paths


def _paper_schedule(by_m: pandas.DataFrame) -> tuple[pandas.DataFrame, str]:
    """The runs of the paper's figure at one m: K = 1 and the constant-lr K > 1 runs (Figures 1-3); where no K > 1
    run had a constant lr (a loop that ran K = 2 with k*mu only), those K > 1 runs, each labelled with its schedule."""
    k1 = by_m[by_m["persistency"] == 1].assign(lr_schedule="constant")  # one use: every schedule is the same
    more = by_m[by_m["persistency"] > 1]
    constant = more[more["lr_schedule"] == "constant"]
    if len(constant) or not len(more):
        return pandas.concat([k1, constant]), "constant lr"
    return pandas.concat([k1, more]), "lr " + ", ".join(sorted(more["lr_schedule"].unique())) + " for K > 1"


def _two_way(by_m: pandas.DataFrame, column: str, solid: str, title: str, path: Path) -> list[Path]:
    """One figure setting two values of `column` side by side for each K (`solid` solid, the other dashed)."""
    if by_m[column].nunique() < 2:
        return []
    fig, axes = _figure(title)
    for (k, value), runs in by_m.groupby(["persistency", column]):
        style = {"linestyle": "-" if value == solid else "--", "color": f"C{k}"}
        _draw(axes, seed_curves(runs), f"K = {k}, {value}", style)
    return [_save(fig, axes, path)]


def adaptive_figures(epochs: pandas.DataFrame, pipeline: str, out: Path) -> list[Path]:
    paths = []
    for reuse, data in _by_reuse(epochs, pipeline):
        title, name = _suffix(reuse)
        for m, by_m in data[(data["persistency"] > 1) & ~data["adaptive"].astype(bool)].groupby("batch_size"):
            heading = f"{pipeline} pipeline, m = {m}{title}: constant lr (solid) against k*mu (dashed)"
            paths += _two_way(by_m, "lr_schedule", "constant", heading, out / f"fig-adaptive-{pipeline}-m{m}{name}.png")
    return paths


def reuse_figures(epochs: pandas.DataFrame, pipeline: str, out: Path) -> list[Path]:
    """Where both reuse variants ran: the paper's reuse (solid) against a fresh crop-flip per use (dashed)."""
    paths = []
    data = epochs[(epochs["pipeline"] == pipeline) & (epochs["persistency"] > 1) & ~epochs["adaptive"].astype(bool)]
    for m, by_m in data[data["lr_schedule"] == "constant"].groupby("batch_size"):
        heading = f"{pipeline} pipeline, m = {m}, constant lr: reuse same (solid) against reaugment (dashed)"
        paths += _two_way(by_m, "reuse", "same", heading, out / f"fig-reuse-{pipeline}-m{m}.png")
    return paths
