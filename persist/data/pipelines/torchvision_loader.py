"""The standard path: a map-style Dataset with per-sample torchvision.transforms.v2 in a DataLoader.

The DataLoader does not shuffle: its batch sampler replays the shared per-epoch order, so this pipeline feeds exactly
the batches the preloaded one does, only slower.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from persist.data.augment import PAD, crop_flip_params
from persist.data.base import Batch, ImageData, Normalizer, batch_indices, epoch_order, loads_per_epoch
from persist.data.integrity import decode_one, one_line
from persist.errors import DecodeError


def crop_flip_one(image: torch.Tensor, top: int, left: int, flip: bool) -> torch.Tensor:
    """One CHW image: pad with zeros, crop back to its size at (top, left), flip if told (persist/data/augment.py)."""
    height, width = image.shape[-2:]
    image = v2.functional.crop(v2.functional.pad(image, [PAD], fill=0), top, left, height, width)
    return v2.functional.horizontal_flip(image) if flip else image


class ArrayDataset(Dataset):
    """uint8 HWC images with per-sample v2 transforms: ToImage (HWC -> CHW), or with encoded storage the sample's file
    read and decoded, then the sample's crop-flip if the batch sampler sent its parameters along with its index, then
    the shared Normalizer.

    v2.ToDtype(scale=True) + v2.Normalize would give the same values up to float rounding (x/255, then (x - m)/s);
    the shared Normalizer's two operations make this pipeline's batches bit-identical to the other two."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, data: ImageData):
        self.images, self.labels, self.files = images.numpy(), labels, data.train_files
        height, width, channels = images.shape[1:]
        self.chw = (channels, height, width)  # what every file must decode to
        self.normalizer = Normalizer(data)
        self.to_image, self.normalize = v2.ToImage(), v2.Lambda(self.normalizer, tv_tensors.Image)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: int | tuple[int, int, int, bool]) -> tuple[torch.Tensor, torch.Tensor]:
        index, *crop = item if isinstance(item, tuple) else (item,)
        if self.files:  # encoded storage: read and decode in the worker (libjpeg-turbo), then plain tensor ops
            image = decode_one(self.files[index], self.chw)  # CHW already: no tv_tensor wrapping to pay for
            image = crop_flip_one(image, *crop) if crop else image
            return self.normalizer(image), self.labels[index]
        image = self.to_image(self.images[index])
        if crop:
            image = crop_flip_one(image, *crop)
        return self.normalize(image).as_subclass(torch.Tensor), self.labels[index]


class EpochBatchSampler(Sampler[list[int]]):
    """Yields the index lists of one epoch from the shared order; `set_epoch` picks the epoch. With `augment`, each
    item is (index, top, left, flip): the sample's crop-flip parameters travel with it to the worker."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, augment: bool = False):
        self.n, self.batch_size, self.seed, self.current_epoch = n, batch_size, seed, 0
        self.rank, self.world_size, self.augment = rank, world_size, augment

    def set_epoch(self, epoch: int) -> None:
        self.current_epoch = epoch

    def __len__(self) -> int:
        return loads_per_epoch(self.n, self.batch_size, self.world_size)

    def __iter__(self) -> Iterator[list]:
        order = epoch_order(self.n, self.seed, self.current_epoch)
        for load, index in enumerate(batch_indices(order, self.batch_size, self.rank, self.world_size)):
            yield self.items(load, index)

    def items(self, load: int, index: torch.Tensor) -> list:
        """What each sample of one load carries to its worker: its index and, with `augment`, its crop-flip."""
        if not self.augment:
            return index.tolist()
        p = crop_flip_params(self.seed, self.current_epoch, load, 1, self.batch_size, self.rank, self.world_size)
        return list(zip(index.tolist(), p.top.tolist(), p.left.tolist(), p.flip.tolist(), strict=True))


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
        self.device = device
        self.pin_memory = device.type == "cuda" if pin_memory is None else pin_memory
        self.sampler = EpochBatchSampler(len(data.train_y), batch_size, seed, rank, world_size, augment)
        self.options = {
            "num_workers": num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": persistent_workers,
            "prefetch_factor": prefetch_factor,
        }
        self.loader = DataLoader(
            ArrayDataset(data.train_x, data.train_y, data), batch_sampler=self.sampler, **self.options
        )

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
        augment = "crop-flip" if self.sampler.augment else "none"
        described = {"pipeline": self.name, **self.options, "augment": augment, "settings": self.settings_chosen_from}
        if self.loader.dataset.files:
            described["decoder"] = "libjpeg-turbo (torchvision.io, per sample in the loader)"
        return described

    def close(self) -> None:
        # Shut persistent workers down now rather than at interpreter exit.
        iterator = getattr(self.loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
