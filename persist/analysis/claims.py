"""The paper's claims about persistency, tested on a sweep's runs. Reads records only (analysis.composed_runs).

Each claim is judged seed by seed: a K run against the K=1 run of the same pipeline, m and seed (or k*mu against
constant lr), so that seed-to-seed spread cannot pass for an effect. A claim *held* when it held in every seed that
could decide it, *did not hold* when it held in none, and is *mixed* otherwise. A run that never reached the target
took longer than any run that did; two runs that both missed it decide nothing, and neither do two that met it
before their first step (a target the untrained model meets). The paper's m = 256 and 512 are
stood in for by the sweep's largest m, and its m = 32 by the smallest; the verdicts say which m they used.
"""

from __future__ import annotations

import math

import pandas


def _sooner(a: float, b: float) -> bool | None:
    """Whether `a` comes strictly sooner than `b` (NaN: never reached); None when neither was reached, or when both
    were there before any training (0: the untrained model already met the target, a target set too low)."""
    if (math.isnan(a) and math.isnan(b)) or (a == 0 and b == 0):
        return None
    return not math.isnan(a) and (math.isnan(b) or a < b)


def _paired(runs: pandas.DataFrame, pipeline: str, m: int, k: int, schedule: str, base_k: int, base_schedule: str):
    """(run, baseline run) pairs of one pipeline and m, matched by seed."""
    cell = runs[(runs["pipeline"] == pipeline) & (runs["batch_size"] == m)]
    a = cell[(cell["persistency"] == k) & (cell["lr_schedule"] == schedule)].set_index("seed")
    b = cell[(cell["persistency"] == base_k) & (cell["lr_schedule"] == base_schedule)].set_index("seed")
    return [(a.loc[s], b.loc[s]) for s in sorted(a.index.intersection(b.index))]


def _per_epoch_and_second(a, b, wins_per_second: bool) -> bool | None:
    """Whether run `a` beat its K=1 pair `b` per epoch, and per second exactly when `wins_per_second`."""
    per_epoch = _sooner(a["epochs_to_target"], b["epochs_to_target"])
    per_second = _sooner(a["seconds_to_target"], b["seconds_to_target"])
    if per_epoch is None or per_second is None:
        return None
    return per_epoch and per_second == wins_per_second


def _verdict(outcomes: list[bool | None]) -> str:
    decided = [o for o in outcomes if o is not None]
    if not decided:
        return "undecided (no seed could decide it: both runs missed the target, or the untrained model met it)"
    held = sum(decided)
    word = "held" if held == len(decided) else "did not hold" if held == 0 else "mixed"
    return f"{word} ({held} of {len(decided)} seeds)"


def _median(values) -> str:
    values = [v for v in values if not math.isnan(v)]
    return f"{pandas.Series(values).median():.1f}" if values else "not reached"


def auto_lines(fixed: pandas.DataFrame, adaptive: pandas.DataFrame) -> list[str]:
    """--persistency auto against the best fixed K of the same pipeline, m and seed (best: the soonest to target in
    seconds, among every fixed K including 1, constant lr): does auto reach the target at least as soon?"""
    lines = []
    for (pipeline, m, cap), runs in adaptive.groupby(["pipeline", "batch_size", "persistency"]):
        outcomes, chosen = [], []
        for _, a in runs.iterrows():
            same = fixed[
                (fixed["pipeline"] == pipeline)
                & (fixed["batch_size"] == m)
                & (fixed["seed"] == a["seed"])
                & ((fixed["lr_schedule"] == a["lr_schedule"]) | (fixed["persistency"] == 1))
            ]
            if same.empty:
                continue
            best = same.loc[same["seconds_to_target"].fillna(math.inf).idxmin()]
            chosen.append(f"K={best['persistency']}")
            sooner = _sooner(best["seconds_to_target"], a["seconds_to_target"])  # the fixed K strictly sooner?
            outcomes.append(None if sooner is None else not sooner)
        if outcomes:
            lines.append(
                f"- {pipeline}, m={m}: auto:{cap} reaches the target at least as soon as the best fixed K "
                f"(per seed: {', '.join(chosen)}): **{_verdict(outcomes)}**. Median seconds: auto "
                f"{_median(runs['seconds_to_target'].tolist())}, mean uses per load "
                f"{runs['mean_k'].median():.2f}."
            )
    return lines


