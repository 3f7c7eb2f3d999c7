"""`persist whatif` against the truth: from a K=1 Meter run of examples/own_loop.py, forecast the K=2 epoch, and
time a real K=2 epoch of the same loop.

Pairs in ABBA order (persist.stats.sequential_pairs): a K=1 epoch and a K=2 epoch adjacent in time, each in its own
Meter run with its own model; the ratio per pair is the forecast from that K=1 epoch over that K=2 epoch. The check
passes when the 95% interval over ABBA blocks lies inside 1 ± 10%, fails when it lies wholly outside, and is
inconclusive otherwise.
The loader is a DataLoader with 0 workers and a planted sleep per sample (slow storage), so loading is a fair share
of the epoch and the synchronous model has something to forecast; torch runs on one thread, as a shared 2-core
machine steps fastest that way.
"""

from __future__ import annotations

import importlib.util
import itertools
import statistics
from pathlib import Path

import pytest
import torch

import persist
from cells import assert_checks, record_durations
from options import CHECK_CAP_S
from persist.analysis.whatif import measured_of, whatif
from persist.benchjson import schema
from persist.forecast import forecast
from persist.records import read_meter_lines, read_records
from persist.stats import sequential_pairs

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "own_loop.py"
TOLERANCE = 0.10
LOAD_MS = 1.0  # per sample: 32 ms per batch of 32
ARGS = ["--model", "shufflenet_v2_x0_5", "--batch-size", "32", "--train-size", "160", "--load-ms", str(LOAD_MS)]


def _example():
    spec = importlib.util.spec_from_file_location("own_loop_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def bench_whatif_forecasts_k2(benchmark, setup, tmp_path, one_thread):
    pytest.importorskip("sklearn", reason="the example reads scikit-learn's digits")
    example = _example()
    runs = {}
    for k in (1, 2):
        args = example.parse(["--out", str(tmp_path / f"k{k}"), "--k", str(k), "--device", str(setup.device), *ARGS])
        model, optimizer, loader, _test, device = example.setup(args)
        meter = persist.Meter(args.out, device=device, config=example.describe(args, loader))
        runs[k] = (meter, model, optimizer, loader, device, args)
    epochs = {1: itertools.count(1), 2: itertools.count(1)}

    def epoch_of(k: int):
        meter, model, optimizer, loader, device, args = runs[k]
        example.train_epoch(meter, next(epochs[k]), model, optimizer, loader, device, args)
        return meter.last_epoch  # its line is written later, when the next epoch starts

    def forecast_over_measured(one, two) -> tuple[float]:
        lines = [m for m in read_meter_lines(tmp_path / "k1") if m["epoch"] == one.epoch]
        return (forecast(measured_of([one], lines, "sync"), 2).epoch_s / two.wall_s,)

    epoch_of(1), epoch_of(2)  # warm-up
    benchmark.group = "measurement"
    try:
        pairs = sequential_pairs(
            lambda: epoch_of(1),
            lambda: epoch_of(2),
            forecast_over_measured,
            (TOLERANCE / 2,),
            CHECK_CAP_S[setup.profile]["whatif"],
        )
    finally:
        for meter, *_ in runs.values():
            meter.close()
    k2 = read_records(tmp_path / "k2")
    record_durations(benchmark, [r.wall_s for r in pairs.measured])
    check = pairs.check(0, "whatif: predicted K=2 epoch / measured", 1 - TOLERANCE, 1 + TOLERANCE)
    whole = whatif(tmp_path / "k1", (2,))["forecasts"][0]["epoch_s"]
    info = schema.WhatIf(
        loader="sync",
        persistency=2,
        load_ms=LOAD_MS,
        predicted_epoch_s=whole,
        measured_epoch_s=statistics.median(r.wall_s for r in k2[1:]),
        ratio=check.ratio,
        config={"example": "examples/own_loop.py", "argv": ARGS, "device": str(setup.device), "torch_threads": 1},
        checks=[check.as_dict()],
    )
    benchmark.extra_info.update(schema.to_extra_info(info))
    assert_checks([check], setup.strict)
