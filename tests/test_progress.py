"""The terminal view of `persist train`: a bar over the run's loads with a known total and an ETA, what happens
before the first load, and one line when a CPU run would take hours. Clock and console are injected."""

import io
from dataclasses import replace

from rich.console import Console

from conftest import FakeClock
from persist.cli.progress import EpochProgress, duration_text
from persist.config import RunConfig
from persist.runs.run import train_run
from persist.training.trainer import Trainer


def _progress(config, clock):
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    return EpochProgress(config, quiet=True, console=console, now=clock.now), out


def _task(progress):
    return next(t for t in progress.progress.tasks if t.id == progress.task)


def test_the_bar_counts_loads_of_the_whole_run_with_an_eta():
    clock = FakeClock()
    progress, _ = _progress(RunConfig(epochs=3), clock)
    progress.start(loads_per_epoch=100, epoch=1, device_type="cuda")
    for load in range(1, 11):
        clock.t += 2.0
        progress.load_done(load)
    task = _task(progress)
    assert task.total == 300 and task.completed == 10
    assert task.time_remaining == 290 * 2.0  # 2 s a load, 290 loads to go
    assert task.description == "epoch 1/3"


def test_a_resumed_run_counts_the_epochs_left():
    progress, _ = _progress(RunConfig(epochs=10), FakeClock())
    progress.start(loads_per_epoch=50, epoch=9, device_type="cpu")
    assert _task(progress).total == 100 and _task(progress).description == "epoch 9/10"


def test_a_budget_run_has_no_total():
    progress, _ = _progress(RunConfig(epochs=1_000_000, budget_s=60.0), FakeClock())
    progress.start(loads_per_epoch=50, epoch=1, device_type="cpu")
    assert _task(progress).total is None


def test_an_hours_long_cpu_run_says_so_once_and_names_the_smoke_profile():
    clock = FakeClock()
    progress, out = _progress(RunConfig(epochs=100), clock)
    progress.start(loads_per_epoch=196, epoch=1, device_type="cpu")
    for load in range(1, 40):
        clock.t += 1.0  # 1 s a load x 19,600 loads
        progress.load_done(load)
    text = out.getvalue()
    assert text.count("estimated") == 1 and "estimated 5 h 27 min on the CPU for 19,600 loads" in text
    assert "--profile smoke" in text


def test_a_short_or_gpu_run_says_nothing():
    for device_type, per_load_s in [("cpu", 0.01), ("cuda", 1.0)]:
        clock = FakeClock()
        progress, out = _progress(RunConfig(epochs=100), clock)
        progress.start(loads_per_epoch=196, epoch=1, device_type=device_type)
        for load in range(1, 10):
            clock.t += per_load_s
            progress.load_done(load)
        assert out.getvalue() == ""


def test_durations_read_as_waits():
    assert [duration_text(s) for s in (40, 720, 19_600)] == ["40 s", "12 min", "5 h 27 min"]


def test_train_run_says_what_it_prepares_and_how_far_the_first_evaluation_is(tiny_config, tmp_path):
    stages, starts, loads = [], [], []
    config = replace(tiny_config, epochs=1, eval_batch_size=16)
    train_run(
        config,
        tmp_path / "run",
        on_stage=lambda text, done=None, total=None: stages.append((text, done, total)),
        on_start=lambda *a: starts.append(a),
        on_load=loads.append,
    )
    assert stages[0] == ("preparing the synthetic data and the paper-alexnet model", None, None)
    evaluating = [(d, t) for text, d, t in stages if text.startswith("evaluating before the first step (64 test")]
    assert evaluating == [(0, 64), (16, 64), (32, 64), (48, 64), (64, 64)]
    assert starts == [(8, 1, "cpu")] and loads == list(range(1, 9))  # 256 images / m 32: 8 loads, known up front


def test_a_handed_in_trainer_still_reports_its_loads(tiny_config, tiny_data, tmp_path):
    starts = []
    train_run(
        replace(tiny_config, epochs=1),
        tmp_path / "run",
        trainer=Trainer(replace(tiny_config, epochs=1), tiny_data),
        on_start=lambda *a: starts.append(a),
    )
    assert starts == [(8, 1, "cpu")]