def claim_lines(runs: pandas.DataFrame, unfinished: pandas.DataFrame | None = None) -> list[str]:
    """Markdown bullets, one per claim and pipeline. `unfinished` (records.load_unfinished): runs that diverged
    before finishing an epoch count as never reaching the target."""
    lines = []
    if unfinished is not None and len(unfinished):
        lost = unfinished[unfinished["status"].astype(str).str.startswith("diverged")]
        lost = lost.assign(epochs_to_target=math.nan, seconds_to_target=math.nan, time_per_step_s=math.nan)
        runs = pandas.concat([runs, lost[[c for c in lost.columns if c in runs.columns]]], ignore_index=True)
    runs = runs[(runs["persistency"] == 1) | (runs["reuse"] == "same")]  # the paper's persistency: the batch as loaded
    adaptive = runs[runs["adaptive"].astype(bool)] if "adaptive" in runs else runs.iloc[:0]
    runs = runs[~runs.index.isin(adaptive.index)]  # the paper's claims are about a fixed K
    lines += auto_lines(runs, adaptive)
    small, large = int(runs["batch_size"].min()), int(runs["batch_size"].max())
    k = int(runs["persistency"].max())
    if k == 1:
        return ["- No K > 1 runs: the paper's claims about persistency cannot be tested."]
    for pipeline in sorted(runs["pipeline"].unique()):
        for m, both in ((small, False), (large, True)) if small != large else ((small, small >= 256),):
            pairs = _paired(runs, pipeline, m, k, "constant", 1, "constant")
            if not pairs:
                continue
            outcomes = [_per_epoch_and_second(a, b, both) for a, b in pairs]
            claim = (
                "wins per epoch and per second (the paper's m = 256 and 512)"
                if both
                else ("wins per epoch but not per second (the paper's m = 32)")
            )
            epoch_ratio = pandas.Series([k * a["time_per_step_s"] / b["time_per_step_s"] for a, b in pairs])
            lines.append(
                f"- {pipeline}, m={m}: K={k} {claim}: **{_verdict(outcomes)}**. Median epochs to target K=1 "
                f"{_median([b['epochs_to_target'] for _, b in pairs])}, K={k} "
                f"{_median([a['epochs_to_target'] for a, _ in pairs])}; seconds K=1 "
                f"{_median([b['seconds_to_target'] for _, b in pairs])}, K={k} "
                f"{_median([a['seconds_to_target'] for a, _ in pairs])}. A K={k} epoch took "
                f"{epoch_ratio.median():.2f}x a K=1 epoch (the paper, m=32, K=5 on a GTX 1080 Ti: about 2.9x)."
            )
        for m in sorted(runs["batch_size"].unique()):
            for kk in sorted(runs.loc[runs["persistency"] > 1, "persistency"].unique()):
                pairs = _paired(runs, pipeline, int(m), int(kk), "linear", int(kk), "constant")
                if not pairs:
                    continue
                outcomes = [_sooner(a["seconds_to_target"], b["seconds_to_target"]) for a, b in pairs]
                lines.append(
                    f"- {pipeline}, m={m}, K={kk}: k*mu reaches the target sooner than constant lr: "
                    f"**{_verdict(outcomes)}**. Median seconds: k*mu "
                    f"{_median([a['seconds_to_target'] for a, _ in pairs])}, constant "
                    f"{_median([b['seconds_to_target'] for _, b in pairs])}."
                )
    return lines
