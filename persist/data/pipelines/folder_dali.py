"""An image folder through NVIDIA DALI: the external source sends each file's bytes with its window (from
persist/data/resized_crop.py, the same windows as every pipeline's), `fn.decoders.image_slice` decodes only that
window where the format allows (ROI decoding: nvJPEG, `mixed`, on CUDA; CPU without), `fn.resize` makes it S x S
(linear, antialiased) and `crop_mirror_normalize` flips and normalizes. EXIF orientation is not applied, as
torchvision.io's decoder does not apply it: the windows were drawn on the stored (H, W).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from persist.data.base import Batch, ImageData, batch_indices, epoch_order, loads_per_epoch, scaled_stats
from persist.data.pipelines.dali_loader import dali_available
from persist.data.pipelines.folder_loaders import PIXELS_NOTE
from persist.data.resized_crop import rrc_windows
from persist.errors import PersistError


class WindowSource:
    """Batch `info.iteration` of epoch `first_epoch + info.epoch_idx`: file bytes, labels, window starts (top, left),
    window shapes (height, width) and flips."""

    def __init__(self, data: ImageData, batch_size: int, seed: int, first_epoch: int, shard: tuple[int, int]):
        self.files, self.labels = data.train_files, data.train_y.numpy()
        self.sizes = torch.tensor(data.train_sizes, dtype=torch.int64)
        self.batch_size, self.seed, self.first_epoch, self.shard = batch_size, seed, first_epoch, shard
        self._epoch, self._batches = None, []

    def __call__(self, info) -> tuple:
        epoch = self.first_epoch + info.epoch_idx
        if epoch != self._epoch:
            order = epoch_order(len(self.labels), self.seed, epoch)
            self._epoch, self._batches = epoch, batch_indices(order, self.batch_size, *self.shard)
        if info.iteration >= len(self._batches):
            raise StopIteration
        index = self._batches[info.iteration]
        w = rrc_windows(self.sizes[index], self.seed, epoch, info.iteration, self.batch_size, *self.shard)
        start = torch.stack([w.top, w.left], dim=1).numpy().astype(np.int32)
        shape = torch.stack([w.height, w.width], dim=1).numpy().astype(np.int32)
        images = [np.fromfile(self.files[i], dtype=np.uint8) for i in index.tolist()]
        return images, self.labels[index.numpy()], start, shape, w.flip.numpy().astype(np.int32)


def _build(source: WindowSource, data: ImageData, batch_size: int, device_id: int | None, options: dict):
    from nvidia.dali import fn, pipeline_def, types

    mean, std = scaled_stats(data)
    size = data.image_size

    @pipeline_def(
        batch_size=batch_size,
        device_id=device_id,
        num_threads=options["num_threads"],
        prefetch_queue_depth=options["prefetch_queue_depth"],
        py_num_workers=options["py_num_workers"],
        py_start_method="spawn",
    )
    def folder_pipeline():
        images, labels, start, shape, mirror = fn.external_source(
            source=source,
            num_outputs=5,
            batch=True,
            batch_info=True,
            parallel=options["py_num_workers"] > 0,
            dtype=[types.UINT8, types.INT64, types.INT32, types.INT32, types.INT32],
        )
        decoder_device = "cpu" if device_id is None else "mixed"
        images = fn.decoders.image_slice(
            images,
            start,
            shape,
            axis_names="HW",
            device=decoder_device,
            output_type=types.RGB,
            adjust_orientation=False,
        )
        images = fn.resize(images, resize_x=size, resize_y=size, interp_type=types.INTERP_LINEAR, antialias=True)
        if device_id is not None:
            labels = labels.gpu()
        images = fn.crop_mirror_normalize(
            images, dtype=types.FLOAT, output_layout="CHW", mean=mean, std=std, mirror=mirror
        )
        return images, labels

    return folder_pipeline()


class FolderDaliPipeline:
    name = "dali"

    def __init__(
        self,
        data: ImageData,
        batch_size: int,
        seed: int,
        device: torch.device,
        *,
        num_threads: int = 1,
        prefetch_queue_depth: int = 2,
        py_num_workers: int = 0,
        augment: bool = False,
        settings_chosen_from: str = "",
        rank: int = 0,
        world_size: int = 1,
    ):
        ok, reason = dali_available()
        if not ok:
            raise PersistError(reason)
        self.data, self.batch_size, self.seed, self.device = data, batch_size, seed, device
        self.settings_chosen_from = settings_chosen_from
        self.device_id = (device.index or 0) if device.type == "cuda" else None
        self.options = {
            "num_threads": num_threads,
            "prefetch_queue_depth": prefetch_queue_depth,
            "py_num_workers": py_num_workers,
        }
        self.shard = (rank, world_size)
        self._iterator, self._next_epoch = None, None

    def __len__(self) -> int:
        return loads_per_epoch(len(self.data.train_y), self.batch_size, self.shard[1])

    def _start(self, first_epoch: int) -> None:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        source = WindowSource(self.data, self.batch_size, self.seed, first_epoch, self.shard)
        pipe = _build(source, self.data, self.batch_size, self.device_id, self.options)
        pipe.build()
        self._iterator = DALIGenericIterator(pipe, ["x", "y"], auto_reset=True)
        self._next_epoch = first_epoch

    def epoch(self, epoch: int) -> Iterator[Batch]:
        if epoch != self._next_epoch:  # DALI runs epochs in sequence; a jump rebuilds it
            self._start(epoch)
        self._next_epoch = epoch + 1
        for outputs in self._iterator:
            yield outputs[0]["x"], outputs[0]["y"]

    def describe(self) -> dict:
        where = "CPU" if self.device_id is None else "mixed (nvJPEG)"
        return {
            "pipeline": self.name,
            "device_id": self.device_id,
            **self.options,
            "settings": self.settings_chosen_from,
            "augment": f"random-resized-crop {self.data.image_size} + flip",
            "decoder": f"DALI fn.decoders.image_slice (the window only), {where}",
            "resampler": "DALI fn.resize, linear, antialias",
            "pixels": PIXELS_NOTE,
        }

    def close(self) -> None:
        self._iterator, self._next_epoch = None, None
