"""The measurement itself: what the clock costs, and whether a planted delay lands in data time."""

from __future__ import annotations

import statistics
from dataclasses import replace

from conftest import run_epochs
from persist.measure import NullClock
from persist.train import Trainer

MAX_CLOCK_OVERHEAD = 0.01  # an epoch with the step clock may take at most 1% longer than one without
DELAY_MS = 20.0
DELAY_TOLERANCE = 0.05


def _paired(reference_s: list[float], timed_s: list[float]) -> float:
    """Median over adjacent round pairs of timed/reference; the reference ran first in each pair."""
    return statistics.median(t / r for r, t in zip(reference_s, timed_s, strict=True))


def bench_clock_overhead(benchmark, setup, bench_data):
    """Rounds alternate an epoch without any step clock (setup, untimed here) and one with it (timed)."""
    # the smallest m has the most steps per epoch, so the clock's per-step cost weighs most there
    config = replace(setup.base, pipeline="preloaded", batch_size=min(setup.batch_sizes), persistency=1)
    clocked, bare = Trainer(config, bench_data), Trainer(config, bench_data, clock=NullClock())
    bare_s, epochs = [], iter(range(1, 1_000_000))

    def bare_epoch():
        bare_s.append(bare.train_epoch(next(epochs))["wall_s"])

    rounds = max(9, setup.rounds)
    benchmark.group = "measurement"
    timed = run_epochs(benchmark, clocked, rounds, setup=bare_epoch)
    clocked_s = [r["wall_s"] for r in timed]
    # noise on a shared machine only ever adds time, so the fastest rounds are the best estimate of each cost
    overhead = min(clocked_s) / min(bare_s[1:]) - 1
    benchmark.extra_info.update(
        {
            "kind": "clock_overhead",
            "clock": timed[-1]["clock"],
            "overhead_fraction": overhead,
            "paired_median_overhead_fraction": _paired(bare_s[1:], clocked_s) - 1,
            "max_overhead_fraction": MAX_CLOCK_OVERHEAD,
            "steps": timed[-1]["steps"],
        }
    )
    assert overhead <= MAX_CLOCK_OVERHEAD, f"the step clock costs {100 * overhead:.2f}% of an epoch"


def bench_planted_delay(benchmark, setup, bench_data):
    """A delay of d per load must show up in data time, d + the pipeline's own load time per load, and the epoch
    must follow loads*(d + load) + steps*compute, both within 5%."""
    config = replace(setup.base, pipeline="preloaded", batch_size=max(setup.batch_sizes), persistency=2)
    plain, delayed = Trainer(config, bench_data), Trainer(replace(config, delay_ms=DELAY_MS), bench_data)
    plain_rounds, epochs = [], iter(range(1, 1_000_000))
    benchmark.group = "measurement"
    timed = run_epochs(
        benchmark, delayed, max(5, setup.rounds), setup=lambda: plain_rounds.append(plain.train_epoch(next(epochs)))
    )
    load_s = statistics.median(r["data_wait_s"] / r["loads"] for r in plain_rounds[1:])
    wait_per_load_s = statistics.median(r["data_wait_s"] / r["loads"] for r in timed)
    expected_wait_s = DELAY_MS / 1000 + load_s
    model_error = statistics.median(
        abs(r["wall_s"] - (r["loads"] * expected_wait_s + r["compute_s"])) / r["wall_s"] for r in timed
    )
    benchmark.extra_info.update(
        {
            "kind": "planted_delay",
            "delay_ms": DELAY_MS,
            "load_s": load_s,
            "data_wait_per_load_s": wait_per_load_s,
            "expected_per_load_s": expected_wait_s,
            "epoch_model_error_fraction": model_error,
        }
    )
    assert abs(wait_per_load_s - expected_wait_s) <= DELAY_TOLERANCE * expected_wait_s
    assert model_error <= DELAY_TOLERANCE
