"""The device-preloaded pipeline: the whole uint8 dataset lives on the device (after airbench's CifarLoader).

One copy to the device at start, then per batch a gather (`index_select`) and an in-place normalize. Images are
stored NCHW uint8 (3 KB each, 150 MB for CIFAR-10's training set); no float copy of the dataset ever exists.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from persist.data.augment import crop_flip_params
from persist.data.base import Batch, ImageData, batch_indices, epoch_order, loads_per_epoch
from persist.data.images import DeviceImages


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
    ):
        self.batch_size, self.seed, self.device, self.augment = batch_size, seed, device, augment
        self.rank, self.world_size = rank, world_size
        self.decode_setup_s = None
        images = data.train_x
        if data.train_files:  # encoded storage: decode every file once, into the device tensor (nvJPEG on CUDA)
            from persist.data.storage import decode_files

            start = time.perf_counter()
            height, width, channels = data.train_x.shape[1:]
            images = decode_files(data.train_files, (channels, height, width), device).permute(0, 2, 3, 1)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # deliberate sync: the decode is done before its clock stops
            self.decode_setup_s = time.perf_counter() - start  # setup, recorded in the manifest, in no epoch
        self.train = DeviceImages(images, data.train_y, data, device)

    def __len__(self) -> int:
        return loads_per_epoch(len(self.train), self.batch_size, self.world_size)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        # The order is drawn on the CPU (shared with the other pipelines) and sent over once per epoch.
        order = epoch_order(len(self.train), self.seed, epoch).to(self.device, non_blocking=True)
        for load, index in enumerate(batch_indices(order, self.batch_size, self.rank, self.world_size)):
            params = None
            if self.augment:
                params = crop_flip_params(self.seed, epoch, load, 1, self.batch_size, self.rank, self.world_size)
            yield self.train.batch(index, params)

    def describe(self) -> dict:
        bytes_ = self.train.images.numel() + 8 * len(self.train)
        described = {"pipeline": self.name, "device_bytes": bytes_, "augment": "crop-flip" if self.augment else "none"}
        if self.decode_setup_s is not None:
            decoder = "nvJPEG (torchvision)" if self.device.type == "cuda" else "libjpeg-turbo (torchvision)"
            described.update(decode_setup_s=self.decode_setup_s, decoder=decoder)
        return described

    def close(self) -> None:
        pass
