"""NVIDIA DALI: a batch-mode external source replays the shared order, crop_mirror_normalize makes float CHW.

Without a GPU the pipeline runs CPU-only (`device_id=None`); with CUDA the normalization runs on the GPU and
DALIGenericIterator hands out CUDA tensors. DALI prefetches across epoch boundaries, so the source derives the epoch
from DALI's own `batch_info.epoch_idx`, never from what the trainer is currently doing.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import numpy as np
import torch

from persist.data.augment import PAD, crop_flip_params
from persist.data.base import Batch, ImageData, batch_indices, epoch_order, loads_per_epoch, scaled_stats
from persist.data.integrity import first_undecodable
from persist.errors import PersistError

# A DALI pipeline that is garbage but not yet collected (held in a reference cycle, an exception's traceback, say)
# must die in this process: a process forked later (a DataLoader worker) inherits it without its threads, and its
# __del__ there waits forever for them. So every fork first collects such garbage here, where the threads still run.
os.register_at_fork(before=gc.collect)

DALI_MISSING = "--pipeline dali needs NVIDIA DALI: pip install 'persist[dali]' (or pip install nvidia-dali-cuda120)"


def dali_available() -> tuple[bool, str]:
    """Whether DALI imports, and if not, why: not installed, or installed but broken (a wheel built for another
    CUDA, a library it cannot load). Either is a reason to skip, never an error or a warning."""
    try:
        import nvidia.dali  # noqa: F401
    except Exception as error:  # ImportError, or an OSError from a shared library it cannot load
        if isinstance(error, ModuleNotFoundError) and error.name in ("nvidia", "nvidia.dali"):
            return False, DALI_MISSING
        return False, f"--pipeline dali: DALI is installed but cannot be imported: {type(error).__name__}: {error}"
    return True, ""


class OrderSource:
    """Batch-mode external source: batch `info.iteration` of epoch `first_epoch + info.epoch_idx`. With `files`
    (encoded storage) the images are each file's bytes, for DALI's decoder. With `augment`, also each sample's crop
    start in the unpadded image (top - PAD, left - PAD) and whether to mirror it."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        seed: int,
        first_epoch: int,
        shard: tuple[int, int] = (0, 1),
        augment: bool = False,
        files: tuple[str, ...] = (),
    ):
        self.images, self.labels, self.files = images, labels, files
        self.batch_size, self.seed, self.first_epoch, self.shard = batch_size, seed, first_epoch, shard
        self.augment = augment
        self._epoch, self._batches = None, []

    def __call__(self, info) -> tuple[np.ndarray, ...]:
        epoch = self.first_epoch + info.epoch_idx
        if epoch != self._epoch:
            order = epoch_order(len(self.labels), self.seed, epoch)
            self._epoch, self._batches = epoch, [b.numpy() for b in batch_indices(order, self.batch_size, *self.shard)]
        if info.iteration >= len(self._batches):
            raise StopIteration
        index = self._batches[info.iteration]
        images = [np.fromfile(self.files[i], dtype=np.uint8) for i in index] if self.files else self.images[index]
        if not self.augment:
            return images, self.labels[index]
        p = crop_flip_params(self.seed, epoch, info.iteration, 1, self.batch_size, *self.shard)
        start = (np.stack([p.top.numpy(), p.left.numpy()], axis=1) - PAD).astype(np.int32)  # (n, 2): rows, cols
        return images, self.labels[index], start, p.flip.numpy().astype(np.int32)


