"""Split a persistency speedup into a loading factor and a convergence factor. Reads records only.

For one pipeline and m, against the K=1 run of the same seed:
    time_per_step(K)    = overhead_per_load / K + compute_per_step
    loading factor      = time_per_step(1) / time_per_step(K)       (cheaper steps: one load feeds K of them)
    convergence factor  = steps_to_target(1) / steps_to_target(K)   (fewer steps to the target accuracy)
    speedup             = loading factor x convergence factor = seconds_to_target(1) / seconds_to_target(K)
Times are training time only (wall_s; evaluation excluded). Runs with evaluations on a cadence of fresh samples
(evals.jsonl, --eval-every) get steps, samples and seconds to target interpolated between the evaluation points
around the first crossing; runs without them are read once per epoch, with epoch resolution. On the preloaded
pipeline there is almost no loading to share, so its loading factor should be about 1 (K steps cost K times one
step) and its speedup is pure convergence.
"""

from __future__ import annotations

import math

import pandas

from persist.analysis.compose import borrow_targets, compose, sources
from persist.config import persistency_label
from persist.errors import PersistError
from persist.stats import mean_ci

# auto (--persistency auto:N) is its own K: `adaptive` keeps it apart from a fixed K equal to its cap
RUN_KEYS = ["pipeline", "batch_size", "persistency", "adaptive", "lr_schedule", "reuse", "seed"]
CELL_KEYS = ["pipeline", "batch_size", "persistency", "adaptive", "lr_schedule", "reuse"]
LOADING_FACTOR_NEAR_ONE = 0.15  # preloaded: flag a loading factor further than this from 1


def check_comparable(epochs: pandas.DataFrame) -> None:
    if epochs.empty:
        raise PersistError("no finished epochs in these run folders")
    for column in ("dataset", "train_size", "width", "device", "augment"):
        values = sorted(map(str, epochs[column].dropna().unique()))
        if len(values) > 1:
            raise PersistError(f"runs with different {column} cannot share a figure or table: {', '.join(values)}")


PROGRESS = {  # evals.jsonl's cumulative counters -> the per-run "to target" column each one gives
    "steps_seen": "steps_to_target",
    "fresh_samples_seen": "fresh_samples_to_target",
    "train_s": "seconds_to_target",
}


def interpolate_to_target(evals: pandas.DataFrame, target: float) -> dict[str, float]:
    """Steps, fresh samples and training seconds at which test accuracy first reaches `target`, interpolated
    linearly between the last evaluation below it and the first at or above it (every counter by the same fraction
    of that interval). NaN for each when no evaluation reaches it: "not reached", never a number."""
    evals = evals.sort_values("fresh_samples_seen").reset_index(drop=True)
    hits = evals.index[evals["test_acc"] >= target]
    if len(hits) == 0:
        return dict.fromkeys(PROGRESS.values(), math.nan)
    j = hits[0]
    if j == 0:
        return {column: float(evals.loc[0, counter]) for counter, column in PROGRESS.items()}
    below, above = evals.loc[j - 1], evals.loc[j]
    fraction = (target - below["test_acc"]) / (above["test_acc"] - below["test_acc"])
    return {
        column: float(below[counter] + fraction * (above[counter] - below[counter]))
        for counter, column in PROGRESS.items()
    }


