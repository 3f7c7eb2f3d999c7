"""What a bench cell does with its rounds: time whole epochs by their own wall_s, hand the times to
pytest-benchmark, judge its checks, and turn its rounds into the typed extra_info (persist/benchjson/schema.py)."""

from __future__ import annotations

import math
import statistics
import time

from persist.benchjson import schema
from persist.config import RunConfig
from persist.measure.machine import device_name
from persist.registry import plugins
from persist.training.trainer import Trainer
from pytest_benchmark_compat import record_rounds


def median_of(rounds: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def record_durations(benchmark, durations_s: list[float]) -> None:
    """Give pytest-benchmark round times measured by the cell itself, as its stats for this benchmark.

    pedantic times its whole call; a training epoch's call also stops the NVML sampler and resolves the step clock
    after `wall_s` is taken, and a sequential check decides its number of rounds as it goes. So such cells time
    themselves and hand the times over here: the benchmark's stats (the summary's epoch time and what `persist
    compare` reads) are then exactly the figures extra_info reports (through bench/pytest_benchmark_compat.py, the
    one user of pytest-benchmark's internals)."""
    if benchmark.disabled:  # --benchmark-disable: nothing is recorded
        return
    record_rounds(benchmark, durations_s)


def run_epochs(benchmark, trainer: Trainer, rounds: int, warmup_rounds: int = 1) -> list[dict]:
    """Whole training epochs (each a new epoch number), timed by their own wall_s: every round's stats are returned,
    warm-up first, each with `outside_wall_s`, the call's time outside wall_s (the NVML sampler's stop and the step
    clock's resolve, which run after the epoch's end is taken). A loss that turns non-finite is not an error here:
    the bench measures time, and the rounds go on."""
    results = []
    for epoch in range(1, warmup_rounds + rounds + 1):
        start = time.perf_counter()
        result = trainer.train_epoch(epoch)
        results.append({**result, "outside_wall_s": time.perf_counter() - start - result["wall_s"]})
    record_durations(benchmark, [r["wall_s"] for r in results[warmup_rounds:]])
    return results


def assert_checks(checks, strict: bool) -> None:
    """A failed check fails its cell; an inconclusive one does too under --persist-strict (`strict`)."""
    bad = {"fail", "inconclusive"} if strict else {"fail"}
    failed = [c.message() for c in checks if c.verdict in bad]
    assert not failed, "; ".join(failed)


def divergence(rounds: list[dict]) -> dict:
    """Whether the model's loss became NaN/inf in any round (warm-up included), and the first such epoch."""
    bad = [r["epoch"] for r in rounds if not math.isfinite(r["train_loss"])]
    return {"diverged": bool(bad), "diverged_epoch": bad[0] if bad else None}


def epoch_extra_info(config: RunConfig, trainer: Trainer, rounds: list[dict], warmup_rounds: int = 1) -> dict:
    timed = rounds[warmup_rounds:]
    has_stall = all(r.get("data_stall_s") is not None for r in timed)  # the device's data stall (docs/clocks.md)
    wall_s = median_of(timed, "wall_s")
    last = timed[-1]
    info = schema.TrainEpoch(
        **(divergence(rounds) if config.compute == "real" else {}),  # emulated: a NaN loss, nothing trained
        train_loss_last=last["train_loss"],
        pipeline=config.pipeline,
        batch_size=config.batch_size,
        persistency=config.persistency,
        lr_schedule=config.lr_schedule,
        storage=config.storage,
        augment=config.augment,
        reuse=config.reuse,
        delay_ms=config.delay_ms,
        model=config.model,
        precision=config.precision,
        channels_last=config.channels_last,
        compile=config.compile,
        compile_s=trainer.compile_s,
        adaptive=config.adaptive,
        compute=config.compute,
        emulated=trainer.describe_compute()["emulated"],
        uses_per_load=last["uses_per_load"],
        device=device_name(trainer.device),
        clock=last["clock"],
        wall_s=wall_s,
        data_wait_s=median_of(timed, "data_wait_s"),
        compute_s=median_of(timed, "compute_s"),
        gpu_idle_s=median_of(timed, "gpu_idle_s"),
        data_stall_s=median_of(timed, "data_stall_s") if has_stall else None,
        outside_wall_s=median_of(timed, "outside_wall_s") if all("outside_wall_s" in r for r in timed) else None,
        loads=last["loads"],
        steps=last["steps"],
        fresh_samples=last["fresh_samples"],
        sample_steps=last["sample_steps"],
        fresh_img_per_s=last["fresh_samples"] / wall_s,
        sample_steps_per_s=last["sample_steps"] / wall_s,
        nvml=last["nvml"],
        config=config.as_dict(),
        pipeline_options=trainer.pipeline.describe(),
        plugins=plugins(config.as_dict()),
    )
    return schema.to_extra_info(info)
