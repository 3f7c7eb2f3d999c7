"""The device-preloaded pipeline: the whole uint8 training set lives on the device (after airbench's CifarLoader).

One copy to the device at start, then per batch a gather (`index_select`), the batch's cuts, and an in-place
normalize. No float copy of the dataset ever exists. What is stored depends on the source (sources.py):

- arrays: the images as they are, NCHW (3 KB each, 150 MB for CIFAR-10's training set);
- JPEG storage: every file decoded once, into the device tensor (nvJPEG on CUDA, libjpeg-turbo on the CPU);
- an image folder: every file decoded once on the CPU and resized (antialiased) to P x P (`--preload-size P`, default
  round(S / 0.875): the resolution the evaluation's resize gives the same images, 256 for S = 224, and what lets
  ImageNet-scale sets fit at all: 1.28 M x 3 x 256 x 256 is 252 GB). Each batch is then cut from the P x P copies
  by roi_align (persist/data/images.py). Storing P x P loses detail that a small window of a large photo keeps in
  the other pipelines, and it is a second resampling: the pixels differ from theirs (README, "Your own data").
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
from torchvision.transforms import v2

from persist.data.base import Batch, ImageData, batch_indices, epoch_order, loads_per_epoch
from persist.data.imagefolder import decode_rgb
from persist.data.images import DeviceImages, WindowedDeviceImages
from persist.data.pipelines.sources import FolderSource, source_of
from persist.data.resized_crop import eval_resize
from persist.data.storage import decode_files
from persist.errors import ConfigError

PRELOAD_SHARE = 0.8  # of the free memory: the rest is left for the model, its activations and the test split


def free_bytes(device: torch.device) -> int | None:
    """Memory a new tensor may take on `device`: CUDA's free memory, or the host's MemAvailable; None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fits(n: int, preload_size: int, device: torch.device) -> int:
    """The bytes of an (n, 3, P, P) uint8 tensor; a clear error when it would not fit on the device."""
    need = n * 3 * preload_size * preload_size
    free = free_bytes(device)
    if free is not None and need > PRELOAD_SHARE * free:
        raise ConfigError(
            f"preload_size={preload_size}: {n} images x 3 x {preload_size} x {preload_size} = {need / 1e9:.2f} GB "
            f"would not fit in {PRELOAD_SHARE:.0%} of the {free / 1e9:.2f} GB free on {device}; lower --preload-size, "
            "cut --train-size, or use --pipeline torchvision or dali (they decode per batch)"
        )
    return need


def decode_resized(files: tuple[str, ...], preload_size: int, device: torch.device) -> torch.Tensor:
    """Every file decoded (RGB) and resized to P x P (antialiased) on the CPU, into one uint8 NCHW tensor on
    `device`."""
    images = torch.empty(len(files), 3, preload_size, preload_size, dtype=torch.uint8, device=device)

    def resize(path: str) -> torch.Tensor:
        return v2.functional.resize(decode_rgb(path), [preload_size, preload_size], antialias=True)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # the decoder releases the GIL
        for i, image in enumerate(pool.map(resize, files)):
            images[i].copy_(image)
    return images


class PreloadedPipeline:
    name = "preloaded"

    def __init__(
        self,
        data: ImageData,
        batch_size: int,
        seed: int,
        device: torch.device,
        *,
        augment: bool = False,
        rank: int = 0,
        world_size: int = 1,
        preload_size: int | None = None,
    ):
        self.batch_size, self.seed, self.device, self.augment = batch_size, seed, device, augment
        self.rank, self.world_size = rank, world_size
        self.source = source_of(data, augment)
        self.decode_setup_s = None
        folder = isinstance(self.source, FolderSource)
        start = time.perf_counter()
        if folder:
            self.preload_size = preload_size or eval_resize(data.image_size)
            self.preload_size_chosen = "--preload-size" if preload_size else "round(S / 0.875), the evaluation's resize"
            check_fits(len(self.source), self.preload_size, device)
            images = decode_resized(self.source.files, self.preload_size, device)
        elif self.source.files:  # JPEG storage: decode every file once, into the device tensor
            images = decode_files(self.source.files, self.source.shape_chw, device).permute(0, 2, 3, 1)
        else:
            images = data.train_x
        if self.source.files:
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # deliberate sync: the decode is done before its clock stops
            self.decode_setup_s = time.perf_counter() - start  # setup, recorded in the manifest, in no epoch
        if folder:
            self.train = WindowedDeviceImages(images, data.train_y, data, device)
            self.device_bytes = self.train.images.numel()
        else:
            self.train = DeviceImages(images, data.train_y, data, device)
            self.device_bytes = self.train.images.numel() + 8 * len(self.train)

    def __len__(self) -> int:
        return loads_per_epoch(len(self.source), self.batch_size, self.world_size)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        # The order is drawn on the CPU (shared with the other pipelines), where the cuts are drawn from it, and sent
        # over once per epoch: each load's index on the device is a slice of that copy.
        order = epoch_order(len(self.source), self.seed, epoch)
        shard = (self.batch_size, self.rank, self.world_size)
        on_device = batch_indices(order.to(self.device, non_blocking=True), *shard)
        for load, (index, device_index) in enumerate(zip(batch_indices(order, *shard), on_device, strict=True)):
            cuts = self.source.cuts(index, self.seed, epoch, load, *shard)
            yield self.train.batch(device_index, cuts)

    def describe(self) -> dict:
        described = {"pipeline": self.name, "device_bytes": self.device_bytes, "augment": self.source.augment_name}
        if isinstance(self.source, FolderSource):
            decoder = "torchvision.io.decode_image on the CPU, resized to P x P (antialias), once before training"
            described.update(
                preload_size=self.preload_size,
                preload_size_chosen=self.preload_size_chosen,
                decoder=decoder,
                decode_setup_s=self.decode_setup_s,
                resampler="torchvision.ops.roi_align on the device (adaptive sampling) from the P x P copy",
                pixels=self.source.pixels,
            )
        elif self.decode_setup_s is not None:
            decoder = "nvJPEG (torchvision)" if self.device.type == "cuda" else "libjpeg-turbo (torchvision)"
            described.update(decode_setup_s=self.decode_setup_s, decoder=decoder)
        return described

    def close(self) -> None:
        pass