def _build(source: OrderSource, data: ImageData, batch_size: int, device_id: int | None, options: dict):
    from nvidia.dali import fn, pipeline_def, types

    mean, std = scaled_stats(data)
    images_shape = tuple(data.train_x.shape[1:])  # H, W, C

    @pipeline_def(
        batch_size=batch_size,
        device_id=device_id,
        num_threads=options["num_threads"],
        prefetch_queue_depth=options["prefetch_queue_depth"],
        py_num_workers=options["py_num_workers"],
        py_start_method="spawn",  # not fork: CUDA (torch) is initialized before DALI starts its workers
    )
    def cifar_pipeline():
        outputs = fn.external_source(
            source=source,
            num_outputs=4 if source.augment else 2,
            batch=True,
            batch_info=True,
            parallel=options["py_num_workers"] > 0,
            layout=["" if source.files else "HWC", "", "", ""][: 4 if source.augment else 2],
            dtype=[types.UINT8, types.INT64, types.INT32, types.INT32][: 4 if source.augment else 2],
        )
        images, labels = outputs[0], outputs[1]
        shapes = None
        if source.files:  # encoded storage: nvJPEG on the GPU ("mixed": bytes in host memory, pixels on the device)
            # each file's H, W, C from its header (on the CPU, no decode): the decoder would turn a greyscale file
            # into RGB, and a file of another size into a batch of mixed shapes, so the epoch checks these first
            shapes = fn.peek_image_shape(images, image_type=types.ANY_DATA)
            images = fn.decoders.image(images, device="cpu" if device_id is None else "mixed", output_type=types.RGB)
        elif device_id is not None:
            images = images.gpu()
        if device_id is not None:
            labels = labels.gpu()
        mirror = 0
        if source.augment:  # the shared crop-flip: a 32x32 window that may start outside the image, zero-padded
            start, mirror = outputs[2], outputs[3]
            size = list(images_shape[:2])
            images = fn.slice(
                images, start=start, shape=size, axis_names="HW", out_of_bounds_policy="pad", fill_values=0
            )
        images = fn.crop_mirror_normalize(
            images, dtype=types.FLOAT, output_layout="CHW", mean=mean, std=std, mirror=mirror
        )
        return (images, labels) if shapes is None else (images, labels, shapes)

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
        augment: bool = False,
        settings_chosen_from: str = "",
        rank: int = 0,
        world_size: int = 1,
    ):
        self.settings_chosen_from = settings_chosen_from
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
        self.shard, self.augment = (rank, world_size), augment
        self._iterator, self._next_epoch = None, None

    def __len__(self) -> int:
        return loads_per_epoch(len(self.labels), self.batch_size, self.shard[1])

    def _start(self, first_epoch: int) -> None:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        source = OrderSource(
            self.images,
            self.labels,
            self.batch_size,
            self.seed,
            first_epoch,
            self.shard,
            self.augment,
            self.data.train_files,
        )
        pipe = _build(source, self.data, self.batch_size, self.device_id, self.options)
        pipe.build()
        names = ["x", "y", "shape"] if self.data.train_files else ["x", "y"]
        self._iterator = DALIGenericIterator(pipe, names, auto_reset=True)
        self._next_epoch = first_epoch

    def epoch(self, epoch: int) -> Iterator[Batch]:
        if epoch != self._next_epoch:  # DALI runs epochs in sequence; a jump (resume, a bench round) rebuilds it
            self._start(epoch)
        self._next_epoch = epoch + 1
        expected = torch.tensor(self.data.train_x.shape[1:])  # H, W, C (on the CPU, as DALI's peeked shapes)
        try:
            for outputs in self._iterator:
                if "shape" in outputs[0] and (outputs[0]["shape"] != expected).any():
                    raise ValueError(f"a file in this batch is not {tuple(expected.tolist())} (H, W, C)")
                yield outputs[0]["x"], outputs[0]["y"]
        except Exception:
            self._next_epoch = None  # the iterator is spent: the next epoch rebuilds it
            # DALI names no file: look for the first file that does not decode (only after a failure)
            if self.data.train_files:
                height, width, channels = self.data.train_x.shape[1:]
                first_undecodable(self.data.train_files, (channels, height, width))
            raise

    def describe(self) -> dict:
        augment = "crop-flip" if self.augment else "none"
        described = {"pipeline": self.name, "device_id": self.device_id, **self.options, "augment": augment}
        described["settings"] = self.settings_chosen_from
        if self.data.train_files:
            described["decoder"] = "DALI fn.decoders.image, " + ("CPU" if self.device_id is None else "mixed (nvJPEG)")
        return described

    def close(self) -> None:
        self._iterator, self._next_epoch = None, None
