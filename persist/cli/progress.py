"""The terminal view of a training run: what is being prepared, a rich progress bar over the run's loads with an
ETA, one line per finished epoch, and one warning line when a CPU run would take hours."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from persist.config import RunConfig
from persist.records import EpochRecord

WARN_AFTER_LOADS = 5  # the estimate is made once, after this many loads (the first is often slow: warm-up)
WARN_ABOVE_S = 3600.0  # a CPU run estimated longer than this is told about the smoke profile
SMOKE_HINT = "the smoke profile (persist train --profile smoke --device cpu --out DIR) ends in about a minute"


def duration_text(seconds: float) -> str:
    """5 h 20 min, 12 min, 40 s: the size of a wait, not a timestamp."""
    minutes = round(seconds / 60)
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


class EpochProgress:
    """`stage(text, done, total)` while data and model are prepared and before the first step, `start(...)` once the
    trainer knows its loads, `load_done` after every load, `epoch_done` after every epoch."""

    def __init__(
        self,
        config: RunConfig,
        quiet: bool = False,
        console: Console | None = None,
        now: Callable[[], float] = time.monotonic,
    ):
        self.config, self.now = config, now
        self.console = console or Console()
        self.progress = Progress(
            SpinnerColumn(finished_text=" "),
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            disable=quiet,
            get_time=now,
        )
        self.task = None  # the run's bar over loads
        self.stage_task = None  # what happens before it: data, model, the first evaluation
        self.epoch, self.loads_per_epoch, self.loads_before = 1, 0, 0
        self.device_type, self.started_s, self.warned = "cpu", None, False
        self.budgeted = config.budget_s is not None or config.budget_sample_steps is not None
        if config.budget_s is not None:
            self.total = f"until {config.budget_s:g} s of training"
        elif config.budget_sample_steps is not None:
            self.total = f"until {config.budget_sample_steps:,} sample-steps"
        else:
            self.total = str(config.epochs)

    def __enter__(self) -> EpochProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def stage(self, text: str, done: int | None = None, total: int | None = None) -> None:
        """What the run is doing before its first load, with how far (done of total) where that is known."""
        if self.stage_task is None:
            self.stage_task = self.progress.add_task(text, total=total, unit="", start=True)
        self.progress.update(self.stage_task, description=text, completed=done or 0, total=total)

    def start(self, loads_per_epoch: int, epoch: int, device_type: str) -> None:
        """Training begins at `epoch` (later than 1 on resume); every epoch has `loads_per_epoch` loads."""
        if self.stage_task is not None:
            self.progress.remove_task(self.stage_task)
            self.stage_task = None
        self.loads_per_epoch, self.epoch, self.device_type = loads_per_epoch, epoch, device_type
        total = None if self.budgeted else loads_per_epoch * (self.config.epochs - epoch + 1)
        self.task = self.progress.add_task(self._description(), total=total, unit="loads")
        self.started_s = self.now()

    def _description(self) -> str:
        return f"epoch {self.epoch}/{self.total}"

    def load_done(self, loads: int) -> None:
        if self.task is None:  # a trainer driven without start(): count, with no total
            self.task = self.progress.add_task(self._description(), total=None, unit="loads")
            self.started_s = self.now()
        done = self.loads_before + loads
        self.progress.update(self.task, completed=done, description=self._description())
        if done == WARN_AFTER_LOADS and not self.warned:
            self._warn_if_long(done)

    def _warn_if_long(self, done: int) -> None:
        self.warned = True
        total = next(t.total for t in self.progress.tasks if t.id == self.task)
        if total is None or self.device_type != "cpu" or self.started_s is None:
            return
        estimate_s = (self.now() - self.started_s) / done * total
        if estimate_s > WARN_ABOVE_S:
            self.console.print(
                f"estimated {duration_text(estimate_s)} on the CPU for {total:,} loads; {SMOKE_HINT}",
                highlight=False,
                soft_wrap=True,
            )

    def epoch_done(self, r: EpochRecord) -> None:
        self.loads_before += r.loads
        self.epoch = r.epoch + 1
        if self.task is not None:
            self.progress.update(self.task, completed=self.loads_before, description=self._description())
        data_pct = 100 * r.data_wait_s / r.wall_s if r.wall_s > 0 else 0.0
        compute_pct = 100 * r.compute_s / r.wall_s if r.wall_s > 0 else 0.0
        self.console.print(
            f"epoch {r.epoch:>3}/{self.total}  train_loss {r.train_loss:.4f}  test_loss {r.test_loss:.4f}  "
            f"test_acc {r.test_acc:.4f}  wall {r.wall_s:.2f}s  data {data_pct:.0f}%  compute {compute_pct:.0f}%  "
            f"[{r.clock}, {r.device}]",
            highlight=False,
            soft_wrap=True,
        )


class CountProgress:
    """A transient bar for a counted job, such as writing a dataset's files; call it with (done, total)."""

    def __init__(self, label: str, quiet: bool = False, console: Console | None = None):
        self.progress = Progress(
            TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console or Console(stderr=True), transient=True, disable=quiet,
        )  # fmt: skip
        self.task = None

    def __enter__(self) -> CountProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task("count", total=total)
        self.progress.update(self.task, completed=done)
