"""`persist stability`: does a regime train stably? Every cell of a grid for N SGD steps, each loss read as it comes.

Before a long GPU sweep it is worth knowing whether the hyperparameters hold at all: the paper's fixed lr with a
summed gradient makes the step grow with m, and K reuses of one batch (k*mu up to K*mu) push further. This trains each
cell (m, K, schedule, normalization) on the configured data and model for at least `steps` steps, and at least
`sample_steps` steps x m, and records every step's training loss. A cell is stable when every loss is finite and the
loss fell: the mean over the last 10% of the steps is below the mean over the first 10% (at least 10 steps, in whole
loads of K steps, so each window weighs every use of its batches alike). Rows are appended to `stability.jsonl` as
cells finish, so a rerun skips finished cells; a cell in progress saves its state about once a minute under cells/,
so a rerun resumes it where it stopped. Every row keeps its losses, and is judged again from them on reading.
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

from persist.config import RunConfig
from persist.data import ImageData, load_dataset
from persist.errors import ConfigError, PersistError
from persist.measure import NullClock
from persist.runs.run import save_state_atomic, temporary_of
from persist.training.trainer import Trainer

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
        + (
            f"  least-live layer {min(r['health_end']['live_units']):.0%}, logit sd {r['health_end']['logit_sd']:.1e}"
            if "health_end" in r and r["finite"]
            else ""
        )
    )


def steps_for(m: int, steps: int, sample_steps: int) -> int:
    """At least `steps`, and at least `sample_steps` samples' worth: with the paper's summed gradient at a fixed lr,
    one step moves the weights in proportion to m, so a small m needs more steps to get as far as a large one."""
    return max(steps, math.ceil(sample_steps / m))


@torch.no_grad()
def health(model: torch.nn.Module, x: torch.Tensor) -> dict:
    """Is the network alive? A loss stuck near ln 10 is either a plateau (the output still depends on the input, and
    training may leave it) or a dead network (ReLUs off for every input, the output the same for every image: only the
    last bias still learns, and no number of steps helps). Read on one batch: per ReLU layer, the fraction of its
    units (channels, for a convolution) active for at least one sample and position, and the spread of the logits
    across the batch (standard deviation over samples, mean over classes)."""
    live: list[float] = []

    def record(module, inputs, output):
        active = (output > 0).flatten(2).any(-1) if output.dim() == 4 else output > 0  # (samples, units)
        live.append(active.any(0).float().mean().item())  # deliberate sync: a diagnostic, outside any timing

    relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    hooks = [m.register_forward_hook(record) for m in relus]
    try:
        logits = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return {"live_units": [round(v, 4) for v in live], "logit_sd": logits.std(0).mean().item()}


def probe(
    trainer: Trainer,
    steps: int,
    progress: Path | None = None,
    save_every_s: float = 60.0,
    on_save: Callable[[int, list[float]], None] | None = None,
) -> dict:
    """Train `steps` SGD steps (K per loaded batch, across epochs as needed); stop early at a non-finite loss.

    With `progress`, the cell survives a kill: after a whole load, and at most every `save_every_s` of wall time, the
    model, the optimizer, the losses so far and the position in the data go to that file (replaced atomically); a
    later probe of the same cell resumes from it and gives the same losses as one uninterrupted probe."""
    config, losses, position, seconds, at_start = trainer.config, [], (1, 0), 0.0, None
    if progress is not None and progress.exists():
        state = torch.load(progress, map_location=trainer.device, weights_only=True)
        if state["config"] != config.as_dict() or state["steps"] != steps:
            raise PersistError(f"{progress} belongs to another cell or step count: remove it to start this cell again")
        trainer.load_state_dict(state)
        losses, position, seconds = state["losses"], tuple(state["position"]), state["seconds"]
        at_start = state["health_start"]

    def read_loss(use, loss: torch.Tensor) -> bool:
        losses.append(loss.item() / config.batch_size)  # deliberate sync: the probe reads every loss
        return not math.isfinite(losses[-1]) or len(losses) == steps  # stop here

    start = last_save = time.perf_counter()
    for epoch in itertools.count(position[0]):
        for load, (x, y) in enumerate(trainer.pipeline.epoch(epoch)):
            if (epoch, load) < position:
                continue  # trained before the resume; the order of the data depends on (seed, epoch) alone
            at_start = at_start or health(trainer.model, x)
            loss_sum = torch.zeros((), device=trainer.device)
            trainer.train_batch(x, y, epoch, load, loss_sum, clock=NullClock(), on_step=read_loss)
            if not math.isfinite(losses[-1]) or len(losses) == steps:
                row = summarize(config, losses, seconds + time.perf_counter() - start, steps)
                return {**row, "health_start": at_start, "health_end": health(trainer.model, x)}
            if progress is not None and time.perf_counter() - last_save >= save_every_s:
                last_save = time.perf_counter()
                state = {
                    "config": config.as_dict(),
                    "steps": steps,
                    "position": [epoch, load + 1],
                    "losses": losses,
                    "health_start": at_start,
                    "seconds": seconds + last_save - start,
                    **trainer.state_dict(),
                }
                save_state_atomic(state, progress)
                if on_save is not None:
                    on_save(len(losses), losses)
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
    c = row["config"]
    return (c["normalization"], c["batch_size"], c["persistency"], c["lr_schedule"], c["seed"], row["steps_planned"])


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


def progress_file(out: Path, row_key: tuple) -> Path:
    normalization, m, k, schedule, seed, steps = row_key
    return out / "cells" / f"{normalization}-m{m}-K{k}-{schedule}-seed{seed}-{steps}steps.pt"


def run_stability(
    base: RunConfig,
    cells: list[tuple[int, int, str]],
    normalizations: list[str],
    steps: int,
    out: Path,
    on_cell: Callable[[dict], None] | None = None,
    sample_steps: int = 0,
    on_save: Callable[[RunConfig, int, list[float]], None] | None = None,
    save_every_s: float = 60.0,
    seeds: list[int] | None = None,
) -> list[dict]:
    """Probe every (normalization, cell, seed) not yet in out/stability.jsonl; return all rows, finished ones
    included. Seeds default to base.seed; each draws its own initial weights and data order. A cell in progress
    keeps its state in out/cells/ (see `probe`), so a killed run resumes inside a long cell."""
    if base.compute != "real":
        raise ConfigError(f"compute={base.compute!r}: persist stability reads losses, and an emulated step has none")
    (out / "cells").mkdir(parents=True, exist_ok=True)
    rows = read_rows(out)
    done = {cell_key(r) for r in rows}
    data: ImageData = load_dataset(base)
    for normalization, (m, k, schedule), seed in itertools.product(normalizations, cells, seeds or [base.seed]):
        config = replace(
            base, normalization=normalization, batch_size=m, persistency=k, lr_schedule=schedule, seed=seed
        )
        key = (normalization, m, k, schedule, seed, steps_for(m, steps, sample_steps))
        if key in done:
            continue
        trainer = Trainer(config, data)
        saved = None if on_save is None else (lambda n, losses, config=config: on_save(config, n, losses))
        try:
            row = probe(trainer, key[-1], progress_file(out, key), save_every_s, saved)
        finally:
            trainer.close()
        with open(out / ROWS, "a") as f:
            f.write(json.dumps(row) + "\n")
        progress_file(out, key).unlink(missing_ok=True)  # the row holds all of it now
        temporary_of(progress_file(out, key)).unlink(missing_ok=True)  # and a kill's leftover, if any
        rows.append(row)
        if on_cell is not None:
            on_cell(row)
    return rows


def alive(row: dict) -> str:
    """Two table cells: least-live layer start -> end, logit sd start -> end (dashes: a row from before health)."""
    if "health_end" not in row:
        return "- | -"
    start, end = row["health_start"], row["health_end"]
    if not row["finite"]:
        return f"{min(start['live_units']):.0%} -> NaN | {start['logit_sd']:.1e} -> NaN"
    return (
        f"{min(start['live_units']):.0%} -> {min(end['live_units']):.0%} | "
        f"{start['logit_sd']:.1e} -> {end['logit_sd']:.1e}"
    )


def markdown(rows: list[dict]) -> str:
    header = (
        "| normalization | m | K | lr | seed | steps | finite | window | loss, first window | loss, last window | min "
        "| falling | s/step | live units, least-live layer | logit sd over the batch |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [header]
    for r in sorted(rows, key=lambda r: (r["normalization"], r["lr_schedule"], *cell_key(r)[1:])):
        finite = "yes" if r["finite"] else f"**NaN at step {r['diverged_step']}**"
        lines.append(
            f"| {r['normalization']} | {r['batch_size']} | {r['persistency']} | "
            f"{'k*mu' if r['lr_schedule'] == 'linear' else 'mu'} | {r['config']['seed']} | {r['steps_done']} | "
            f"{finite} | {r['window_steps']} | {r['loss_first']:.3f} | {r['loss_last']:.3f} | {r['loss_min']:.3f} | "
            f"{'yes' if r['falling'] else 'no'} | {r['s_per_step']:.2f} | {alive(r)} |"
        )
    return "\n".join(lines) + "\n"