def per_run(
    epochs: pandas.DataFrame, targets: dict[int, float], evals: pandas.DataFrame | None = None
) -> pandas.DataFrame:
    """One row per run: time per step, its parts, and steps/epochs/samples/seconds to the target accuracy of its m
    (NaN if not reached). Runs with evaluations (evals.jsonl) are interpolated between evaluation points; runs
    without them are read once per epoch, so their figures have epoch resolution."""
    rows = []
    has_evals = evals is not None and not evals.empty
    for keys, run in epochs.sort_values("epoch").groupby(RUN_KEYS):
        target = targets[(run["pipeline"].iloc[0], int(run["batch_size"].iloc[0]))]
        wall, compute = run["wall_s"].sum(), run["compute_s"].sum()
        steps, loads = run["steps"].sum(), run["loads"].sum()
        reached = run[run["test_acc"] >= target]
        hit = reached.index[0] if len(reached) else None
        upto = run.loc[:hit] if hit is not None else None
        rows.append(
            {
                **dict(zip(RUN_KEYS, keys, strict=True)),
                "run": run["run"].iloc[0],
                "target": target,
                "epochs_done": len(run),
                "epochs_planned": run["epochs"].iloc[0],
                "diverged": _diverged(run),
                "finished": "status" in run and str(run["status"].iloc[0]).startswith("finished"),
                "best_test_acc": run["test_acc"].max(),
                "time_per_step_s": wall / steps,
                "mean_k": steps / loads,  # K itself, or under auto the uses per load it chose
                "compute_per_step_s": compute / steps,
                "overhead_per_load_s": (wall - compute) / loads,
                "epochs_to_target": len(upto) if upto is not None else math.nan,
                "steps_to_target": upto["steps"].sum() if upto is not None else math.nan,
                "fresh_samples_to_target": upto["fresh_samples"].sum() if upto is not None else math.nan,
                "seconds_to_target": upto["wall_s"].sum() if upto is not None else math.nan,
                "allreduce_probe_s": run["dist_allreduce_probe_s"].mean()
                if "dist_allreduce_probe_s" in run
                else math.nan,
                "resolution": "epoch",
                # an image folder's batches are resampled per pipeline: preloaded's loads are real work there
                "resampled": "pixels" in run and run["pixels"].iloc[0] != "bit-identical",
            }
        )
        run_evals = evals[evals["run"] == run["run"].iloc[0]] if has_evals else None
        if run_evals is not None and len(run_evals):
            fresh_per_epoch = run["fresh_samples"].iloc[0]
            rows[-1].update(interpolate_to_target(run_evals, target), resolution="evaluations")
            rows[-1]["epochs_to_target"] = rows[-1]["fresh_samples_to_target"] / fresh_per_epoch
    runs = pandas.DataFrame(rows)
    # a run whose budget ended it is complete, however many epochs it was allowed
    runs["partial"] = (runs["epochs_done"] < runs["epochs_planned"]) & ~runs["finished"]
    return runs


def _diverged(run: pandas.DataFrame) -> bool:
    return "status" in run and str(run["status"].iloc[0]).startswith("diverged")


TARGET_FRACTION = 0.95  # the default target: this fraction of the K=1 reference's best test accuracy


def default_targets(epochs: pandas.DataFrame) -> dict[tuple[str, int], float]:
    """Per (pipeline, m): 95% of the best test accuracy of its K=1 reference (the mean over its seeds of each run's
    best). Relative to K=1 on purpose: the question is how much sooner K>1 gets where K=1 gets. Where a (pipeline, m)
    has no K=1 run, the best accuracy that every one of its runs reached. Runs that diverged are left out: they would
    pull the target down to their last accuracy before the NaN."""
    healthy = epochs[~epochs["status"].astype(str).str.startswith("diverged")] if "status" in epochs else epochs
    healthy = healthy if len(healthy) else epochs
    best = healthy.groupby(RUN_KEYS)["test_acc"].max().reset_index()
    targets = {}
    for (pipeline, m), runs in best.groupby(["pipeline", "batch_size"]):
        reference = runs[runs["persistency"] == 1]
        value = TARGET_FRACTION * reference["test_acc"].mean() if len(reference) else runs["test_acc"].min()
        targets[(str(pipeline), int(m))] = float(value)
    return targets


def factors(runs: pandas.DataFrame) -> pandas.DataFrame:
    """Per run, its loading, convergence and speedup factors against the K=1 run of the same pipeline, m and seed."""
    runs = runs.reset_index(drop=True)
    base = runs[runs["persistency"] == 1].set_index(["pipeline", "batch_size", "seed"])
    out = runs.copy()
    for column in ("loading_factor", "convergence_factor", "speedup"):
        out[column] = math.nan
    for i, row in runs.iterrows():
        key = (row["pipeline"], row["batch_size"], row["seed"])
        if key not in base.index:
            continue
        one = base.loc[key]
        one = one.iloc[0] if isinstance(one, pandas.DataFrame) else one  # K=1 is the same run for both schedules
        out.loc[i, "loading_factor"] = one["time_per_step_s"] / row["time_per_step_s"]
        reached_by_training = row["steps_to_target"] > 0  # 0: the untrained model already met the target
        out.loc[i, "convergence_factor"] = (
            one["steps_to_target"] / row["steps_to_target"] if reached_by_training else math.nan
        )
        out.loc[i, "speedup"] = out.loc[i, "loading_factor"] * out.loc[i, "convergence_factor"]
    return out


