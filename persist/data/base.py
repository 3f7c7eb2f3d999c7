"""The pipeline protocol and what every pipeline shares: the per-epoch order and the normalization.

Pipelines may differ in time only, never in data. So the order of an epoch comes from one function,
`epoch_order(n, seed, epoch)`, the batches are consecutive slices of it with the same drop-last rule
(`loads = n // m`), and every pipeline normalizes with the same per-channel mean and std.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Protocol

import torch

# How uint8 pixels become the model's input: x = (pixel/255 - mean) / std, per channel. See README ("Input scale").
NORMALIZATIONS = {
    "unit": "pixel / 255, in [0, 1]: torchvision's ToTensor() alone",
    "symmetric": "in [-1, 1]: ToTensor() then Normalize(0.5, 0.5), as in PyTorch's 2018 CIFAR-10 tutorial",
    "standardize": "per channel (pixel/255 - mean) / std, with the training split's statistics",
}


@dataclass(frozen=True)
class ImageData:
    """A dataset as uint8 images (N, 32, 32, 3), HWC like the CIFAR-10 files, and int64 labels.

    `channel_mean`/`channel_std` are facts about the training split (0..1 scale). `mean`/`std` are what every pipeline
    normalizes with, and follow `normalization` (one of NORMALIZATIONS)."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    channel_mean: tuple[float, float, float]
    channel_std: tuple[float, float, float]
    num_classes: int = 10
    normalization: str = "unit"
    storage: str = "raw"  # raw arrays, or "jpeg qQ": the pixels are the files decoded once on the CPU
    train_files: tuple[str, ...] = ()  # with encoded storage: each training sample's file, for pipelines that decode

    def __post_init__(self) -> None:
        for x, y in ((self.train_x, self.train_y), (self.test_x, self.test_y)):
            assert x.dtype == torch.uint8 and x.ndim == 4 and x.shape[-1] == 3, (x.dtype, x.shape)
            assert y.dtype == torch.int64 and y.shape == x.shape[:1], (y.dtype, y.shape)
        assert self.normalization in NORMALIZATIONS, self.normalization

    @property
    def mean(self) -> tuple[float, ...]:
        return {"unit": (0.0,) * 3, "symmetric": (0.5,) * 3, "standardize": self.channel_mean}[self.normalization]

    @property
    def std(self) -> tuple[float, ...]:
        return {"unit": (1.0,) * 3, "symmetric": (0.5,) * 3, "standardize": self.channel_std}[self.normalization]

    def normalized(self, normalization: str) -> ImageData:
        return self if normalization == self.normalization else replace(self, normalization=normalization)


Batch = tuple[torch.Tensor, torch.Tensor]


class Pipeline(Protocol):
    """What the trainer sees: it never asks which pipeline it has.

    `len(p)` is the number of loads (minibatches) per epoch. `p.epoch(e)` yields `(x, y)` already on the run's device:
    x float32 NCHW normalized, y int64. Same seed and epoch give the same batches in the same order.
    """

    name: str

    def __len__(self) -> int: ...

    def epoch(self, epoch: int) -> Iterator[Batch]: ...

    def describe(self) -> dict: ...

    def close(self) -> None: ...


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled sample order of one epoch, shared by every pipeline.

    A CPU generator, on purpose: CUDA's randperm draws a different permutation for the same seed, and every pipeline
    must see the same one. 50,000 indices take well under a millisecond, once per epoch.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator)


def batch_indices(order: torch.Tensor, batch_size: int, rank: int = 0, world_size: int = 1) -> list[torch.Tensor]:
    """This rank's part of each global batch: consecutive slices of `order` of batch_size*world_size, the incomplete
    last one dropped, each split into world_size parts of batch_size. One process: plain consecutive batches."""
    loads = len(order) // (batch_size * world_size)
    return list(order[: loads * batch_size * world_size].view(loads, world_size, batch_size)[:, rank])


def scaled_stats(data: ImageData) -> tuple[list[float], list[float]]:
    """Mean and std on the 0..255 pixel scale, the form that DALI and the uint8 pipelines use."""
    return [255.0 * v for v in data.mean], [255.0 * v for v in data.std]


class Normalizer:
    """uint8 pixels -> float32 input, by the same float operations in the same order wherever it runs:
    x = float32(pixel) - mean255, then x * (1 / std255), all in float32.
    Every pipeline uses these constants (DALI's crop_mirror_normalize computes the same two operations), so the
    pipelines feed bit-identical batches, not merely close ones."""

    def __init__(self, data: ImageData, device: torch.device | str = "cpu"):
        mean, std = scaled_stats(data)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1).to(device)
        # the reciprocal taken in float32 of the float32 std, as DALI's crop_mirror_normalize takes it
        self.inv_std = (1.0 / torch.tensor(std, dtype=torch.float32)).view(3, 1, 1).to(device)

    def __call__(self, pixels_chw: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, H, W) -> float32, normalized; broadcasts over a batch or a single image."""
        return pixels_chw.float().sub_(self.mean).mul_(self.inv_std)
