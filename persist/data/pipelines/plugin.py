"""A plug-in pipeline (`--pipeline module:Class`), wrapped: what it declares, recorded, and its normalization checked.

A plug-in class may declare two attributes (docs/pipelines.md):
- `prefetches = True`: it loads ahead of the loop (threads, workers); `persist whatif` then forecasts it as an async
  loader. Without it, a plug-in is taken as synchronous, as before.
- `normalization = (mean, std)`: the per-channel mean and std, three floats each on the 0..1 scale, its batches are
  normalized with. persist evaluates on the test split normalized by data.mean/std; a different one is a warning.

Whatever it declares, its first training batch's per-channel statistics are compared once with the test split's (the
tensor persist evaluates on): a model trained on inputs normalized one way and scored on another scores near chance,
with no error. A warning is printed once and kept under "plugin" in describe(), so the manifest records it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import torch

from persist.data.base import Batch, ImageData, Pipeline
from persist.errors import PluginError
from persist.registry import plugin_call

# Same images under the same normalization give per-channel means within a small part of a std of each other, even
# for one batch under crop-flip or random-resized crops; a different normalization (ImageNet mean/std against
# [0, 1], say) moves them by one to several stds. So: a mean apart by over half the test split's std, or a std off
# by over a factor 2, is a different normalization, not sampling noise.
MEAN_TOLERANCE_STD = 0.5
STD_RATIO_TOLERANCE = 2.0
DECLARED_TOLERANCE = 1e-3  # a declared mean/std is the test split's when each value is within this


def channel_stats(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of an NCHW batch: one reduction and one copy to the host (a deliberate sync)."""
    flat = x.detach().float().transpose(0, 1).reshape(x.shape[1], -1)
    stats = torch.stack([flat.mean(dim=1), flat.std(dim=1)]).cpu().tolist()
    return stats[0], stats[1]


EVAL_SAMPLE = 512  # test images the comparison reads, evenly spaced: the statistics, not the whole split in float


def eval_stats(data: ImageData) -> tuple[list[float], list[float]]:
    """The test split as persist evaluates it (pixel/255 - mean) / std, per channel (Normalizer's arithmetic), over
    at most EVAL_SAMPLE images spread over it."""
    step = max(1, len(data.test_x) // EVAL_SAMPLE)
    pixels = data.test_x[::step][:EVAL_SAMPLE].permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)
    return channel_stats((pixels - mean) / std)


def declared_mismatch(declared, data: ImageData) -> str | None:
    """A warning when a declared (mean, std) is not the one the test split is normalized with."""
    mean, std = (tuple(float(v) for v in part) for part in declared)
    if all(abs(a - b) <= DECLARED_TOLERANCE for a, b in zip((*mean, *std), (*data.mean, *data.std), strict=True)):
        return None
    return (
        f"the plug-in declares normalization mean={_fmt(mean)} std={_fmt(std)}, but the test split is normalized "
        f"with mean={_fmt(data.mean)} std={_fmt(data.std)} (--normalization {data.normalization}): test accuracy "
        "will not mean what it should"
    )


def stats_mismatch(train: tuple[list[float], list[float]], test: tuple[list[float], list[float]]) -> str | None:
    """A warning when the first training batch's per-channel statistics clearly differ from the test split's."""
    (train_mean, train_std), (test_mean, test_std) = train, test
    if len(train_mean) != len(test_mean):
        return None  # not the test split's channels: nothing to compare
    for a, b, sa, sb in zip(train_mean, test_mean, train_std, test_std, strict=True):
        ratio = max(sa, 1e-12) / max(sb, 1e-12)
        if abs(a - b) > MEAN_TOLERANCE_STD * sb or not 1 / STD_RATIO_TOLERANCE <= ratio <= STD_RATIO_TOLERANCE:
            return (
                f"the plug-in's first training batch has per-channel mean {_fmt(train_mean)} and std "
                f"{_fmt(train_std)}, the test split mean {_fmt(test_mean)} and std {_fmt(test_std)}: it normalizes "
                "differently from the evaluation, so test accuracy may be near chance"
            )
    return None


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.3g}" for v in values) + ")"


class PluginPipeline:
    """A plug-in, as the trainer sees it: every call into its code goes through plugin_call (whatever it raises is one
    line naming the plug-in, the call and the error), what it declares is recorded, its first batch checked once."""

    def __init__(self, inner: Pipeline, data: ImageData, flag: str, stream=None):
        self.inner, self.data, self.flag, self.stream = inner, data, flag, stream
        self.prefetches = bool(getattr(inner, "prefetches", False))
        self.normalization = getattr(inner, "normalization", None)
        self.warnings: list[str] = []
        self.checked = False
        if self.normalization is not None:
            self._warn(declared_mismatch(self.normalization, data))

    def __getattr__(self, name: str):
        if name == "inner":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)  # anything else the plug-in has, as it is

    @property
    def name(self) -> str:
        return getattr(self.inner, "name", type(self.inner).__name__)

    def call(self, what: str, function, *args):
        return plugin_call(self.flag, what, function, *args)

    def __len__(self) -> int:
        return self.call("len()", len, self.inner)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        batches = self.call(f"epoch({epoch})", lambda: iter(self.inner.epoch(epoch)))  # called now, as unwrapped
        return self._batches(batches, epoch)

    def _batches(self, batches: Iterator[Batch], epoch: int) -> Iterator[Batch]:
        load = 0
        while True:
            load += 1
            try:
                batch = next(batches)
            except StopIteration:
                return
            except Exception as error:
                raise PluginError(
                    f"{self.flag}: epoch({epoch}) raised {type(error).__name__}: {error} (at batch {load})"
                ) from error
            if not self.checked:
                self.checked = True  # once, on the run's first batch: no per-step sync
                x = batch[0] if isinstance(batch, tuple | list) else batch
                if isinstance(x, torch.Tensor) and x.ndim == 4 and x.is_floating_point():
                    self._warn(stats_mismatch(channel_stats(x), eval_stats(self.data)))
            yield batch

    def _warn(self, message: str | None) -> None:
        if message is None or message in self.warnings:
            return
        self.warnings.append(message)
        print(f"persist: warning: {self.flag}: {message}", file=self.stream or sys.stderr)

    def describe(self) -> dict:
        declared = None if self.normalization is None else [list(map(float, part)) for part in self.normalization]
        plugin = {"prefetches": self.prefetches, "normalization": declared, "warnings": list(self.warnings)}
        return {**self.call("describe()", self.inner.describe), "plugin": plugin}

    def close(self) -> None:
        self.call("close()", self.inner.close)
