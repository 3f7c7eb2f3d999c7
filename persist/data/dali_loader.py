"""NVIDIA DALI: a batch-mode external source replays the shared order, crop_mirror_normalize makes float CHW.

Without a GPU the pipeline runs CPU-only (`device_id=None`); with CUDA the normalization runs on the GPU and
DALIGenericIterator hands out CUDA tensors. DALI prefetches across epoch boundaries, so the source derives the epoch
from DALI's own `batch_info.epoch_idx`, never from what the trainer is currently doing.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from persist.config import PersistError
from persist.data.base import Batch, ImageData, batch_indices, epoch_order, scaled_stats

DALI_MISSING = "--pipeline dali needs NVIDIA DALI: pip install 'persist[dali]' (or pip install nvidia-dali-cuda120)"


def dali_available() -> tuple[bool, str]:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False, DALI_MISSING
    return True, ""


class OrderSource:
    """Batch-mode external source: batch `info.iteration` of epoch `first_epoch + info.epoch_idx`."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        seed: int,
        first_epoch: int,
        shard: tuple[int, int] = (0, 1),
    ):
        self.images, self.labels = images, labels
        self.batch_size, self.seed, self.first_epoch, self.shard = batch_size, seed, first_epoch, shard
        self._epoch, self._batches = None, []

    def __call__(self, info) -> tuple[np.ndarray, np.ndarray]:
        epoch = self.first_epoch + info.epoch_idx
        if epoch != self._epoch:
            order = epoch_order(len(self.labels), self.seed, epoch)
            self._epoch, self._batches = epoch, [b.numpy() for b in batch_indices(order, self.batch_size, *self.shard)]
        if info.iteration >= len(self._batches):
            raise StopIteration
        index = self._batches[info.iteration]
        return self.images[index], self.labels[index]


def _build(source: OrderSource, data: ImageData, batch_size: int, device_id: int | None, options: dict):
    from nvidia.dali import fn, pipeline_def, types

    mean, std = scaled_stats(data)

    @pipeline_def(
        batch_size=batch_size,
        device_id=device_id,
        num_threads=options["num_threads"],
        prefetch_queue_depth=options["prefetch_queue_depth"],
        py_num_workers=options["py_num_workers"],
        py_start_method="spawn",  # not fork: CUDA (torch) is initialized before DALI starts its workers
    )
    def cifar_pipeline():
        images, labels = fn.external_source(
            source=source,
            num_outputs=2,
            batch=True,
            batch_info=True,
            parallel=options["py_num_workers"] > 0,
            layout=["HWC", ""],
            dtype=[types.UINT8, types.INT64],
        )
        if device_id is not None:
            images, labels = images.gpu(), labels.gpu()
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW", mean=mean, std=std)
        return images, labels

    return cifar_pipeline()


class DaliPipeline:
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
        rank: int = 0,
        world_size: int = 1,
    ):
        ok, reason = dali_available()
        if not ok:
            raise PersistError(reason)
        self.data, self.batch_size, self.seed, self.device = data, batch_size, seed, device
        self.device_id = (device.index or 0) if device.type == "cuda" else None
        self.options = {
            "num_threads": num_threads,
            "prefetch_queue_depth": prefetch_queue_depth,
            "py_num_workers": py_num_workers,
        }
        self.images, self.labels = data.train_x.numpy(), data.train_y.numpy()
        self.shard = (rank, world_size)
        self._iterator, self._next_epoch = None, None

    def __len__(self) -> int:
        return len(self.labels) // (self.batch_size * self.shard[1])

    def _start(self, first_epoch: int) -> None:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        source = OrderSource(self.images, self.labels, self.batch_size, self.seed, first_epoch, self.shard)
        pipe = _build(source, self.data, self.batch_size, self.device_id, self.options)
        pipe.build()
        self._iterator = DALIGenericIterator(pipe, ["x", "y"], auto_reset=True)
        self._next_epoch = first_epoch

    def epoch(self, epoch: int) -> Iterator[Batch]:
        if epoch != self._next_epoch:  # DALI runs epochs in sequence; a jump (resume, a bench round) rebuilds it
            self._start(epoch)
        self._next_epoch = epoch + 1
        for outputs in self._iterator:
            yield outputs[0]["x"], outputs[0]["y"]

    def describe(self) -> dict:
        return {"pipeline": self.name, "device_id": self.device_id, **self.options}

    def close(self) -> None:
        self._iterator, self._next_epoch = None, None
