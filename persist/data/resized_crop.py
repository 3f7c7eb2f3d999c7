"""ImageNet-style preprocessing, shared by every pipeline: the random-resized-crop windows drawn from the run's seed,
and the evaluation transform.

Training: a window of each image with area scale in [0.08, 1] and aspect ratio (w/h) in [3/4, 4/3], resized to S x S,
then a horizontal flip with probability 1/2 (torchvision's RandomResizedCrop + RandomHorizontalFlip). The windows of
load `load` of `epoch` come from one CPU generator seeded by (seed, epoch, load), drawn for the whole global batch and
sliced per rank, as crop-flip's parameters are (persist/data/augment.py): a sample's window depends on where it sits
in the shared order and on its image's (H, W), never on the pipeline that cuts it. `rrc_windows` is the one function
that computes them; every pipeline calls it with the sizes the folder's index recorded.

The algorithm is torchvision's `RandomResizedCrop.get_params`, vectorized: up to 10 attempts per image, each drawing
an area fraction uniformly in scale and a log-uniform aspect ratio, w = round(sqrt(area * ratio)), h =
round(sqrt(area / ratio)), accepted when it fits, at a uniform position; if none fits, the fallback: the whole image,
cropped to the nearest allowed aspect ratio, centred. The random numbers are drawn up front (10 attempts for every
image), so the draw does not depend on how many attempts an image needed.

Evaluation: resize the shorter side to round(S / 0.875) (256 for S = 224), then a center crop of S x S.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision.transforms import v2

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
ATTEMPTS = 10
EVAL_CROP_FRACTION = 0.875  # resize to S / 0.875, then the central S x S: ImageNet's usual evaluation


@dataclass(frozen=True)
class Windows:
    """Per-sample crop windows in the image's own pixels (top, left, height, width), whether to flip, and the (H, W)
    of the images they were drawn on."""

    top: torch.Tensor  # int64 (n,)
    left: torch.Tensor
    height: torch.Tensor
    width: torch.Tensor
    flip: torch.Tensor  # bool (n,)
    image_hw: torch.Tensor  # int64 (n, 2)

    def __len__(self) -> int:
        return len(self.top)

    def rows(self) -> list[tuple[int, int, int, int, bool]]:
        """(top, left, height, width, flip) per sample, as Python values (what a worker process is sent)."""
        columns = (self.top.tolist(), self.left.tolist(), self.height.tolist(), self.width.tolist())
        return [(*box, bool(f)) for *box, f in zip(*columns, self.flip.tolist(), strict=True)]


def windows_key(seed: int, epoch: int, load: int) -> int:
    # crop-flip's key layout (augment.py) with a distinct tag in the low bits, so the two never share a stream
    return (((seed * 1_000_003 + epoch) * 1_000_033 + load) * 64 + 63) % (2**63)


def rrc_windows(
    sizes_hw: torch.Tensor, seed: int, epoch: int, load: int, batch_size: int, rank: int = 0, world_size: int = 1
) -> Windows:
    """The training windows of this rank's part of load `load` (0-based) of `epoch`. `sizes_hw`: int64 (batch_size, 2),
    the (H, W) of this rank's images in batch order."""
    generator = torch.Generator().manual_seed(windows_key(seed, epoch, load))
    n = batch_size * world_size
    # float64 throughout: the same windows on every machine
    area_u, ratio_u, top_u, left_u = torch.rand(4, n, ATTEMPTS, generator=generator, dtype=torch.float64)
    flip = torch.rand(n, generator=generator, dtype=torch.float64) < 0.5
    part = slice(rank * batch_size, (rank + 1) * batch_size)
    area_u, ratio_u, top_u, left_u, flip = area_u[part], ratio_u[part], top_u[part], left_u[part], flip[part]
    height = sizes_hw[:, 0:1].to(torch.float64)
    width = sizes_hw[:, 1:2].to(torch.float64)
    area = height * width * (SCALE[0] + (SCALE[1] - SCALE[0]) * area_u)
    log_low, log_high = math.log(RATIO[0]), math.log(RATIO[1])
    aspect = torch.exp(log_low + (log_high - log_low) * ratio_u)
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    # uniform integer position in [0, H - h] and [0, W - w], as torch.randint(0, H - h + 1) draws it
    top = torch.floor(top_u * (height - h + 1)).clamp(max=(height - h).clamp(min=0))
    left = torch.floor(left_u * (width - w + 1)).clamp(max=(width - w).clamp(min=0))
    first = torch.where(fits.any(dim=1), fits.to(torch.int8).argmax(dim=1), -1)  # the first attempt that fits
    fallback = _fallback(height[:, 0], width[:, 0])
    take = first.clamp(min=0)[:, None]
    chosen = [t.gather(1, take)[:, 0] for t in (top, left, h, w)]
    use = first >= 0
    result = [torch.where(use, c, f).to(torch.int64) for c, f in zip(chosen, fallback, strict=True)]
    return Windows(*result, flip=flip, image_hw=sizes_hw)


def _fallback(height: torch.Tensor, width: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """torchvision's fallback: the whole image, cut to the nearest allowed aspect ratio, centred."""
    in_ratio = width / height
    w = torch.where(in_ratio > RATIO[1], torch.round(height * RATIO[1]), width)
    h = torch.where(in_ratio < RATIO[0], torch.round(width / RATIO[0]), height)
    return torch.div(height - h, 2, rounding_mode="floor"), torch.div(width - w, 2, rounding_mode="floor"), h, w


def eval_resize(image_size: int) -> int:
    """The shorter side before the evaluation's center crop: 256 for 224."""
    return round(image_size / EVAL_CROP_FRACTION)


def eval_transform(image_chw: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 (3, H, W) -> (3, S, S): shorter side to round(S / 0.875) (antialiased bilinear), then the central S x S."""
    resized = v2.functional.resize(image_chw, eval_resize(image_size), antialias=True)
    return v2.functional.center_crop(resized, [image_size, image_size])


def resized_crop_one(image_chw: torch.Tensor, window: tuple[int, int, int, int, bool], image_size: int) -> torch.Tensor:
    """One uint8 (3, H, W) image cut to its window and resized to S x S (antialiased bilinear), flipped if told: the
    torchvision pipeline's per-sample work, and the reference the other pipelines' pixels are measured against."""
    top, left, height, width, flip = window
    out = v2.functional.resized_crop(image_chw, top, left, height, width, [image_size, image_size], antialias=True)
    return v2.functional.horizontal_flip(out) if flip else out
