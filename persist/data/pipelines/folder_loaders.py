"""An image folder through the torchvision and preloaded pipelines: ImageNet's training preprocessing, with the crop
windows of persist/data/resized_crop.py (the same for every pipeline), then the shared Normalizer.

- torchvision: each worker reads and decodes its sample's file (decode_image, RGB) and cuts its window with
  `v2.functional.resized_crop` (bilinear, antialiased) to S x S, then flips it if told. The batch sampler sends each
  sample's window along with its index, as crop-flip's parameters travel (torchvision_loader.py).
- preloaded: every file is decoded once, before training, and resized (antialiased) to P x P into one uint8 tensor on
  the device (`--preload-size P`, default round(S / 0.875): the resolution the evaluation's resize gives the same
  images, 256 for S = 224, and what lets ImageNet-scale sets fit at all: 1.28 M x 3 x 256 x 256 is 252 GB). A batch
  is then a gather and one `torchvision.ops.roi_align` over the whole batch, with each window mapped into the P x P
  coordinates: bilinear samples averaged over each output pixel's bin (adaptive sampling: an antialiased
  downscale, a bilinear upscale), rounded back to uint8, flipped, normalized. Storing P x P loses detail that a
  small window of a large photo keeps in the other pipelines, and it is a second resampling: the pixels differ
  from the other pipelines' (README, "Your own data", gives the gap).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.ops import roi_align
from torchvision.transforms import v2

from persist.data.base import Batch, ImageData, Normalizer, batch_indices, epoch_order, loads_per_epoch
from persist.data.imagefolder import decode_rgb
from persist.data.pipelines.torchvision_loader import EpochBatchSampler
from persist.data.resized_crop import Windows, eval_resize, resized_crop_one, rrc_windows
from persist.errors import ConfigError

PIXELS_NOTE = "resampled per pipeline: close to the other pipelines' pixels, not bit-identical"


class FolderDataset(Dataset):
    """Item (index, top, left, height, width, flip) -> the sample's window of its decoded file at S x S, normalized."""

    def __init__(self, data: ImageData):
        self.files, self.labels, self.image_size = data.train_files, data.train_y, data.image_size
        self.normalizer = Normalizer(data)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int, int, int, int, bool]) -> tuple[torch.Tensor, torch.Tensor]:
        index, *window = item
        image = resized_crop_one(decode_rgb(self.files[index]), tuple(window), self.image_size)
        return self.normalizer(image), self.labels[index]


