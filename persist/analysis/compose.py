"""Train once, time everywhere: a pipeline's speedup composed from another pipeline's convergence. Reads records only.

Every pipeline feeds bit-identical batches (on a CPU, and on a GPU with --deterministic), so the steps a run needs to
reach a target belong to (m, K, schedule, seed), not to the pipeline. A **timing run** is a run planned for fewer
epochs than a run of the same cell (m, K, schedule, seed) on another pipeline, its **source**: `persist sweep` makes
them for every pipeline but its first. A timing run borrows the source's steps, epochs and fresh samples to target,
and its seconds to target are those steps x its own time per step. So its speedup is the source's convergence
factor x its own loading factor.

A **check run** is a full run on a pipeline that is otherwise timed only. The check composes its speedup the same way,
from the first epochs of its own K=1 and K runs (as many as the timing runs had), and sets it beside the speedup
those full runs measured.
"""

from __future__ import annotations

import math

import pandas

CELL = ["batch_size", "persistency", "adaptive", "lr_schedule", "reuse", "seed"]
BORROWED = ["steps_to_target", "epochs_to_target", "fresh_samples_to_target", "best_test_acc", "resolution"]


BIT_IDENTICAL = "bit-identical"  # the manifest's pipeline.pixels when every pipeline feeds the same batches


def _plans(epochs: pandas.DataFrame) -> pandas.DataFrame:
    """One row per run: its pipeline, cell, the epochs it was planned for, and whether its pixels are bit-identical
    to the other pipelines' (records written before the field existed were). Runs under --persistency auto are left
    out: their K depends on timing, so their convergence belongs to the run, never to another pipeline."""
    plans = epochs.groupby("run").first().reset_index()
    plans["identical"] = plans["pixels"] == BIT_IDENTICAL if "pixels" in plans else True
    plans = plans[["run", "pipeline", *CELL, "epochs", "identical"]]
    return plans[~plans["adaptive"].astype(bool)]


def refusals(epochs: pandas.DataFrame) -> list[str]:
    """Why runs that look like timing runs were not composed: their pipelines feed batches that differ in their
    pixels (an image folder, resampled by each pipeline), so another pipeline's convergence is not theirs."""
    plans = _plans(epochs)
    short = plans[(plans["epochs"] < plans.groupby(CELL)["epochs"].transform("max")) & ~plans["identical"]]
    if short.empty:
        return []
    return [
        f"{len(short)} short run(s) on {', '.join(sorted(short['pipeline'].unique()))} were not composed from another "
        "pipeline's convergence: their batches are not bit-identical to the other pipelines' (each pipeline "
        "resamples the image folder's crops its own way, docs/data.md), so a composed speedup would rest "
        "on steps to target they did not share. Train them in full (persist sweep --full) to compare them."
    ]


def sources(epochs: pandas.DataFrame) -> dict[str, str]:
    """Timing run -> its source run. Among a cell's longest runs on other pipelines, the source is the one on a
    pipeline with no timing runs of its own (the pipeline that trains the curves), then by pipeline name. Only runs
    whose batches are bit-identical across pipelines compose (`refusals` says why the others do not)."""
    plans = _plans(epochs)
    plans = plans[plans["identical"]]
    longest = plans.groupby(CELL)["epochs"].transform("max")
    timing = plans[plans["epochs"] < longest]
    timed_pipelines = set(timing["pipeline"])
    found = {}
    for _, run in timing.iterrows():
        same_cell = (plans[CELL] == run[CELL]).all(axis=1)
        full = plans[same_cell & (plans["epochs"] == longest) & (plans["pipeline"] != run["pipeline"])]
        if len(full):
            order = full.assign(timed=full["pipeline"].isin(timed_pipelines)).sort_values(["timed", "pipeline"])
            found[run["run"]] = order["run"].iloc[0]
    return found


def borrow_targets(targets: dict, epochs: pandas.DataFrame, found: dict[str, str]) -> dict:
    """A pipeline with timing runs at some m takes the target of its source's pipeline at that m: its own K=1 runs
    there are too short (or too few) to set one, and composed and measured figures must aim at the same accuracy."""
    plans = _plans(epochs).set_index("run")
    pipeline_of, m_of = plans["pipeline"], plans["batch_size"]
    targets = dict(targets)
    for run, source in found.items():
        key = (str(pipeline_of[run]), int(m_of[run]))
        targets[key] = targets.get((str(pipeline_of[source]), key[1]), targets.get(key))
    return targets


def compose(runs: pandas.DataFrame, found: dict[str, str]) -> pandas.DataFrame:
    """per_run's table with every timing run's figures to target borrowed from its source (`composed_from` names the
    source's pipeline; empty for measured runs)."""
    runs = runs.reset_index(drop=True).copy()
    runs["composed_from"] = ""
    by_run = runs.set_index("run")
    for i, row in runs.iterrows():
        source = found.get(row["run"])
        if source is None or source not in by_run.index:
            continue
        borrowed = by_run.loc[source]
        for column in BORROWED:
            runs.loc[i, column] = borrowed[column]
        runs.loc[i, "seconds_to_target"] = borrowed["steps_to_target"] * row["time_per_step_s"]
        runs.loc[i, "partial"] = bool(borrowed["partial"])
        runs.loc[i, "diverged"] = bool(borrowed["diverged"])
        runs.loc[i, "composed_from"] = borrowed["pipeline"]
    return runs


