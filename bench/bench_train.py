"""The grid: one training epoch per cell, pipeline x m x K, plus the model-only anchor (no loading at all)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from cells import epoch_extra_info, run_epochs
from options import PERSISTENCIES
from persist.benchjson import schema
from persist.config import parse_persistency
from persist.measure import NullClock
from persist.training.trainer import Trainer


@pytest.mark.parametrize("persistency", PERSISTENCIES, ids=[f"K{k}" for k in PERSISTENCIES])
def bench_epoch(benchmark, setup, bench_data, cell_config, persistency):
    config = replace(cell_config, **parse_persistency(persistency))
    benchmark.group = f"epoch: {config.pipeline}"
    trainer = Trainer(config, bench_data)
    try:
        rounds = run_epochs(benchmark, trainer, setup.rounds)
    finally:
        trainer.close()
    benchmark.extra_info.update(epoch_extra_info(config, trainer, rounds))  # a diverged model is recorded, not failed


def bench_model_only(benchmark, setup, bench_data, batch_size):
    """One epoch's worth of steps on a single batch already on the device: pure compute, the anchor."""
    config = replace(setup.base, batch_size=batch_size)
    trainer = Trainer(config, bench_data)
    x, y = next(iter(trainer.pipeline.epoch(1)))
    steps = trainer.counts["loads"]
    loss_sum = torch.zeros((), device=trainer.device)

    def epoch_of_steps():
        for _ in range(steps):
            trainer.train_batch(x, y, 1, 0, loss_sum, clock=NullClock())  # K=1: one step on the same batch
        trainer.sync()  # deliberate sync: the round ends when the device is done

    benchmark.group = "model-only"
    benchmark.pedantic(epoch_of_steps, rounds=setup.rounds, warmup_rounds=1, iterations=1)
    trainer.close()
    info = schema.ModelOnly(batch_size, steps, str(trainer.device), steps * batch_size, config=config.as_dict())
    benchmark.extra_info.update(schema.to_extra_info(info))
