"""`persist stability`: does a regime train stably? Every cell of a grid for N SGD steps, each loss read as it comes.

Before a long GPU sweep it is worth knowing whether the hyperparameters hold at all: the paper's fixed lr with a
summed gradient makes the step grow with m, and K reuses of one batch (k*mu up to K*mu) push further. This trains each
cell (m, K, schedule, normalization) on the configured data and model for at least `steps` steps, and at least
`sample_steps` steps x m, and records every step's training loss. A cell is stable when every loss is finite and the
loss fell: the mean over the last 10% of the steps is below the mean over the first 10% (at least 10 steps, in whole
loads of K steps, so each window weighs every use of its batches alike). Rows are appended to `stability.jsonl` as
cells finish, so a rerun skips finished cells; every row keeps its losses, and is judged again from them on reading.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from persist.config import PersistError, RunConfig
from persist.data import ImageData, load_dataset
from persist.optim import set_lr
from persist.train import Trainer

MIN_WINDOW = 10  # steps averaged at each end to decide whether the loss fell, at the least
ROWS = "stability.jsonl"

# the paper's cells (Section 2: m x K with constant lr; Section 3: k*mu at m = 256 and 512)
PAPER_CELLS = [(m, k, "constant") for m in (32, 256, 512) for k in (1, 2, 5)] + [
    (m, k, "linear") for m in (256, 512) for k in (2, 5)
]


def paper_cells(batch_sizes=None, persistencies=None, schedules=None) -> list[tuple[int, int, str]]:
    """The paper's cells, narrowed to the given m, K and schedules (None or empty: all)."""
    cells = [
        (m, k, schedule)
        for m, k, schedule in PAPER_CELLS
        if (not batch_sizes or m in batch_sizes)
        and (not persistencies or k in persistencies)
        and (not schedules or schedule in schedules)
    ]
    if not cells:
        raise PersistError(
            "no paper cell has these --batch-sizes, --persistencies and --schedules: m is 32, 256, 512; K is 1, 2, 5; "
            "schedules are constant and linear (k*mu, at m = 256 and 512)"
        )
    return cells


def cell_line(r: dict) -> str:
    state = "stable" if r["finite"] and r["falling"] else ("NaN" if not r["finite"] else "loss did not fall")
    return (
        f"{r['normalization']:>11} m={r['batch_size']:<3} K={r['persistency']} {r['lr_schedule']:<8} "
        f"steps {r['steps_done']:>4}  loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}  {state}  "
        f"({r['s_per_step']:.2f} s/step)"
    )


def steps_for(m: int, steps: int, sample_steps: int) -> int:
    """At least `steps`, and at least `sample_steps` samples' worth: with the paper's summed gradient at a fixed lr,
    one step moves the weights in proportion to m, so a small m needs more steps to get as far as a large one."""
    return max(steps, math.ceil(sample_steps / m))


def probe(trainer: Trainer, steps: int) -> dict:
    """Train `steps` SGD steps (K per loaded batch, across epochs as needed); stop early at a non-finite loss."""
    config, losses = trainer.config, []
    start = time.perf_counter()
    for epoch in itertools.count(1):
        for x, y in trainer.pipeline.epoch(epoch):
            for lr in trainer.lrs:
                set_lr(trainer.optimizer, lr)
                loss_sum = torch.zeros((), device=trainer.device)
                trainer.step(x, y, loss_sum)
                losses.append(loss_sum.item() / config.batch_size)  # deliberate sync: the probe reads every loss
                if not math.isfinite(losses[-1]) or len(losses) == steps:
                    return summarize(config, losses, time.perf_counter() - start, steps)
    raise AssertionError("unreachable")


def window(steps: int, persistency: int) -> int:
    """10% of the steps, at least MIN_WINDOW, rounded up to whole loads of K steps."""
    size = max(MIN_WINDOW, steps // 10)
    return math.ceil(size / persistency) * persistency


def judge(losses: list[float], persistency: int, steps_planned: int) -> dict:
    """Finite? Did the loss fall (mean of the last window below the first)? From the per-step losses alone."""
    finite = all(math.isfinite(v) for v in losses)
    size = window(steps_planned, persistency)
    first = statistics.fmean(losses[:size])
    last = statistics.fmean(losses[-size:])
    good = [v for v in losses if math.isfinite(v)]
    return {
        "finite": finite,
        "diverged_step": None if finite else len(losses),
        "window_steps": size,
        "loss_first": first,
        "loss_last": last,
        "loss_min": min(good) if good else math.nan,
        "falling": finite and last < first,
    }


def summarize(config: RunConfig, losses: list[float], seconds: float, steps: int) -> dict:
    return {
        "normalization": config.normalization,
        "batch_size": config.batch_size,
        "persistency": config.persistency,
        "lr_schedule": config.lr_schedule,
        "steps_planned": steps,
        "steps_done": len(losses),
        **judge(losses, config.persistency, steps),
        "s_per_step": seconds / len(losses),
        "losses": losses,
        "config": config.as_dict(),
    }


def cell_key(row: dict) -> tuple:
    return (row["normalization"], row["batch_size"], row["persistency"], row["lr_schedule"], row["steps_planned"])


def read_rows(out: Path) -> list[dict]:
    path = out / ROWS
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:  # one rule for every row, whichever version wrote it
        for stale in ("loss_first10", "loss_last10"):
            row.pop(stale, None)
        row.update(judge(row["losses"], row["persistency"], row["steps_planned"]))
    return rows


def run_stability(
    base: RunConfig,
    cells: list[tuple[int, int, str]],
    normalizations: list[str],
    steps: int,
    out: Path,
    on_cell: Callable[[dict], None] | None = None,
    sample_steps: int = 0,
) -> list[dict]:
    """Probe every (normalization, cell) not yet in out/stability.jsonl; return all rows, finished ones included."""
    out.mkdir(parents=True, exist_ok=True)
    rows = read_rows(out)
    done = {cell_key(r) for r in rows}
    data: ImageData = load_dataset(base)
    for normalization, (m, k, schedule) in itertools.product(normalizations, cells):
        config = replace(base, normalization=normalization, batch_size=m, persistency=k, lr_schedule=schedule)
        cell_steps = steps_for(m, steps, sample_steps)
        if (normalization, m, k, schedule, cell_steps) in done:
            continue
        trainer = Trainer(config, data)
        try:
            row = probe(trainer, cell_steps)
        finally:
            trainer.close()
        with open(out / ROWS, "a") as f:
            f.write(json.dumps(row) + "\n")
        rows.append(row)
        if on_cell is not None:
            on_cell(row)
    return rows


def markdown(rows: list[dict]) -> str:
    header = (
        "| normalization | m | K | lr | steps | finite | window | loss, first window | loss, last window | min "
        "| falling | s/step |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [header]
    for r in sorted(rows, key=lambda r: (r["normalization"], r["lr_schedule"], r["batch_size"], r["persistency"])):
        finite = "yes" if r["finite"] else f"**NaN at step {r['diverged_step']}**"
        lines.append(
            f"| {r['normalization']} | {r['batch_size']} | {r['persistency']} | "
            f"{'k*mu' if r['lr_schedule'] == 'linear' else 'mu'} | {r['steps_done']} | {finite} | "
            f"{r['window_steps']} | {r['loss_first']:.3f} | {r['loss_last']:.3f} | {r['loss_min']:.3f} | "
            f"{'yes' if r['falling'] else 'no'} | {r['s_per_step']:.2f} |"
        )
    return "\n".join(lines) + "\n"
