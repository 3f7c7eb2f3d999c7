"""`persist sweep`: a grid of training runs in one folder, resumable, one sub-folder per run.

K=1 is run once per (pipeline, m, seed): with K=1 the k*mu schedule is the constant one, and the report uses that run
as the baseline of both schedules.

Convergence is trained once. Every pipeline feeds bit-identical batches, so a convergence curve belongs to (m, K,
schedule, seed), not to the pipeline. The grid's first pipeline trains every cell in full; each other pipeline trains
only `timing_epochs` epochs per cell (its time per step), and the report composes its speedup from the first
pipeline's convergence factor and its own loading factor. A few check cells (the first seed, K=1 and the largest K,
the first schedule) also run in full on every pipeline, so the report can hold the composition against a measured
run. `timing_epochs=None` trains every pipeline in full, and so does a sweep over an image folder: each pipeline
resamples its crops its own way, so no pipeline's convergence stands for another's.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

from persist.config import (
    PIPELINE_OPTIONS,
    UNCAPPED_EPOCHS,
    ConfigError,
    PersistError,
    RunConfig,
    parse_persistency,
    persistency_label,
    with_profile,
)
from persist.data import load_dataset
from persist.errors import DivergedError
from persist.records import EpochRecord, read_manifest, read_records
from persist.runs.lock import RunLock
from persist.runs.run import make_folder, train_run
from persist.training.device import check_runs_here
from persist.training.trainer import Trainer
from persist.validation import image_folder_fields


@dataclass(frozen=True)
class SweepGrid:
    base: RunConfig
    pipelines: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    persistencies: tuple[int | str, ...]  # K, or "auto" / "auto:N" (adaptive persistency, never composed)
    schedules: tuple[str, ...]
    seeds: tuple[int, ...]
    reuses: tuple[str, ...] = ("same",)  # reaugment needs the base's augment to be crop-flip
    timing_epochs: int | None = 2  # epochs per cell on every pipeline but the first; None: train all in full
    folder_settings: bool = False  # image folders: each cell's lr, momentum and loss as persist train sets them

    def is_check(self, config: RunConfig) -> bool:
        """A cell that runs in full on every pipeline, to check the composed speedup against a measured one."""
        return (
            config.seed == self.seeds[0]
            and not config.adaptive
            and config.persistency in (1, max(self.fixed_persistencies()))
            and config.lr_schedule in ("constant", self.schedules[0])
            and config.reuse in ("same", self.reuses[0])
        )

    def timed_only(self, config: RunConfig) -> RunConfig:
        """The cell on a pipeline that is only timed: a few epochs, no budget (its convergence comes from the first
        pipeline's run of the same cell)."""
        if self.timing_epochs is None or config.pipeline == self.pipelines[0] or self.is_check(config):
            return config
        if config.adaptive or config.compute != "real":  # K from timing, or no convergence at all: nothing to compose
            return config
        return replace(config, epochs=min(self.timing_epochs, config.epochs), budget_s=None, budget_sample_steps=None)

    def fixed_persistencies(self) -> list[int]:
        return [k["persistency"] for k in map(parse_persistency, self.persistencies) if not k["adaptive"]] or [1]

    def configs(self) -> list[RunConfig]:
        cells = []
        for pipeline, m, k_text, schedule, reuse, seed in itertools.product(
            self.pipelines, self.batch_sizes, self.persistencies, self.schedules, self.reuses, self.seeds
        ):
            k = parse_persistency(k_text)
            if k["persistency"] == 1 and (schedule != self.schedules[0] or reuse != self.reuses[0]):
                continue  # K=1 is the same run under every schedule and reuse variant
            config = replace(
                self.base,
                **{name: None for name, owner in PIPELINE_OPTIONS.items() if owner != pipeline},  # its cells only
                pipeline=pipeline,
                batch_size=m,
                **k,
                lr_schedule=schedule if k["persistency"] > 1 else "constant",
                reuse=reuse if k["persistency"] > 1 else "same",
                seed=seed,
                **(image_folder_fields(m) if self.folder_settings else {}),  # the lr is linear in each cell's m
            )
            cells.append(self.timed_only(config))
        return cells


PRESETS = {
    # About half an hour on a 2-core CPU: real images (scikit-learn's digits, 1,438 for training) and a 1/8-width
    # model. This narrow network, default-initialized and without normalization layers, stays on the initial plateau
    # with [0, 1] inputs: at m=128 through 30 epochs at lr 0.002, and at every lr from 0.001 to 0.01 we tried at
    # m=128 (reports/cpu-sweep). With standardized inputs and lr 0.0005 (the paper's 0.001, summed, is too large a
    # step for it at m=128), K=1 leaves the plateau within 8 to 11 epochs at both m. Every run gets the same work:
    # 70,400 sample-steps, 50 epochs at K=1 and 10 at K=5 (1,408 samples per epoch at m = 32 and 128), so that no
    # K=1 curve is cut off while it still climbs. Too few steps per epoch at m=256 on 1,438 images: m is 32 and 128.
    "cpu": SweepGrid(
        RunConfig(
            dataset="digits",
            width=0.125,
            lr=0.0005,
            normalization="standardize",
            budget_sample_steps=70_400,
            epochs=UNCAPPED_EPOCHS,
        ),
        ("preloaded", "torchvision"),
        (32, 128),
        (1, 2, 5),
        ("constant", "linear"),
        (0, 1, 2),
    ),
    # the paper's grid (Section 2): full data and model, 100 epochs, m in {32, 256, 512}
    "paper": SweepGrid(
        with_profile(RunConfig(), "paper"),
        ("preloaded", "torchvision"),
        (32, 256, 512),
        (1, 2, 5),
        ("constant", "linear"),
        (0, 1, 2),
    ),
}


def run_name(config: RunConfig) -> str:
    reuse = "" if config.reuse == "same" else f"-{config.reuse}"
    k = persistency_label(config.persistency, config.adaptive).replace(":", "")
    return f"{config.pipeline}-m{config.batch_size}-K{k}-{config.lr_schedule}{reuse}-s{config.seed}"


def _data_key(config: RunConfig) -> tuple:
    """What decides the data a cell trains on: cells that share it share one loaded dataset."""
    return (config.dataset, config.data_root, config.train_size, config.test_size, config.storage, config.storage_dir,
            config.jpeg_quality)  # fmt: skip


def run_sweep(
    grid: SweepGrid,
    out: Path,
    on_run: Callable[[str, RunConfig, str], None] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> list[Path]:
    """Run every cell not yet finished into out/<run_name>; finished cells are skipped, partial ones resumed. The
    sweep holds `out`'s lock throughout (one sweep per folder), and each run its own folder's."""
    check_runs_here(grid.base)  # every cell shares the base's device and precision: refused before any folder
    make_folder(out)
    with RunLock(out, "sweep"):
        return _run_cells(grid, out, on_run, on_epoch)


def _run_cells(grid: SweepGrid, out: Path, on_run, on_epoch) -> list[Path]:
    configs, datasets = grid.configs(), {}
    for config in configs:  # every dataset loaded and every m checked before the first run starts
        key = _data_key(config)
        if key not in datasets:
            datasets[key] = load_dataset(config)
        if config.batch_size > len(datasets[key].train_y):
            raise ConfigError(
                f"batch_size={config.batch_size} is not allowed: the training set has "
                f"{len(datasets[key].train_y)} samples"
            )
    folders = []
    for config in configs:
        folder = out / run_name(config)
        folders.append(folder)
        done = len(read_records(folder)) if folder.exists() else 0
        status = (read_manifest(folder) or {}).get("status", "") if folder.exists() else ""
        budgeted = config.budget_s is not None or config.budget_sample_steps is not None
        # a budgeted run goes to train_run, which returns at once when its (perhaps extended) budget is spent
        if (done >= config.epochs and not budgeted) or status.startswith("diverged"):  # it would diverge again
            if on_run:
                on_run(run_name(config), config, "finished already" if done >= config.epochs else status)
            continue
        if on_run:
            on_run(run_name(config), config, f"resuming after epoch {done}" if done else "starting")
        key = _data_key(config)
        try:
            train_run(config, folder, resume=True, trainer=Trainer(config, datasets[key]), on_epoch=on_epoch)
        except DivergedError as error:  # a result of the grid, not a failure of the sweep: record it and go on
            if on_run:
                on_run(run_name(config), config, f"diverged: {error}")
    return folders


# change the preset's base config: the fields marked `sweep` in RunConfig's metadata (persist/config.py)
BASE_OVERRIDES = tuple(f.name for f in fields(RunConfig) if f.metadata.get("sweep"))
AXIS_OVERRIDES = ("pipelines", "batch_sizes", "persistencies", "schedules", "reuses", "seeds")  # replace a grid axis


def grid_from_args(preset: str, timing_epochs: int | None = None, full: bool = False, **overrides) -> SweepGrid:
    """A preset with the given overrides (None or empty: keep the preset's); every cell's config is validated.
    `full` trains every pipeline in full; `timing_epochs` sets how long the other pipelines are timed."""
    if preset not in PRESETS:
        raise PersistError(f"preset={preset!r} is not allowed: choose one of {', '.join(PRESETS)}")
    if timing_epochs is not None and (full or timing_epochs < 1):
        reason = "it needs composition, which --full turns off" if full else "use an integer >= 1"
        raise ConfigError(f"timing_epochs={timing_epochs} is not allowed: {reason}")
    grid = PRESETS[preset]
    base = grid.base
    if overrides.get("epochs") and not (overrides.get("budget_s") or overrides.get("budget_sample_steps")):
        base = replace(base, budget_s=None, budget_sample_steps=None)  # --epochs alone replaces the preset's budget
    changes = {k: overrides[k] for k in BASE_OVERRIDES if overrides.get(k)}
    for given, other in (("budget_s", "budget_sample_steps"), ("budget_sample_steps", "budget_s")):
        if changes.get(given):
            changes[other] = None  # a budget given replaces the preset's, of whichever kind
    if changes.get("model", "paper-alexnet") != "paper-alexnet":
        changes["width"] = 1.0  # the presets' width is paper-alexnet's; another model has none
    if changes.get("dataset") == "imagefolder" and base.dataset != "imagefolder":
        grid = replace(grid, folder_settings=True)
    base = replace(base, **changes)
    grid = replace(grid, base=base, **{k: tuple(overrides[k]) for k in AXIS_OVERRIDES if overrides.get(k)})
    if full or timing_epochs is not None:
        grid = replace(grid, timing_epochs=None if full else timing_epochs)
    if base.dataset == "imagefolder" and len(grid.pipelines) > 1:
        # each pipeline resamples the folder's crops its own way: no pipeline's convergence stands for another's
        if timing_epochs is not None:
            raise ConfigError(
                f"timing_epochs={timing_epochs} is not allowed with --dataset imagefolder and several pipelines: "
                "their crops are not bit-identical, so one pipeline's convergence cannot be composed with another's "
                "loading; every pipeline trains in full"
            )
        grid = replace(grid, timing_epochs=None)
    grid.configs()  # RunConfig validates each cell: a bad pipeline name fails here, before any run
    return grid
