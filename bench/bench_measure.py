"""The measurement itself: what the clock costs, and whether a planted delay lands in data time.

Both are ratio checks over pairs in ABBA order (persist.stats.sequential_pairs): a reference round and the measured
one, adjacent in time, added until the check's interval is narrower than its tolerance or its time cap is spent.
A check passes when its 95% interval lies wholly inside its bound(s), fails when it lies wholly outside, and is
inconclusive otherwise.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

from cells import assert_checks, record_durations
from options import CHECK_CAP_S
from persist.benchjson import schema
from persist.measure import NullClock, make_clock
from persist.stats import sequential_pairs
from persist.training.trainer import Trainer

MAX_AUTO_OVERHEAD = 0.05  # --persistency auto with a loader that keeps up: at most 5% slower than K=1
MAX_CLOCK_OVERHEAD = 0.01  # the step clock may cost at most 1% of an epoch
CLOCK_TOLERANCE = MAX_CLOCK_OVERHEAD / 2  # the cost is near 0: aim for an interval well inside the bound
DELAY_MS = 20.0
DELAY_TOLERANCE = 0.05


def bench_clock_overhead(benchmark, setup, bench_data):
    """The clock's own cost: an epoch's steps worth of empty step_start/step_end pairs, each after a load's marks
    (K=1), plus resolve() on the clock a run uses (CUDA events on a GPU, the host clock on a CPU), against the wall
    time of an epoch without any step clock (NullClock). One ratio (clock cost / bare epoch) per pair; the
    benchmark's rounds are the clock's cost."""
    # the smallest m has the most steps per epoch, so the clock's per-step cost weighs most there
    config = replace(setup.base, pipeline="preloaded", batch_size=min(setup.batch_sizes), persistency=1)
    bare = Trainer(config, bench_data, clock=NullClock())
    clock, steps, epochs = make_clock(bare.device), bare.counts["steps"], iter(range(1, 1_000_000))

    def clock_cost_s() -> float:
        clock.begin_epoch(steps)  # outside the timing, as in train_epoch: CUDA events are made before the epoch
        start = time.perf_counter()
        for _ in range(steps):
            clock.load_start(), clock.load_end()
            clock.step_start()
            clock.step_end()
        clock.resolve()  # CUDA: synchronizes on the last event and reads 3 intervals per step (its gap, its stall)
        return time.perf_counter() - start

    bare.train_epoch(next(epochs)), clock_cost_s()  # warm-up
    benchmark.group = "measurement"
    try:
        pairs = sequential_pairs(
            lambda: bare.train_epoch(next(epochs))["wall_s"],
            clock_cost_s,
            lambda bare_s, cost_s: (cost_s / bare_s,),
            (CLOCK_TOLERANCE,),
            CHECK_CAP_S[setup.profile]["clock_overhead"],
        )
    finally:
        bare.close()
    record_durations(benchmark, pairs.measured)
    check = pairs.check(0, f"clock cost ({steps} empty steps + resolve) / bare epoch", high_bound=MAX_CLOCK_OVERHEAD)
    info = schema.ClockOverhead(
        clock=clock.name,
        overhead_fraction=check.ratio,
        max_overhead_fraction=MAX_CLOCK_OVERHEAD,
        steps=steps,
        clock_cost_s=statistics.median(pairs.measured),
        bare_epoch_s=statistics.median(pairs.references),
        config=config.as_dict(),
        checks=[check.as_dict()],
    )
    benchmark.extra_info.update(schema.to_extra_info(info))
    assert_checks([check], setup.strict)


def expected_epoch_s(loads: int, per_load_s: float, compute_s: float, overlapped: bool) -> float:
    """The planted-delay epoch model, from a load's host time (delay + the pipeline's own load) and the compute of an
    undelayed epoch.

    serial (CPU: the host runs the steps itself): every load, then its K steps: loads*(d + load) + compute.
    overlapped (CUDA: steps are queued and run while the host waits for the next load): the first load hides
    nothing, each later load hides up to the K steps queued before it, and the last load's steps run after it:
    (d + load) + (loads - 1) * max(d + load, c) + c, with c the compute of one load's K steps."""
    if not overlapped:
        return loads * per_load_s + compute_s
    c = compute_s / loads
    return per_load_s + (loads - 1) * max(per_load_s, c) + c


