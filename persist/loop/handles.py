"""What Meter's context managers hand the loop: an epoch's running sums, a step's handle, and the timed loader."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from persist.errors import ConfigError
from persist.measure import EpochTiming

_END = object()  # the loader's epoch is over


class EpochSums:
    """One epoch's counts and loss; its times (and loads: the timed fetches) are in `timing`, the engine's."""

    def __init__(self, number: int, timing: EpochTiming):
        self.number, self.timing = number, timing
        self.steps = self.fresh_samples = self.sample_steps = 0
        self.loads_stepped = 0  # the loads when a step last ran: a step after a new load is that batch's first use
        self.loss_sum = None


class Step:
    """The handle of one meter.step(): `loss(tensor)` adds the step's loss on the device, with no host sync."""

    def __init__(self, epoch: EpochSums, samples: int):
        self._epoch, self.samples = epoch, samples

    def loss(self, loss: torch.Tensor, reduction: str = "mean") -> None:
        """`loss`: the step's loss tensor, the batch's mean (PyTorch's default) or, with reduction="sum", its sum.
        train_loss is then the mean per-example loss of the epoch, as the trainer records it."""
        if reduction not in ("mean", "sum"):
            raise ConfigError(f"reduction={reduction!r} is not allowed: mean or sum")
        value = loss.detach()
        summed = value * self.samples if reduction == "mean" else value
        if self._epoch.loss_sum is None:
            self._epoch.loss_sum = torch.zeros((), dtype=torch.float64, device=value.device)
        self._epoch.loss_sum.add_(summed)


class Timed:
    """An iterable whose every next() is timed as data wait of the meter's current epoch. See Meter.timed."""

    def __init__(self, meter, iterable: Iterable):  # meter: the persist.Meter that made it
        self.meter, self.iterable = meter, iterable

    def __len__(self) -> int:
        return len(self.iterable)

    def note_reuse(self, k: int, schedule: str, adaptive: bool = False) -> None:  # persist.reuse: K on record
        self.meter.seen.update(k=k, schedule=schedule, adaptive=adaptive)

    def __iter__(self) -> Iterator:
        iterator = None

        def take():
            nonlocal iterator
            if iterator is None:  # a DataLoader starts its workers here: part of the first fetch's wait
                iterator = iter(self.iterable)
            return next(iterator, _END)

        while (item := self.meter._fetch_timing().fetch(take, end=_END)) is not _END:
            yield item
