"""NVIDIA DALI: a batch-mode external source replays the shared order with each load's cuts, and DALI's graph reads,
cuts and normalizes (`crop_mirror_normalize` makes float CHW), for any source (sources.py):

- arrays: the uint8 HWC images themselves; JPEG storage: each file's bytes for `fn.decoders.image`. With crop-flip,
  `fn.slice` cuts a window that may start outside the image, zero-padded, and crop_mirror_normalize mirrors.
- an image folder: each file's bytes with its window (the same windows as every pipeline's); `fn.decoders.image_slice`
  decodes only that window where the format allows (ROI decoding: nvJPEG, `mixed`, on CUDA; CPU without), `fn.resize`
  makes it S x S (linear, antialiased). EXIF orientation is not applied, as torchvision.io's decoder does not apply
  it: the windows were drawn on the stored (H, W).

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

from persist.data.augment import PAD
from persist.data.base import Batch, ImageData, batch_indices, epoch_order, loads_per_epoch, scaled_stats
from persist.data.integrity import first_undecodable
from persist.data.pipelines.sources import Cuts, FolderSource, JpegSource, Source, source_of
from persist.data.resized_crop import Windows
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


def cut_outputs(cuts: Cuts) -> tuple[np.ndarray, ...]:
    """A load's cuts as the external source's int32 outputs: a window's (top, left), (height, width) and flip; a
    crop-flip's start in the unpadded image (top - PAD, left - PAD) and flip; nothing without cuts."""
    if cuts is None:
        return ()
    start = torch.stack([cuts.top, cuts.left], dim=1).numpy()  # (n, 2): rows, cols
    flip = cuts.flip.numpy().astype(np.int32)
    if isinstance(cuts, Windows):
        shape = torch.stack([cuts.height, cuts.width], dim=1).numpy()
        return start.astype(np.int32), shape.astype(np.int32), flip
    return (start - PAD).astype(np.int32), flip


class LoadSource:
    """Batch-mode external source: batch `info.iteration` of epoch `first_epoch + info.epoch_idx`, as (images,
    labels, *cuts): the images as arrays, or each file's bytes for DALI's decoder, then cut_outputs()."""

    def __init__(self, source: Source, batch_size: int, seed: int, first_epoch: int, shard: tuple[int, int] = (0, 1)):
        self.source, self.batch_size, self.seed = source, batch_size, seed
        self.first_epoch, self.shard = first_epoch, shard
        # numpy views, gathered with numpy's indexing per batch: torch's, then .numpy(), costs the loader its speed
        self.images = None if source.files else np.ascontiguousarray(source.images.numpy())
        self.labels = source.labels.numpy()
        self._epoch, self._batches = None, []

    def __call__(self, info) -> tuple[np.ndarray, ...]:
        epoch = self.first_epoch + info.epoch_idx
        if epoch != self._epoch:
            order = epoch_order(len(self.source), self.seed, epoch)
            self._epoch, self._batches = epoch, batch_indices(order, self.batch_size, *self.shard)
        if info.iteration >= len(self._batches):
            raise StopIteration
        index = self._batches[info.iteration]
        images = self.source.encoded(index) if self.source.files else self.images[index.numpy()]
        cuts = self.source.cuts(index, self.seed, epoch, info.iteration, self.batch_size, *self.shard)
        return images, self.labels[index.numpy()], *cut_outputs(cuts)


