"""The standard path: a map-style Dataset read and cut per sample (torchvision.transforms.v2 functionals) in a
DataLoader, from any source (sources.py): arrays, JPEG storage decoded in the worker, or an image folder's files cut
to their windows (`v2.functional.resized_crop`, bilinear, antialiased).

The DataLoader does not shuffle: its batch sampler replays the shared per-epoch order, and sends each sample's cut
(crop-flip parameters or window) along with its index, so this pipeline feeds exactly the batches the preloaded one
does on arrays and JPEG storage, only slower.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from persist.data.base import Batch, ImageData, Normalizer, batch_indices, epoch_order, loads_per_epoch
from persist.data.integrity import one_line
from persist.data.pipelines.sources import FolderSource, Source, source_of
from persist.errors import DecodeError

DECODERS = {  # by source kind, for describe()
    "JPEG storage": "libjpeg-turbo (torchvision.io, per sample in the loader)",
    "image folder": "torchvision.io.decode_image (libjpeg-turbo, libpng), per sample in the loader",
}


class SourceDataset(Dataset):
    """Item index, or (index, *cut) with a cut from the source's rows() -> the sample read and cut by its source
    (uint8 CHW), then the shared Normalizer.

    v2.ToDtype(scale=True) + v2.Normalize would give the same values up to float rounding (x/255, then (x - m)/s);
    the shared Normalizer's two operations make this pipeline's batches bit-identical to the other two."""

    def __init__(self, source: Source, data: ImageData):
        self.source, self.labels, self.normalizer = source, source.labels, Normalizer(data)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: int | tuple) -> tuple[torch.Tensor, torch.Tensor]:
        index, *row = item if isinstance(item, tuple) else (item,)
        return self.normalizer(self.source.sample(index, tuple(row))), self.labels[index]


class EpochBatchSampler(Sampler[list]):
    """Yields the index lists of one epoch from the shared order; `set_epoch` picks the epoch. Where the source cuts
    its samples, each item is (index, *cut): the sample's cut travels with it to the worker."""

    def __init__(self, source: Source, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.source, self.batch_size, self.seed, self.current_epoch = source, batch_size, seed, 0
        self.rank, self.world_size = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.current_epoch = epoch

    def __len__(self) -> int:
        return loads_per_epoch(len(self.source), self.batch_size, self.world_size)

    def __iter__(self) -> Iterator[list]:
        order = epoch_order(len(self.source), self.seed, self.current_epoch)
        for load, index in enumerate(batch_indices(order, self.batch_size, self.rank, self.world_size)):
            yield self.items(load, index)

    def items(self, load: int, index: torch.Tensor) -> list:
        """What each sample of one load carries to its worker: its index and, where the source cuts it, its cut."""
        shard = (self.batch_size, self.rank, self.world_size)
        cuts = self.source.cuts(index, self.seed, self.current_epoch, load, *shard)
        if cuts is None:
            return index.tolist()
        return [(i, *row) for i, row in zip(index.tolist(), self.source.rows(cuts), strict=True)]


class TorchvisionPipeline:
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
        self.settings_chosen_from = settings_chosen_from
        self.device, self.source = device, source_of(data, augment)
        self.pin_memory = device.type == "cuda" if pin_memory is None else pin_memory
        self.sampler = EpochBatchSampler(self.source, batch_size, seed, rank, world_size)
        self.options = {
            "num_workers": num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": persistent_workers,
            "prefetch_factor": prefetch_factor,
        }
        self.loader = DataLoader(SourceDataset(self.source, data), batch_sampler=self.sampler, **self.options)

    def __len__(self) -> int:
        return len(self.sampler)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        self.sampler.set_epoch(epoch)
        try:
            for x, y in self.loader:
                # non_blocking only overlaps when the host tensor is pinned; otherwise it is an ordinary copy
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        except DecodeError as error:  # from a worker it carries the worker's traceback: one line, naming the file
            raise one_line(error) from None

    def describe(self) -> dict:
        described = {"pipeline": self.name, **self.options, "augment": self.source.augment_name}
        described["settings"] = self.settings_chosen_from
        if self.source.kind in DECODERS:
            described["decoder"] = DECODERS[self.source.kind]
        if isinstance(self.source, FolderSource):
            described.update(resampler="v2.functional.resized_crop, bilinear, antialias", pixels=self.source.pixels)
        return described

    def close(self) -> None:
        # Shut persistent workers down now rather than at interpreter exit.
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
