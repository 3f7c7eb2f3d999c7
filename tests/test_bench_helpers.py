"""The bench's own logic: a diverged model is recorded (not raised), and --persist-train-size reaches every cell."""

import json
import math
import statistics
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from persist.training.trainer import Trainer

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def bench_cells(bench_import):
    return bench_import("cells")


def test_a_diverged_cell_is_recorded_with_its_first_bad_epoch(bench_cells, tiny_data, tiny_config):
    config = replace(tiny_config, lr=1e6)
    trainer = Trainer(config, tiny_data)
    rounds = [trainer.train_epoch(e) for e in (1, 2, 3)]  # what run_epochs collects: warm-up, then timed rounds
    info = bench_cells.epoch_extra_info(config, trainer, rounds)
    assert info["diverged"] is True and info["diverged_epoch"] == 1
    assert not math.isfinite(info["train_loss_last"]) and info["wall_s"] > 0 and info["steps"] == 8
    healthy = Trainer(tiny_config, tiny_data)
    info = bench_cells.epoch_extra_info(tiny_config, healthy, [healthy.train_epoch(1), healthy.train_epoch(2)])
    assert info["diverged"] is False and info["diverged_epoch"] is None


class _StubBenchmark:
    """What record_durations uses of pytest-benchmark's fixture: `disabled`, and `_mode` and `_make_stats` (through
    bench/pytest_benchmark_compat.py)."""

    disabled, _mode = False, None

    def _make_stats(self, iterations):
        self.durations = []
        return type("Stats", (), {"update": lambda _, d: self.durations.append(d)})()


def test_an_epoch_cell_is_timed_by_the_epochs_own_wall_s(bench_cells, tiny_data, tiny_config):
    """The benchmark's rounds are exactly the timed epochs' wall_s (what the summary and `persist compare` read), and
    the epoch call's time outside wall_s (NVML stop, clock resolve) is reported apart."""
    benchmark, trainer = _StubBenchmark(), Trainer(tiny_config, tiny_data)
    rounds = bench_cells.run_epochs(benchmark, trainer, rounds=2)
    assert [r["epoch"] for r in rounds] == [1, 2, 3]
    assert benchmark.durations == [r["wall_s"] for r in rounds[1:]] and benchmark._mode is not None
    assert all(r["outside_wall_s"] >= 0 for r in rounds)
    info = bench_cells.epoch_extra_info(tiny_config, trainer, rounds)
    assert info["wall_s"] == pytest.approx(statistics.median(benchmark.durations)) and info["outside_wall_s"] >= 0


@pytest.mark.slow
def test_persist_train_size_cuts_the_training_set_of_every_cell(tmp_path):
    out = tmp_path / "out.json"
    command = [
        sys.executable,
        "-m",
        "pytest",
        str(BENCH),
        "-q",
        "-p",
        "no:cacheprovider",
        "--persist-profile",
        "smoke",
        "--persist-device",
        "cpu",
        "--persist-train-size",
        "512",
        "--persist-rounds",
        "1",
        "-k",
        "bench_epoch and preloaded-m32-K1",
        f"--benchmark-json={out}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=BENCH.parent)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (cell,) = json.loads(out.read_text())["benchmarks"]
    assert cell["extra_info"]["config"]["train_size"] == 512 and cell["extra_info"]["loads"] == 16
    assert cell["extra_info"]["diverged"] is False
    too_small = [("100" if a == "512" else a) for a in command]
    bad = subprocess.run(too_small, capture_output=True, text=True, timeout=300, cwd=BENCH.parent)
    assert bad.returncode == 4 and "--persist-train-size=100 is not allowed" in bad.stderr
