"""The terminal view of a training run: a rich progress bar over loads, one line per finished epoch."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from persist.config import RunConfig
from persist.records import EpochRecord


class EpochProgress:
    def __init__(self, config: RunConfig, quiet: bool = False, console: Console | None = None):
        self.config = config
        self.console = console or Console()
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loads"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            disable=quiet,
        )
        self.task = None
        self.epoch = 1
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

    def load_done(self, loads: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task("train", total=None, epoch=self.epoch, epochs=self.total)
        self.progress.update(self.task, completed=loads)

    def epoch_done(self, r: EpochRecord) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None
        self.epoch = r.epoch + 1
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
