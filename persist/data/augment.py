"""Crop-flip augmentation, the usual CIFAR recipe (pad 4 with zeros, a random 32x32 crop, a random horizontal flip),
with its random parameters drawn from the run's seed so that every pipeline applies the same crops and flips.

The parameters of use k of load `load` in an epoch come from one generator seeded by (seed, epoch, load, k), drawn for
the whole global batch and sliced per rank. So a sample's crop depends on where it sits in the shared order, never on
which pipeline or process reads it. Under `--reuse same` the pipeline augments each batch once (use 1): torchvision per
sample in its workers, DALI with `fn.slice` and `crop_mirror_normalize`, preloaded on the device. Under `--reuse
reaugment` the pipeline hands over the plain batch and the trainer draws a fresh crop-flip for each of the K uses on
the device (example echoing before augmentation, in Choi et al.'s terms); its use 1 is the `same` batch.

Cropping and flipping only move pixels, so every implementation gives bit-identical batches. The padding is pixel 0,
which after normalization is `normalize(0)` per channel: `crop_flip` takes the fill value for the tensor it is given,
as a Python scalar or as a tensor already on the device, never building one from the host on each call (a
host-to-device copy from pageable memory makes the host wait for every queued kernel).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PAD = 4  # pixels of zero padding on each side before the crop


@dataclass(frozen=True)
class CropFlip:
    """Per-sample parameters: the crop's top-left corner in the padded image (0..2*PAD) and whether to flip."""

    top: torch.Tensor  # int64 (n,)
    left: torch.Tensor  # int64 (n,)
    flip: torch.Tensor  # bool (n,)

    def __len__(self) -> int:
        return len(self.top)

    def to(self, device: torch.device) -> CropFlip:
        if device.type != "cuda":
            return CropFlip(self.top.to(device), self.left.to(device), self.flip.to(device))
        # from pinned host memory, non_blocking: the copy is queued behind the GPU's work and the host does not
        # wait for it (a copy from pageable memory would make the host wait for every queued kernel)
        return CropFlip(*(t.pin_memory().to(device, non_blocking=True) for t in (self.top, self.left, self.flip)))


def crop_flip_params(
    seed: int, epoch: int, load: int, use: int, batch_size: int, rank: int = 0, world_size: int = 1
) -> CropFlip:
    """Parameters of use `use` (1..K) of load `load` (0-based) of `epoch`, for this rank's part of the global batch.
    A CPU generator, like epoch_order: CUDA's would draw other numbers for the same seed."""
    key = ((seed * 1_000_003 + epoch) * 1_000_033 + load) * 64 + use
    generator = torch.Generator().manual_seed(key % (2**63))
    n = batch_size * world_size
    top = torch.randint(0, 2 * PAD + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * PAD + 1, (n,), generator=generator)
    flip = torch.randint(0, 2, (n,), generator=generator).bool()
    part = slice(rank * batch_size, (rank + 1) * batch_size)  # batch_indices gives rank r this slice of the batch
    return CropFlip(top[part], left[part], flip[part])


def crop_flip(images: torch.Tensor, params: CropFlip, fill: torch.Tensor | float = 0) -> torch.Tensor:
    """Pad (N, C, H, W) images by PAD with `fill` (a Python scalar, or a tensor of one value per channel already on
    the images' device), crop each back to H x W at its corner, and flip the chosen ones horizontally: one gather, on
    whatever device the images are."""
    n, c, h, w = images.shape
    padded_shape = (n, c, h + 2 * PAD, w + 2 * PAD)
    if isinstance(fill, torch.Tensor):  # the caller built it once, on the device (Reaugment's fill)
        padded = fill.to(images.device, images.dtype).reshape(1, -1, 1, 1).expand(padded_shape).contiguous()
    else:  # a scalar is a kernel argument: torch.as_tensor(fill, device=cuda) here would be a blocking copy
        padded = images.new_full(padded_shape, fill)
    padded[:, :, PAD : PAD + h, PAD : PAD + w] = images
    params = params.to(images.device)
    rows = params.top[:, None] + torch.arange(h, device=images.device)  # (N, H)
    cols = params.left[:, None] + torch.arange(w, device=images.device)  # (N, W)
    cols = torch.where(params.flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=images.device)[:, None, None]
    # advanced indices on dims 0, 2, 3 around the channel slice: the result is (N, H, W, C)
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


class Reaugment:
    """--reuse reaugment: use `use` of a loaded (already normalized) batch gets its own crop-flip, drawn from the
    shared seed and applied on the batch's device; under --reuse same, the batch as loaded."""

    def __init__(self, config, normalize, rank: int = 0, world_size: int = 1):
        self.on = config.reuse == "reaugment"
        self.seed, self.batch_size, self.rank, self.world_size = config.seed, config.batch_size, rank, world_size
        # pixel 0 normalized, made once on the device: the padding of a crop-flip of a normalized batch
        self.fill = normalize(torch.zeros(3, 1, 1, dtype=torch.uint8, device=normalize.mean.device)).flatten()

    def __call__(self, x: torch.Tensor, epoch: int, load: int, use: int) -> torch.Tensor:
        if not self.on:
            return x
        params = crop_flip_params(self.seed, epoch, load, use, self.batch_size, self.rank, self.world_size)
        return crop_flip(x, params, self.fill)
