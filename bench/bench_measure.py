"""The measurement itself: what the clock costs, and whether a planted delay lands in data time.

Both are ratio checks over paired rounds (persist.stats): a reference epoch, then the measured one, adjacent in time.
A check fails only when the 95% interval of the median ratio lies wholly outside its bound.
"""

from __future__ import annotations

from dataclasses import replace

from conftest import run_epochs
from persist.benchjson import schema
from persist.measure import NullClock
from persist.stats import ratio_check
from persist.training.trainer import Trainer

MAX_AUTO_OVERHEAD = 0.05  # --persistency auto with a loader that keeps up: at most 5% slower than K=1
MAX_CLOCK_OVERHEAD = 0.01  # an epoch with the step clock may take at most 1% longer than one without
DELAY_MS = 20.0
DELAY_TOLERANCE = 0.05
MIN_PAIRS = 9  # sign-test interval [x_(2), x_(8)]: 96% coverage


def bench_clock_overhead(benchmark, setup, bench_data):
    """Rounds alternate an epoch without any step clock (setup, untimed here) and one with it (timed)."""
    # the smallest m has the most steps per epoch, so the clock's per-step cost weighs most there
    config = replace(setup.base, pipeline="preloaded", batch_size=min(setup.batch_sizes), persistency=1)
    clocked, bare = Trainer(config, bench_data), Trainer(config, bench_data, clock=NullClock())
    bare_s, epochs = [], iter(range(1, 1_000_000))

    def bare_epoch():
        bare_s.append(bare.train_epoch(next(epochs))["wall_s"])

    benchmark.group = "measurement"
    timed = run_epochs(benchmark, clocked, max(MIN_PAIRS, setup.rounds), setup=bare_epoch)[1:]
    ratios = [r["wall_s"] / b for r, b in zip(timed, bare_s[1:], strict=True)]
    check = ratio_check("clock overhead (clocked / bare epoch)", ratios, high_bound=1 + MAX_CLOCK_OVERHEAD)
    info = schema.ClockOverhead(
        clock=timed[-1]["clock"],
        overhead_fraction=check.ratio - 1,
        max_overhead_fraction=MAX_CLOCK_OVERHEAD,
        steps=timed[-1]["steps"],
        config=config.as_dict(),
        checks=[check.as_dict()],
    )
    benchmark.extra_info.update(schema.to_extra_info(info))
    assert not check.failed, check.message()


def bench_planted_delay(benchmark, setup, bench_data):
    """A delay of d per load must show up in data time as d + the pipeline's own load time per load, and the epoch
    must follow loads*(d + load) + compute; each ratio (measured / expected) within 5% of 1."""
    config = replace(setup.base, pipeline="preloaded", batch_size=max(setup.batch_sizes), persistency=2)
    plain, delayed = Trainer(config, bench_data), Trainer(replace(config, delay_ms=DELAY_MS), bench_data)
    plain_rounds, epochs = [], iter(range(1, 1_000_000))
    benchmark.group = "measurement"
    timed = run_epochs(
        benchmark,
        delayed,
        max(MIN_PAIRS, setup.rounds),
        setup=lambda: plain_rounds.append(plain.train_epoch(next(epochs))),
    )[1:]
    wait_ratios, epoch_ratios = [], []
    for plain_round, r in zip(plain_rounds[1:], timed, strict=True):  # each delayed round beside its plain one
        expected_per_load_s = DELAY_MS / 1000 + plain_round["data_wait_s"] / plain_round["loads"]
        wait_ratios.append(r["data_wait_s"] / r["loads"] / expected_per_load_s)
        epoch_ratios.append(r["wall_s"] / (r["loads"] * expected_per_load_s + r["compute_s"]))
    bounds = {"low_bound": 1 - DELAY_TOLERANCE, "high_bound": 1 + DELAY_TOLERANCE}
    checks = [
        ratio_check("planted delay: data wait per load / (d + load)", wait_ratios, **bounds),
        ratio_check("planted delay: epoch / (loads*(d + load) + compute)", epoch_ratios, **bounds),
    ]
    info = schema.PlantedDelay(
        delay_ms=DELAY_MS,
        data_wait_ratio=checks[0].ratio,
        epoch_model_ratio=checks[1].ratio,
        config=replace(config, delay_ms=DELAY_MS).as_dict(),
        checks=[c.as_dict() for c in checks],
    )
    benchmark.extra_info.update(schema.to_extra_info(info))
    failed = [c.message() for c in checks if c.failed]
    assert not failed, "; ".join(failed)


def bench_auto_overhead(benchmark, setup, bench_data):
    """--persistency auto with a loader that keeps up (preloaded) should take each batch once and cost what K=1
    costs: rounds alternate a K=1 epoch (setup, untimed here) and an auto epoch (timed); the ratio auto / K=1 of
    their epochs' wall_s must not be significantly above 1 + MAX_AUTO_OVERHEAD. Its mean K is recorded beside it."""
    config = replace(setup.base, pipeline="preloaded", batch_size=min(setup.batch_sizes), persistency=1)
    fixed, auto = Trainer(config, bench_data), Trainer(replace(config, persistency=8, adaptive=True), bench_data)
    fixed_s, epochs = [], iter(range(1, 1_000_000))

    def fixed_epoch():
        fixed_s.append(fixed.train_epoch(next(epochs))["wall_s"])

    benchmark.group = "measurement"
    try:
        timed = run_epochs(benchmark, auto, max(MIN_PAIRS, setup.rounds), setup=fixed_epoch)[1:]
    finally:
        fixed.close()
        auto.close()
    ratios = [r["wall_s"] / f for r, f in zip(timed, fixed_s[1:], strict=True)]
    check = ratio_check("auto overhead (auto / K=1 epoch, fast loader)", ratios, high_bound=1 + MAX_AUTO_OVERHEAD)
    mean_k = sum(r["steps"] for r in timed) / sum(r["loads"] for r in timed)
    info = schema.AutoOverhead(
        mean_k=mean_k,
        overhead_fraction=check.ratio - 1,
        max_overhead_fraction=MAX_AUTO_OVERHEAD,
        config=auto.config.as_dict(),
        checks=[check.as_dict()],
    )
    benchmark.extra_info.update(schema.to_extra_info(info))
    assert not check.failed, check.message()
