"""Pipelines on their own (no model), and each against a hand-written loop, side by side in one run."""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import pytest

import references
from conftest import PIPELINE_ONLY_SAMPLES
from persist.data import load_dataset, make_pipeline
from persist.measure import make_sync

MIN_RATIO = 0.98  # persist's pipeline must reach this fraction of the hand-written loop's img/s
MAX_ATTEMPTS = 3
ONLY_BATCH_SIZES = (32, 256, 512)


@pytest.fixture(scope="session")
def pipeline_data(setup):
    return load_dataset(replace(setup.base, train_size=PIPELINE_ONLY_SAMPLES[setup.profile]))


def _epoch_of(pipeline, device):
    sync, epochs = make_sync(device), iter(range(1, 1_000_000))

    def epoch():
        for _ in pipeline.epoch(next(epochs)):
            pass
        sync()  # deliberate sync: the last batch has arrived on the device

    return epoch


@pytest.mark.parametrize("m", ONLY_BATCH_SIZES, ids=[f"m{m}" for m in ONLY_BATCH_SIZES])
def bench_pipeline_only(benchmark, setup, pipeline_data, pipeline, m):
    config = replace(setup.base, pipeline=pipeline, batch_size=m, train_size=None)
    p = make_pipeline(config, pipeline_data, setup.device)
    benchmark.group = "pipeline-only"
    try:
        benchmark.pedantic(_epoch_of(p, setup.device), rounds=setup.rounds, warmup_rounds=1, iterations=1)
    finally:
        p.close()
    samples = len(p) * m
    benchmark.extra_info.update(
        {
            "kind": "pipeline_only",
            "pipeline": pipeline,
            "batch_size": m,
            "samples": samples,
            "img_per_s": samples / benchmark.stats.stats.median,
            **p.describe(),
        }
    )


REFERENCES = {
    "preloaded": (references.preloaded_loop, {}),
    "torchvision": (references.dataloader_loop, {}),
    "dali": (references.dali_loop, {}),
}


def _paired_ratio(reference_s: list[float], ours_s: list[float]) -> float:
    """Ours img/s over theirs, per adjacent pair of rounds (pairs cancel slow drift), then the median pair."""
    return statistics.median(ref / our for ref, our in zip(reference_s, ours_s, strict=True))


def _clocked(epoch) -> float:
    start = time.perf_counter()
    epoch()
    return time.perf_counter() - start


def _another_attempt(pipeline: str, config, data, device, rounds: int) -> float:
    """A fresh pair of pipelines, compared in alternating rounds clocked here (one warm-up pair dropped)."""
    ours = make_pipeline(config, data, device)
    make_reference, options = REFERENCES[pipeline]
    reference, ours_epoch = make_reference(data, config.batch_size, device, **options), _epoch_of(ours, device)
    pairs = [(_clocked(reference), _clocked(ours_epoch)) for _ in range(rounds + 1)][1:]
    ours.close()
    return _paired_ratio([r for r, _ in pairs], [o for _, o in pairs])


def bench_against_hand_written(benchmark, setup, pipeline_data, pipeline):
    """Rounds alternate: the hand-written loop (untimed setup, clocked here) then persist's pipeline (timed).

    On a small shared machine the ratio moves by a few percent from one fresh pair of pipelines to the next
    (thread placement, not the code), more than the 2% being checked. So when the first comparison lands under
    the floor, up to two more are made with fresh pipelines, and the median attempt decides; all are recorded."""
    m = 256
    config = replace(setup.base, pipeline=pipeline, batch_size=m, train_size=None)
    ours = make_pipeline(config, pipeline_data, setup.device)
    make_reference, options = REFERENCES[pipeline]
    reference = make_reference(pipeline_data, m, setup.device, **options)
    reference_s: list[float] = []
    rounds = max(9, setup.rounds)
    benchmark.group = "vs hand-written loop"
    try:
        benchmark.pedantic(
            _epoch_of(ours, setup.device),
            setup=lambda: reference_s.append(_clocked(reference)),
            rounds=rounds,
            warmup_rounds=1,
        )
    finally:
        ours.close()
    attempts = [_paired_ratio(reference_s[1:], benchmark.stats.stats.data)]
    while statistics.median(attempts) < MIN_RATIO and len(attempts) < MAX_ATTEMPTS:
        attempts.append(_another_attempt(pipeline, config, pipeline_data, setup.device, rounds))
    ratio = statistics.median(attempts)
    benchmark.extra_info.update(
        {
            "kind": "vs_reference",
            "pipeline": pipeline,
            "batch_size": m,
            "reference_median_s": statistics.median(reference_s[1:]),
            "throughput_ratio": ratio,
            "attempt_ratios": attempts,
            "min_ratio": MIN_RATIO,
        }
    )
    assert ratio >= MIN_RATIO, f"{pipeline}: {ratio:.3f}x the hand-written loop's img/s (needs {MIN_RATIO})"