class FolderBatchSampler(EpochBatchSampler):
    """The shared order's batches, each sample with its window: (index, top, left, height, width, flip)."""

    def __init__(self, sizes: torch.Tensor, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        super().__init__(len(sizes), batch_size, seed, rank, world_size)
        self.sizes = sizes

    def items(self, load: int, index: torch.Tensor) -> list[tuple]:
        windows = rrc_windows(
            self.sizes[index], self.seed, self.current_epoch, load, self.batch_size, self.rank, self.world_size
        )
        return [(i, *row) for i, row in zip(index.tolist(), windows.rows(), strict=True)]


class FolderTorchvisionPipeline:
    name = "torchvision"

    def __init__(
        self,
        data: ImageData,
        batch_size: int,
        seed: int,
        device: torch.device,
        *,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = False,
        prefetch_factor: int | None = None,
        augment: bool = False,
        settings_chosen_from: str = "",
        rank: int = 0,
        world_size: int = 1,
    ):
        self.device, self.settings_chosen_from, self.image_size = device, settings_chosen_from, data.image_size
        sizes = torch.tensor(data.train_sizes, dtype=torch.int64)
        self.sampler = FolderBatchSampler(sizes, batch_size, seed, rank, world_size)
        self.options = {
            "num_workers": num_workers,
            "pin_memory": device.type == "cuda" if pin_memory is None else pin_memory,
            "persistent_workers": persistent_workers,
            "prefetch_factor": prefetch_factor,
        }
        self.loader = DataLoader(FolderDataset(data), batch_sampler=self.sampler, **self.options)

    def __len__(self) -> int:
        return len(self.sampler)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        self.sampler.set_epoch(epoch)
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def describe(self) -> dict:
        return {
            "pipeline": self.name,
            **self.options,
            "settings": self.settings_chosen_from,
            "augment": f"random-resized-crop {self.image_size} + flip",
            "decoder": "torchvision.io.decode_image (libjpeg-turbo, libpng), per sample in the loader",
            "resampler": "v2.functional.resized_crop, bilinear, antialias",
            "pixels": PIXELS_NOTE,
        }

    def close(self) -> None:
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()


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


PRELOAD_SHARE = 0.8  # of the free memory: the rest is left for the model, its activations and the test split


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


def _decode_resized(path: str, preload_size: int) -> torch.Tensor:
    return v2.functional.resize(decode_rgb(path), [preload_size, preload_size], antialias=True)


class FolderPreloadedPipeline:
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
        self.batch_size, self.seed, self.device, self.rank, self.world_size = batch_size, seed, device, rank, world_size
        self.image_size = data.image_size
        self.preload_size = preload_size or eval_resize(data.image_size)
        self.preload_size_chosen = "--preload-size" if preload_size else "round(S / 0.875), the evaluation's resize"
        n = len(data.train_files)
        self.device_bytes = check_fits(n, self.preload_size, device)
        start = time.perf_counter()
        self.images = torch.empty(n, 3, self.preload_size, self.preload_size, dtype=torch.uint8, device=device)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # the decoder releases the GIL
            for i, image in enumerate(pool.map(lambda f: _decode_resized(f, self.preload_size), data.train_files)):
                self.images[i].copy_(image)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # deliberate sync: the copies are done before the clock stops
        self.decode_setup_s = time.perf_counter() - start  # setup, recorded in the manifest, in no epoch
        self.labels = data.train_y.to(device)
        self.sizes = torch.tensor(data.train_sizes, dtype=torch.int64)  # CPU: the windows are drawn there
        self.normalize = Normalizer(data, device)

    def __len__(self) -> int:
        return loads_per_epoch(len(self.labels), self.batch_size, self.world_size)

    def windows(self, epoch: int, load: int, index: torch.Tensor) -> Windows:
        return rrc_windows(self.sizes[index], self.seed, epoch, load, self.batch_size, self.rank, self.world_size)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        order = epoch_order(len(self.labels), self.seed, epoch)
        for load, index in enumerate(batch_indices(order, self.batch_size, self.rank, self.world_size)):
            windows = self.windows(epoch, load, index)
            boxes = self.boxes(windows, self.sizes[index])
            index = index.to(self.device, non_blocking=True)
            yield self.crop(index, boxes.to(self.device, non_blocking=True), windows.flip), self.labels[index]

    def boxes(self, windows: Windows, sizes_hw: torch.Tensor) -> torch.Tensor:
        """roi_align's boxes (batch position, x1, y1, x2, y2): each window in the P x P image's coordinates."""
        scale_y = self.preload_size / sizes_hw[:, 0].double()
        scale_x = self.preload_size / sizes_hw[:, 1].double()
        x1, y1 = windows.left * scale_x, windows.top * scale_y
        x2, y2 = (windows.left + windows.width) * scale_x, (windows.top + windows.height) * scale_y
        position = torch.arange(len(windows), dtype=torch.float64)
        return torch.stack([position, x1, y1, x2, y2], dim=1).float()

    def crop(self, index: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """Gather, cut every window to S x S in one roi_align, back to uint8, flip, normalize: all on the device."""
        images = self.images.index_select(0, index).float()
        # aligned=True: pixel i covers [i, i+1), as in resized_crop; sampling_ratio=-1: ceil(bin size) samples per bin
        out = roi_align(images, boxes, output_size=self.image_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        out = out.round_().clamp_(0, 255).to(torch.uint8)
        flip = flip.to(self.device, non_blocking=True)[:, None, None, None]
        return self.normalize(torch.where(flip, out.flip(-1), out))

    def describe(self) -> dict:
        decoder = "torchvision.io.decode_image on the CPU, resized to P x P (antialias), once before training"
        return {
            "pipeline": self.name,
            "device_bytes": self.device_bytes,
            "preload_size": self.preload_size,
            "preload_size_chosen": self.preload_size_chosen,
            "augment": f"random-resized-crop {self.image_size} + flip",
            "decoder": decoder,
            "decode_setup_s": self.decode_setup_s,
            "resampler": "torchvision.ops.roi_align on the device (adaptive sampling) from the P x P copy",
            "pixels": PIXELS_NOTE,
        }

    def close(self) -> None:
        pass
