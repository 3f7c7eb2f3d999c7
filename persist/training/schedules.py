"""Learning-rate schedules of minibatch persistency, and the counts of an epoch.

A schedule maps (mu, k) to the learning rate of the k-th use of a loaded batch, k = 1..K. The built-ins are the
paper's; persist.registry.LR_SCHEDULES names them, and takes a user's own as `--lr-schedule module:function`.
An epoch is one pass over the distinct data: loads = N // m, steps = K * loads, each example seen K times.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from persist.data.base import loads_per_epoch
from persist.errors import ConfigError, PluginError
from persist.registry import LR_SCHEDULES


def constant(mu: float, k: int) -> float:
    """mu on every use: the paper's main experiments (Section 2)."""
    return mu


def linear(mu: float, k: int) -> float:
    """k*mu on the k-th use: the paper's adaptive variant (Section 3)."""
    return k * mu


def lr_of_use(schedule: str, mu: float, persistency: int) -> list[float]:
    """The learning rates of uses k = 1..K of one batch; a plug-in's must be finite numbers > 0."""
    function = LR_SCHEDULES.get(schedule)
    rates = [function(mu, k) for k in range(1, persistency + 1)]
    for k, lr in enumerate(rates, start=1):
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not (math.isfinite(lr) and lr > 0):
            raise PluginError(
                f"--lr-schedule {schedule}: use {k} got lr={lr!r}, but a schedule must return a finite number > 0"
            )
    return rates


@dataclass(frozen=True)
class Use:
    """One use of a loaded batch: which one (k = 1..K), its learning rate, and that rate over mu."""

    k: int
    lr: float
    lr_factor: float


def uses(k: int, schedule: str = "constant", mu: float = 1.0) -> list[Use]:
    """The K = `k` uses of one loaded batch under `schedule` (any registered name or plug-in), with base rate mu
    (1.0 by default, so that lr == lr_factor: k on the k-th use for "linear", 1 for "constant")."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k={k!r} is not allowed: the uses of a batch are an integer K >= 1")
    return [Use(i, lr, lr / mu) for i, lr in enumerate(lr_of_use(schedule, mu, k), start=1)]


def counts(n: int, batch_size: int, persistency: int) -> dict[str, int]:
    """Per epoch: loads, steps, fresh samples and sample-steps, for n samples and a (global) batch of batch_size."""
    loads = loads_per_epoch(n, batch_size)
    steps = persistency * loads
    return {"loads": loads, "steps": steps, "fresh_samples": loads * batch_size, "sample_steps": steps * batch_size}
