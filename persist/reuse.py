"""Minibatch persistency: every loaded batch is used for K consecutive SGD steps, each with its own learning rate.

An epoch is one pass over the distinct data: loads = N // m, steps = K * loads, each example seen K times.
A learning-rate schedule maps (mu, k) to the learning rate of the k-th use of a batch, k = 1..K. To add one, register
it here and name it in config.LR_SCHEDULES so that the CLI accepts it.
"""

from __future__ import annotations

from collections.abc import Callable

LrSchedule = Callable[[float, int], float]

LR_SCHEDULES: dict[str, LrSchedule] = {
    "constant": lambda mu, k: mu,  # the paper's main experiments
    "linear": lambda mu, k: k * mu,  # the paper's adaptive variant (Section 3)
}


def lr_of_use(schedule: str, mu: float, persistency: int) -> list[float]:
    """The learning rates of uses k = 1..K of one batch."""
    return [LR_SCHEDULES[schedule](mu, k) for k in range(1, persistency + 1)]


def counts(n: int, batch_size: int, persistency: int) -> dict[str, int]:
    loads = n // batch_size
    steps = persistency * loads
    return {"loads": loads, "steps": steps, "fresh_samples": loads * batch_size, "sample_steps": steps * batch_size}