def _build(external: LoadSource, data: ImageData, batch_size: int, device_id: int | None, options: dict):
    from nvidia.dali import fn, pipeline_def, types

    mean, std = scaled_stats(data)
    source = external.source
    folder = isinstance(source, FolderSource)
    outputs = 5 if folder else 4 if source.augment else 2  # images, labels, then the cut's (cut_outputs)

    @pipeline_def(
        batch_size=batch_size,
        device_id=device_id,
        num_threads=options["num_threads"],
        prefetch_queue_depth=options["prefetch_queue_depth"],
        py_num_workers=options["py_num_workers"],
        py_start_method="spawn",  # not fork: CUDA (torch) is initialized before DALI starts its workers
    )
    def graph():
        images, labels, *cut = fn.external_source(
            source=external,
            num_outputs=outputs,
            batch=True,
            batch_info=True,
            parallel=options["py_num_workers"] > 0,
            layout=["" if source.files else "HWC", *[""] * (outputs - 1)],
            dtype=[types.UINT8, types.INT64, *[types.INT32] * (outputs - 2)],
        )
        decoder = "cpu" if device_id is None else "mixed"  # mixed: bytes in host memory, pixels on the device
        shapes, mirror = None, 0
        if folder:  # decode the window only, then S x S
            start, shape, mirror = cut
            images = fn.decoders.image_slice(
                images, start, shape, axis_names="HW", device=decoder, output_type=types.RGB, adjust_orientation=False
            )
            size = source.image_size
            images = fn.resize(images, resize_x=size, resize_y=size, interp_type=types.INTERP_LINEAR, antialias=True)
        elif source.files:  # JPEG storage: nvJPEG on the GPU, libjpeg-turbo on the CPU
            # each file's H, W, C from its header (on the CPU, no decode): the decoder would turn a greyscale file
            # into RGB, and a file of another size into a batch of mixed shapes, so the epoch checks these first
            shapes = fn.peek_image_shape(images, image_type=types.ANY_DATA)
            images = fn.decoders.image(images, device=decoder, output_type=types.RGB)
        elif device_id is not None:
            images = images.gpu()
        if cut and not folder:  # the shared crop-flip: a window of the image's size that may start outside it
            start, mirror = cut
            images = fn.slice(
                images,
                start=start,
                shape=list(source.shape_hwc[:2]),
                axis_names="HW",
                out_of_bounds_policy="pad",
                fill_values=0,
            )
        if device_id is not None:
            labels = labels.gpu()
        images = fn.crop_mirror_normalize(
            images, dtype=types.FLOAT, output_layout="CHW", mean=mean, std=std, mirror=mirror
        )
        return (images, labels) if shapes is None else (images, labels, shapes)

    return graph()


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
        self.source = source_of(data, augment)
        self.device_id = (device.index or 0) if device.type == "cuda" else None
        self.options = {
            "num_threads": num_threads,
            "prefetch_queue_depth": prefetch_queue_depth,
            "py_num_workers": py_num_workers,
        }
        self.shard = (rank, world_size)
        self._iterator, self._next_epoch = None, None

    def __len__(self) -> int:
        return loads_per_epoch(len(self.source), self.batch_size, self.shard[1])

    def _start(self, first_epoch: int) -> None:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator

        external = LoadSource(self.source, self.batch_size, self.seed, first_epoch, self.shard)
        pipe = _build(external, self.data, self.batch_size, self.device_id, self.options)
        pipe.build()
        names = ["x", "y", "shape"] if isinstance(self.source, JpegSource) else ["x", "y"]
        self._iterator = DALIGenericIterator(pipe, names, auto_reset=True)
        self._next_epoch = first_epoch

    def epoch(self, epoch: int) -> Iterator[Batch]:
        if epoch != self._next_epoch:  # DALI runs epochs in sequence; a jump (resume, a bench round) rebuilds it
            self._start(epoch)
        self._next_epoch = epoch + 1
        expected = torch.tensor(self.source.shape_hwc)  # H, W, C (on the CPU, as DALI's peeked shapes)
        try:
            for outputs in self._iterator:
                if "shape" in outputs[0] and (outputs[0]["shape"] != expected).any():
                    raise ValueError(f"a file in this batch is not {tuple(expected.tolist())} (H, W, C)")
                yield outputs[0]["x"], outputs[0]["y"]
        except Exception:
            self._next_epoch = None  # the iterator is spent: the next epoch rebuilds it
            # DALI names no file: look for the first file that does not decode (only after a failure)
            if isinstance(self.source, JpegSource):
                first_undecodable(self.source.files, self.source.shape_chw)
            raise

    def describe(self) -> dict:
        described = {"pipeline": self.name, "device_id": self.device_id, **self.options}
        described.update(augment=self.source.augment_name, settings=self.settings_chosen_from)
        where = "CPU" if self.device_id is None else "mixed (nvJPEG)"
        if isinstance(self.source, FolderSource):
            described["decoder"] = f"DALI fn.decoders.image_slice (the window only), {where}"
            described.update(resampler="DALI fn.resize, linear, antialias", pixels=self.source.pixels)
        elif self.source.files:
            described["decoder"] = f"DALI fn.decoders.image, {where}"
        return described

    def close(self) -> None:
        self._iterator, self._next_epoch = None, None