def _time_per_step(epochs: pandas.DataFrame, run: str, first: int) -> float:
    """Training seconds per step over a run's first `first` epochs."""
    head = epochs[(epochs["run"] == run) & (epochs["epoch"] <= first)]
    return head["wall_s"].sum() / head["steps"].sum()


def checks(epochs: pandas.DataFrame, runs: pandas.DataFrame, found: dict[str, str]) -> pandas.DataFrame:
    """For each check run (K > 1, full, on a pipeline that has timing runs at its m, with a full K=1 beside it): the
    speedup composed from its first epochs against the speedup it measured, and how far its test-accuracy curve is
    from the source's (0.0: identical at every epoch)."""
    plans = _plans(epochs).set_index("run")
    rows = []
    fixed = runs[~runs["adaptive"].astype(bool)]
    for _, row in fixed[(fixed["persistency"] > 1) & (fixed["composed_from"] == "")].iterrows():
        timing = [r for r in found if plans.loc[r, "pipeline"] == row["pipeline"]]
        timing = [r for r in timing if plans.loc[r, "batch_size"] == row["batch_size"]]
        base = runs[
            (runs["pipeline"] == row["pipeline"])
            & (runs["batch_size"] == row["batch_size"])
            & (runs["seed"] == row["seed"])
            & (runs["persistency"] == 1)
            & (runs["composed_from"] == "")
        ]
        source = found.get(timing[0]) if timing else None
        if not timing or base.empty or source is None:
            continue
        first = int(min(plans.loc[r, "epochs"] for r in timing))
        source_row = runs[
            (runs["pipeline"] == plans.loc[source, "pipeline"])
            & (runs[CELL] == row[CELL]).all(axis=1)
            & (runs["composed_from"] == "")
        ]
        if source_row.empty:
            continue
        source_row, base = source_row.iloc[0], base.iloc[0]
        loading = _time_per_step(epochs, base["run"], first) / _time_per_step(epochs, row["run"], first)
        composed = source_row["convergence_factor"] * loading
        rows.append(
            {
                "pipeline": row["pipeline"],
                **{key: row[key] for key in CELL},
                "source": source_row["pipeline"],
                "timing_epochs": first,
                "composed_speedup": composed,
                "measured_speedup": row["speedup"],
                "error_pct": 100 * (composed / row["speedup"] - 1) if row["speedup"] > 0 else math.nan,
                "max_acc_diff": _curve_gap(epochs, row["run"], source_row["run"]),
            }
        )
    return pandas.DataFrame(rows)


def _curve_gap(epochs: pandas.DataFrame, run: str, other: str) -> float:
    """Largest |test_acc difference| over the epochs both runs finished."""
    a = epochs[epochs["run"] == run].set_index("epoch")["test_acc"]
    b = epochs[epochs["run"] == other].set_index("epoch")["test_acc"]
    both = a.index.intersection(b.index)
    return float((a[both] - b[both]).abs().max()) if len(both) else math.nan


def _or_missed(value: float, fmt: str) -> str:
    return "not reached" if math.isnan(value) else fmt.format(value)


def composition_markdown(
    runs: pandas.DataFrame, checked: pandas.DataFrame, refused: list[str] | None = None
) -> list[str]:
    """The report's section on composed runs: what was composed from what, the check against full runs, and what
    was refused composition and why."""
    composed = runs[runs["composed_from"] != ""]
    refused_lines = [*(refused or []), ""] if refused else []
    if composed.empty:
        if refused:
            return ["## Composition", "", "Nothing was composed.", "", *refused_lines]
        return ["## Composition", "", "Every run here was trained in full: nothing was composed.", ""]
    lines = [
        "## Composition: convergence trained once, every pipeline timed",
        "",
        f"{len(composed)} runs on {', '.join(sorted(composed['pipeline'].unique()))} were timing runs "
        f"({', '.join(str(int(e)) for e in sorted(composed['epochs_planned'].unique()))} epochs each). Their steps, "
        f"epochs and fresh samples to target are those of the same cell (m, K, schedule, seed) on "
        f"{', '.join(sorted(composed['composed_from'].unique()))}, which feeds bit-identical batches; their seconds "
        "to target are those steps x their own time per step. So each speedup is that convergence factor x the "
        "pipeline's own loading factor.",
        "",
    ]
    lines += refused_lines
    if checked.empty:
        return [*lines, "No full run on a timed pipeline was there to check the composition against.", ""]
    lines += [
        "Check: full runs on the timed pipeline, their speedup composed from their first epochs (as a timing run "
        "would have) against the speedup they measured, and the largest test-accuracy difference from the source's "
        "curve (0: identical at every epoch).",
        "",
        "| pipeline | m | K | schedule | seed | source | timing epochs | composed x | measured x | error % | "
        "max acc diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, c in checked.iterrows():
        lines.append(
            f"| {c['pipeline']} | {c['batch_size']} | {c['persistency']} | {c['lr_schedule']} | {c['seed']} | "
            f"{c['source']} | {c['timing_epochs']} | {_or_missed(c['composed_speedup'], '{:.2f}')} | "
            f"{_or_missed(c['measured_speedup'], '{:.2f}')} | {_or_missed(c['error_pct'], '{:+.1f}')} | "
            f"{c['max_acc_diff']:.4f} |"
        )
    return [*lines, ""]