def bench_planted_delay(benchmark, setup, bench_data):
    """A delay of d per load must show up in data time as d + the pipeline's own load time per load, and the epoch
    must follow `expected_epoch_s` from the undelayed round of the same pair; each ratio (measured / expected)
    within 5% of 1. The benchmark's rounds are the delayed epochs' wall_s."""
    config = replace(setup.base, pipeline="preloaded", batch_size=max(setup.batch_sizes), persistency=2)
    plain, delayed = Trainer(config, bench_data), Trainer(replace(config, delay_ms=DELAY_MS), bench_data)
    overlapped = plain.device.type == "cuda"
    plain_epochs, delayed_epochs = iter(range(1, 1_000_000)), iter(range(1, 1_000_000))

    def ratios(plain_round: dict, r: dict) -> tuple[float, float]:
        expected_per_load_s = DELAY_MS / 1000 + plain_round["data_wait_s"] / plain_round["loads"]
        plain_compute_s = plain_round["compute_s"] * r["loads"] / plain_round["loads"]  # undelayed compute
        expected_s = expected_epoch_s(r["loads"], expected_per_load_s, plain_compute_s, overlapped)
        return r["data_wait_s"] / r["loads"] / expected_per_load_s, r["wall_s"] / expected_s

    plain.train_epoch(next(plain_epochs)), delayed.train_epoch(next(delayed_epochs))  # warm-up
    benchmark.group = "measurement"
    try:
        pairs = sequential_pairs(
            lambda: plain.train_epoch(next(plain_epochs)),
            lambda: delayed.train_epoch(next(delayed_epochs)),
            ratios,
            (DELAY_TOLERANCE, DELAY_TOLERANCE),
            CHECK_CAP_S[setup.profile]["planted_delay"],
        )
    finally:
        plain.close(), delayed.close()
    record_durations(benchmark, [r["wall_s"] for r in pairs.measured])
    bounds = {"low_bound": 1 - DELAY_TOLERANCE, "high_bound": 1 + DELAY_TOLERANCE}
    model = "overlapped" if overlapped else "serial"
    checks = [
        pairs.check(0, "planted delay: data wait per load / (d + load)", **bounds),
        pairs.check(1, f"planted delay: epoch / {model} model from undelayed compute", **bounds),
    ]
    info = schema.PlantedDelay(
        delay_ms=DELAY_MS,
        data_wait_ratio=checks[0].ratio,
        epoch_model_ratio=checks[1].ratio,
        epoch_model=model,
        config=replace(config, delay_ms=DELAY_MS).as_dict(),
        checks=[c.as_dict() for c in checks],
    )
    benchmark.extra_info.update(schema.to_extra_info(info))
    assert_checks(checks, setup.strict)


def bench_auto_overhead(benchmark, setup, bench_data):
    """--persistency auto with a loader that keeps up (preloaded) should take each batch once and cost what K=1
    costs: pairs of a K=1 epoch and an auto epoch in ABBA order; the ratio auto / K=1 of their wall_s must not be
    above 1 + MAX_AUTO_OVERHEAD. Its mean K is recorded beside it. The benchmark's rounds are the auto epochs."""
    config = replace(setup.base, pipeline="preloaded", batch_size=min(setup.batch_sizes), persistency=1)
    fixed, auto = Trainer(config, bench_data), Trainer(replace(config, persistency=8, adaptive=True), bench_data)
    fixed_epochs, auto_epochs = iter(range(1, 1_000_000)), iter(range(1, 1_000_000))
    fixed.train_epoch(next(fixed_epochs)), auto.train_epoch(next(auto_epochs))  # warm-up
    benchmark.group = "measurement"
    try:
        pairs = sequential_pairs(
            lambda: fixed.train_epoch(next(fixed_epochs)),
            lambda: auto.train_epoch(next(auto_epochs)),
            lambda k1, r: (r["wall_s"] / k1["wall_s"],),
            (MAX_AUTO_OVERHEAD / 2,),
            CHECK_CAP_S[setup.profile]["auto_overhead"],
        )
    finally:
        fixed.close(), auto.close()
    record_durations(benchmark, [r["wall_s"] for r in pairs.measured])
    check = pairs.check(0, "auto overhead (auto / K=1 epoch, fast loader)", high_bound=1 + MAX_AUTO_OVERHEAD)
    mean_k = sum(r["steps"] for r in pairs.measured) / sum(r["loads"] for r in pairs.measured)
    info = schema.AutoOverhead(
        mean_k=mean_k,
        overhead_fraction=check.ratio - 1,
        max_overhead_fraction=MAX_AUTO_OVERHEAD,
        config=auto.config.as_dict(),
        checks=[check.as_dict()],
    )
    benchmark.extra_info.update(schema.to_extra_info(info))
    assert_checks([check], setup.strict)
