"""Figures in the paper's layout, from records only.

For each pipeline and m: test accuracy and test loss against training wall-clock time (left) and against epochs
(right), one line per K (Figures 1-3). The adaptive-lr comparison puts constant (solid) against k*mu (dashed) for each
K > 1 (Figures 4-5). Lines are the mean over seeds; the band spans the lowest to the highest seed.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import pandas

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
    axes.flat[0].legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def paper_figures(epochs: pandas.DataFrame, pipeline: str, out: Path) -> list[Path]:
    paths = []
    data = epochs[(epochs["pipeline"] == pipeline) & (epochs["lr_schedule"] == "constant")]
    for m, by_m in data.groupby("batch_size"):
        fig, axes = _figure(f"{pipeline} pipeline, m = {m}, constant lr: K = 1 (standard) against K > 1")
        for k, runs in by_m.groupby("persistency"):
            _draw(axes, seed_curves(runs), f"K = {k} ({runs['seed'].nunique()} seeds)", {})
        paths.append(_save(fig, axes, out / f"fig-{pipeline}-m{m}.png"))
    return paths


def adaptive_figures(epochs: pandas.DataFrame, pipeline: str, out: Path) -> list[Path]:
    paths = []
    data = epochs[(epochs["pipeline"] == pipeline) & (epochs["persistency"] > 1)]
    for m, by_m in data.groupby("batch_size"):
        if by_m["lr_schedule"].nunique() < 2:
            continue
        fig, axes = _figure(f"{pipeline} pipeline, m = {m}: constant lr (solid) against k*mu (dashed)")
        for (k, schedule), runs in by_m.groupby(["persistency", "lr_schedule"]):
            style = {"linestyle": "--" if schedule == "linear" else "-", "color": f"C{k}"}
            _draw(axes, seed_curves(runs), f"K = {k}, {schedule}", style)
        paths.append(_save(fig, axes, out / f"fig-adaptive-{pipeline}-m{m}.png"))
    return paths
