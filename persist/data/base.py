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

from persist.registry import NORMALIZATIONS

Stats = tuple[float, float, float]


# How uint8 pixels become the model's input: x = (pixel/255 - mean) / std, per channel, with (mean, std) from the
# run's normalization (registries.NORMALIZATIONS). See README ("Input scale").
def unit_scale(channel_mean: Stats, channel_std: Stats) -> tuple[Stats, Stats]:
    """pixel / 255, in [0, 1]: torchvision's ToTensor() alone."""
    return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def symmetric_scale(channel_mean: Stats, channel_std: Stats) -> tuple[Stats, Stats]:
    """In [-1, 1]: ToTensor() then Normalize(0.5, 0.5), as in PyTorch's 2018 CIFAR-10 tutorial."""
    return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def standardize(channel_mean: Stats, channel_std: Stats) -> tuple[Stats, Stats]:
    """Per channel (pixel/255 - mean) / std, with the training split's statistics."""
    return tuple(channel_mean), tuple(channel_std)


@dataclass(frozen=True)
class ImageData:
    """A dataset as uint8 images (N, 32, 32, 3), HWC like the CIFAR-10 files, and int64 labels.

    `channel_mean`/`channel_std` are facts about the training split (0..1 scale). `mean`/`std` are what every pipeline
    normalizes with, and follow `normalization` (a name in registries.NORMALIZATIONS)."""

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
    # An image folder (persist/data/imagefolder.py): training images of any size, kept as files and cut to image_size x
    # image_size by ImageNet's preprocessing in each pipeline (persist/data/resized_crop.py). Then train_x is empty
    # (0, S, S, 3), train_sizes holds each training file's (H, W), and the test split is decoded once, resized to
    # S/0.875 and center-cropped to S.
    image_size: int | None = None
    train_sizes: tuple[tuple[int, int], ...] = ()
    train_root: str | None = None  # an image folder's root (absolute); train_files are the run's selected files in it
    skipped_files: tuple[str, ...] = ()  # --skip-bad-files: files that could not be decoded, left out
    storage_folder: str | None = None  # with encoded storage: the folder read (absolute), recorded in the manifest
    storage_index_sha256: str | None = None  # and the hash of its index.json (persist/data/integrity.py)

    def __post_init__(self) -> None:
        pairs = [(self.test_x, self.test_y)]
        if self.image_size is None:
            pairs.append((self.train_x, self.train_y))
        else:
            assert len(self.train_files) == len(self.train_sizes) == len(self.train_y), "one file and size per label"
            assert tuple(self.train_x.shape) == (0, self.image_size, self.image_size, 3), self.train_x.shape
        for x, y in pairs:
            assert x.dtype == torch.uint8 and x.ndim == 4 and x.shape[-1] == 3, (x.dtype, x.shape)
            assert y.dtype == torch.int64 and y.shape == x.shape[:1], (y.dtype, y.shape)

    @property
    def scale(self) -> tuple[Stats, Stats]:
        """(mean, std) on the 0..1 scale that every pipeline normalizes with, from the run's normalization."""
        mean, std = NORMALIZATIONS.get(self.normalization)(self.channel_mean, self.channel_std)
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            from persist.errors import PluginError

            raise PluginError(
                f"--normalization {self.normalization}: returned mean={mean!r}, std={std!r}; expected three floats "
                "each, std > 0"
            )
        return tuple(float(v) for v in mean), tuple(float(v) for v in std)

    @property
    def mean(self) -> Stats:
        return self.scale[0]

    @property
    def std(self) -> Stats:
        return self.scale[1]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one model input."""
        return (self.train_x.shape[3], self.train_x.shape[1], self.train_x.shape[2])

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
    # mod 2**64: every seed RunConfig takes fits manual_seed, and the seeds that fitted before draw as they did
    generator = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % 2**64)
    return torch.randperm(n, generator=generator)


def loads_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    """Minibatches per epoch, the same for every pipeline: the incomplete last global batch is dropped."""
    return n // (batch_size * world_size)


def batch_indices(order: torch.Tensor, batch_size: int, rank: int = 0, world_size: int = 1) -> list[torch.Tensor]:
    """This rank's part of each global batch: consecutive slices of `order` of batch_size*world_size, the incomplete
    last one dropped, each split into world_size parts of batch_size. One process: plain consecutive batches."""
    loads = loads_per_epoch(len(order), batch_size, world_size)
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


def channel_stats(images: torch.Tensor) -> tuple[Stats, Stats]:
    """Per-channel mean and std of uint8 NHWC images on the 0..1 scale, accumulated in float64 over chunks."""
    total = torch.zeros(3, dtype=torch.float64)
    total_sq = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), 8192):
        chunk = images[start : start + 8192].to(torch.float64) / 255
        total += chunk.sum(dim=(0, 1, 2))
        total_sq += (chunk * chunk).sum(dim=(0, 1, 2))
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count
    std = (total_sq / count - mean * mean).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
