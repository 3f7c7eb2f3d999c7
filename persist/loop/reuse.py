"""K-fold reuse and ideal-loading replay for any loader: what persist's trainer does, for a user's own loop.

    for (x, y), use in persist.reuse(loader, k=2, schedule="linear", optimizer=optimizer):  # use.k = 1, 2
        ...; optimizer.step()                                          # at lr x use.lr_factor, during this step only

    replayed = persist.replay(loader, batches=8, device=device)        # 8 batches onto the device, once
    for x, y in replayed: ...                                          # len(loader) batches, from the cache

`reuse` takes its uses from persist.training.schedules.uses, the same list the trainer steps through (Trainer.uses),
so any registered schedule (plug-ins included) gives the same K learning-rate factors here as in `persist train`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

from persist.config import AUTO_CAP
from persist.errors import ConfigError
from persist.training.adaptive import Prefetcher, StepDone, next_ready
from persist.training.schedules import Use, uses


def reuse(
    iterable: Iterable,
    k: int | str,
    schedule: str = "constant",
    *,
    cap: int = AUTO_CAP,
    device=None,
    optimizer: torch.optim.Optimizer | None = None,
) -> Iterator[tuple[object, Use]]:
    """Yield (batch, use) K times for each batch of `iterable`, in order: use.k = 1..K, use.lr_factor the schedule's
    rate of that use over the base rate (k for "linear", 1 for "constant"). The schedule is checked now, not at
    the first batch. Wrapped around `Meter.timed(...)`, it tells the meter K and the schedule for the manifest.

    k="auto" is adaptive persistency (persist/training/adaptive.py): a background thread prefetches the loader's
    batches, and each batch is yielded again only while the next one has not come, at most `cap` times. With CUDA
    work in the loop, pass `device`: the question is then asked once the last step's kernels are done (a CUDA
    event queried, never waited on). Around Meter.timed, the meter times the loop's wait on the prefetch queue.

    With `optimizer`, each optimizer.step() of a use runs at every param group's current lr (as the user's
    scheduler left it) times use.lr_factor, and the group's lr is put back right after that step, after the loop
    and when the loop is left early: any scheduler composes with the factors, and a checkpoint or scheduler.step()
    anywhere in the loop sees the scheduler's own lr, never the scaled one."""
    if k == "auto":
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 2:
            raise ConfigError(f"cap={cap!r} is not allowed: auto needs an integer cap >= 2")
        the_uses = uses(cap, schedule)
        note = getattr(iterable, "note_reuse", None)
        if note is not None:
            note(cap, schedule, adaptive=True)
        step_done = StepDone(torch.device(device) if device is not None else torch.device("cpu"))
        pairs = _reused_while_late(iterable, the_uses, step_done)
    else:
        the_uses = uses(k, schedule)
        note = getattr(iterable, "note_reuse", None)
        if note is not None:
            note(k, schedule)
        pairs = _reused(iterable, the_uses)
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(f"optimizer={optimizer!r} is not allowed: reuse scales a torch.optim.Optimizer's lr")
    return pairs if optimizer is None else _scaling_lr(pairs, optimizer)


def _scaling_lr(pairs: Iterator[tuple[object, Use]], optimizer) -> Iterator[tuple[object, Use]]:
    """`pairs` with each optimizer.step() during a use at the groups' lr x use.lr_factor, and put back after it."""
    factor = [1.0]  # the use now yielded
    saved: dict[int, float] = {}  # group index -> the lr it had before the step scaled it

    def scale(opt, args, kwargs) -> None:
        for i, group in enumerate(opt.param_groups):
            saved[i] = group["lr"]
            group["lr"] = group["lr"] * factor[0]

    def restore(*_) -> None:
        for i, lr in saved.items():
            optimizer.param_groups[i]["lr"] = lr
        saved.clear()

    hooks = [optimizer.register_step_pre_hook(scale), optimizer.register_step_post_hook(restore)]
    try:
        for batch, use in pairs:
            factor[0] = use.lr_factor
            yield batch, use
    finally:  # also when the loop breaks or a step raised between the hooks
        for hook in hooks:
            hook.remove()
        restore()
        pairs.close()


def _reused_while_late(iterable: Iterable, the_uses: list[Use], step_done: StepDone) -> Iterator[tuple[object, Use]]:
    inner = getattr(iterable, "iterable", None) if hasattr(iterable, "note_reuse") else None
    # a Meter.timed wrapper: prefetch its loader, and let the meter time the wait on the queue, in this thread
    source = Prefetcher(iter(inner if inner is not None else iterable), device=step_done.device)  # CUDA: own stream
    batches = type(iterable)(iterable.meter, source) if inner is not None else source
    try:
        for batch in batches:
            for taken, use in enumerate(the_uses, start=1):
                yield batch, use  # the user's step on it runs here
                if taken == len(the_uses):
                    break  # the cap
                step_done.record()
                came, _ = next_ready(source.ready, step_done)
                if came:
                    break
    finally:
        source.close()


def _reused(iterable: Iterable, the_uses: list[Use]) -> Iterator[tuple[object, Use]]:
    for batch in iterable:
        for use in the_uses:
            yield batch, use


def to_device(batch, device: torch.device):
    """A batch (tensors, or tuples, lists and dicts of them) with every tensor on `device`; other values as they are."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    return batch


class Replay:
    """The first `batches` batches of a loader, held on the device, yielded in turn for an epoch of the loader's
    length: the user's step with ideal loading. See `replay`."""

    is_replay = True  # what Meter.timed looks for: this run's loading is ideal

    def __init__(self, iterable: Iterable, batches: int, device: torch.device | str | None = None, length=None):
        if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
            raise ConfigError(f"batches={batches!r} is not allowed: replay needs an integer number of batches >= 1")
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            raise ConfigError(f"length={length!r} is not allowed: use an integer number of batches per epoch >= 1")
        self.device = None if device is None else torch.device(device)
        self.source_type = f"{type(iterable).__module__}.{type(iterable).__qualname__}"
        self.cached = []
        for batch in iterable:  # the loader's own order: its first N batches, loaded once, here
            self.cached.append(batch if self.device is None else to_device(batch, self.device))
            if len(self.cached) == batches:
                break
        if not self.cached:
            raise ConfigError(f"replay got no batch from {self.source_type}: the loader is empty")
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # deliberate sync: the cache is on the device before any epoch
        if length is None:
            try:
                length = len(iterable)
            except TypeError:  # no len(): an epoch is the cached batches, each once
                length = len(self.cached)
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator:
        cached = self.cached
        for i in range(self.length):
            yield cached[i % len(cached)]

    def describe(self) -> dict:
        return {"batches_cached": len(self.cached), "batches_per_epoch": self.length, "source": self.source_type}


def replay(
    iterable: Iterable, batches: int, device: torch.device | str | None = None, *, length: int | None = None
) -> Replay:
    """Take the first `batches` batches of `iterable` now (moved to `device` when given, so no copy happens in the
    loop), then yield them in turn for `length` batches per epoch: len(iterable) by default, as many as the loader
    has; a loader without len() gives an epoch of the N cached batches unless `length` says otherwise. Every
    iteration is a new epoch of the same cached batches. Its epoch time is the ceiling of the user's step: what any
    pipeline or K can at best approach."""
    return Replay(iterable, batches, device, length)