DECOMPOSITION_COLUMNS = [
    "mean_k",
    "overhead_per_load_s",
    "compute_per_step_s",
    "time_per_step_s",
    "steps_to_target",
    "epochs_to_target",
    "fresh_samples_to_target",
    "seconds_to_target",
    "loading_factor",
    "convergence_factor",
    "speedup",
    "allreduce_probe_s",
]


def composed_runs(
    epochs: pandas.DataFrame,
    target: float | None = None,
    evals: pandas.DataFrame | None = None,
    found: dict[str, str] | None = None,
) -> tuple[pandas.DataFrame, dict[tuple[str, int], float]]:
    """per_run and factors, with timing runs composed from their sources (`found`: compose.sources, computed here
    when not given), and the targets."""
    found = sources(epochs) if found is None else found
    cells = {(str(p), int(m)) for p, m in epochs[["pipeline", "batch_size"]].itertuples(index=False)}
    if target is None:  # timing runs are too short to set a target; their pipeline borrows its source's
        targets = borrow_targets(default_targets(epochs[~epochs["run"].isin(found)]), epochs, found)
    else:
        targets = dict.fromkeys(sorted(cells), target)
    return factors(compose(per_run(epochs, targets, evals), found)), targets


def decomposition(
    epochs: pandas.DataFrame, target: float | None = None, evals: pandas.DataFrame | None = None
) -> tuple[pandas.DataFrame, dict[tuple[str, int], float]]:
    """The table: one row per (pipeline, m, K, schedule), each figure as a mean and 95% CI half-width over seeds
    (Student t: exact for small samples of normal values), with n and the per-seed values beside it. `target`
    applies to every (pipeline, m); without it each gets its default (default_targets). With `evals`
    (records.load_evals), time to target is interpolated between evaluation points."""
    check_comparable(epochs)
    runs, targets = composed_runs(epochs, target, evals)
    return cell_table(runs, targets, target), targets


def cell_table(
    runs: pandas.DataFrame, targets: dict[tuple[str, int], float], target: float | None = None
) -> pandas.DataFrame:
    """decomposition's table from composed_runs' output (`target`: the one the user gave, for the error line)."""
    if runs["steps_to_target"].isna().all():
        best = runs["best_test_acc"].max()
        raise PersistError(f"target accuracy {target:.4f} is reached by no run (best is {best:.4f}): lower --target")
    rows = []
    for keys, cell in runs.groupby(CELL_KEYS):
        row = {
            **dict(zip(CELL_KEYS, keys, strict=True)),
            "seeds": len(cell),
            "target": targets[(keys[0], int(keys[1]))],
            "partial": bool(cell["partial"].any()),
            "diverged": int(cell["diverged"].sum()),
            "reached": int(cell["steps_to_target"].notna().sum()),
            "composed": int((cell["composed_from"] != "").sum()),
            "composed_from": ", ".join(sorted(set(cell["composed_from"]) - {""})),
            "resampled": bool(cell["resampled"].any()) if "resampled" in cell else False,
        }
        for column in DECOMPOSITION_COLUMNS:
            row[column], row[column + "_ci"] = mean_ci(cell[column].tolist())
            row[column + "_values"] = cell.sort_values("seed")[column].tolist()  # per seed, NaN: not reached
        row["k_label"] = persistency_label(int(keys[2]), bool(keys[3]))
        row["note"] = _note(row)
        rows.append(row)
    return pandas.DataFrame(rows)


def _note(row: dict) -> str:
    notes = []
    if row["adaptive"]:
        notes.append(
            f"auto: K set by timing (mean {row['mean_k']:.2f} uses per load), so not reproducible and never composed"
        )
    if row["diverged"]:
        notes.append(f"{row['diverged']} seed(s) diverged (NaN loss)")
    elif row["partial"]:
        notes.append("partial run")
    if row["composed"]:
        notes.append(
            f"{row['composed']} of {row['seeds']} seed(s) composed: convergence from {row['composed_from']}, "
            "time per step measured"
        )
    if row["reached"] < row["seeds"]:
        notes.append(f"target missed by {row['seeds'] - row['reached']} seed(s)")
    lf = row["loading_factor"]
    fixed_k = row["persistency"] > 1 and not row["adaptive"]
    # preloaded's load is a gather on the 32 px paths, so its loading factor is ~1; on an image folder it resamples
    if row["pipeline"] == "preloaded" and fixed_k and not row["resampled"] and abs(lf - 1) > LOADING_FACTOR_NEAR_ONE:
        notes.append(f"loading factor {lf:.2f} is not ~1 on preloaded: steps did not cost the same at this K")
    return "; ".join(notes)
