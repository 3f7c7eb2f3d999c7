"""Where a pipeline's training images come from: one of three sources, chosen by what the ImageData holds.

- ArraySource: uint8 HWC arrays in memory (data.train_x). With `augment`, each sample's cut is the CIFAR crop-flip
  (persist/data/augment.py); without, none.
- JpegSource: JPEG storage (data.train_files), every file of train_x's shape: the arrays' cuts, after the decode.
- FolderSource: an image folder (data.image_size set), files of any size (data.train_sizes): every sample is cut by
  its random-resized-crop window (persist/data/resized_crop.py) to S x S, and flipped or not.

A source answers what every pipeline asks alike: how many samples and their labels, the cuts of one load (drawn from
the seed, epoch and load, never from the pipeline that applies them), what each sample's cut sends to a worker, and
one sample read and cut on the CPU (the per-sample loaders). A pipeline that cuts whole batches (on the device, in
DALI's graph) does so its own way for the source's kind of cut: a CropFlip or Windows.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.transforms import v2

from persist.data.augment import PAD, CropFlip, crop_flip_params
from persist.data.base import ImageData
from persist.data.imagefolder import decode_rgb
from persist.data.integrity import decode_one
from persist.data.resized_crop import Windows, resized_crop_one, rrc_windows

Cuts = CropFlip | Windows | None


def crop_flip_one(image: torch.Tensor, top: int, left: int, flip: bool) -> torch.Tensor:
    """One CHW image: pad with zeros, crop back to its size at (top, left), flip if told (persist/data/augment.py)."""
    height, width = image.shape[-2:]
    image = v2.functional.crop(v2.functional.pad(image, [PAD], fill=0), top, left, height, width)
    return v2.functional.horizontal_flip(image) if flip else image


class Source:
    """What every source has: the labels, the files (none for arrays), the shape of one sample as the pipeline hands
    it on, and one sample read and cut on the CPU. Its subclasses say how a sample is read and cut."""

    kind = ""  # for messages and describe()

    def __init__(self, data: ImageData, augment: bool):
        self.labels, self.augment = data.train_y, augment
        self.shape_hwc = tuple(data.train_x.shape[1:])  # H, W, C of every image as a pipeline yields it
        self.files: tuple[str, ...] = ()

    @property
    def shape_chw(self) -> tuple[int, int, int]:
        height, width, channels = self.shape_hwc
        return channels, height, width

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, index: int, row: tuple = ()) -> torch.Tensor:
        """One sample read and cut on the CPU, uint8 CHW; `row` is its cut from rows(), empty for none."""
        image = self.read(index)
        return self.cut_one(image, row) if row else image

    def encoded(self, index: torch.Tensor) -> list[np.ndarray]:
        """The files' bytes of samples `index`, for a decoder that reads them itself (DALI)."""
        return [np.fromfile(self.files[i], dtype=np.uint8) for i in index.tolist()]


class ArraySource(Source):
    """uint8 HWC images in memory; with `augment`, each load's crop-flip (use 1, augment.py)."""

    kind = "arrays"

    def __init__(self, data: ImageData, augment: bool = False):
        super().__init__(data, augment)
        self.images = data.train_x

    @property
    def augment_name(self) -> str:
        """What the pipeline does to each sample, for describe()."""
        return "crop-flip" if self.augment else "none"

    def cuts(
        self, index: torch.Tensor, seed: int, epoch: int, load: int, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> Cuts:
        """The cuts of this rank's samples `index` (on the CPU) of load `load` of `epoch`: a CropFlip, or None."""
        if not self.augment:
            return None
        return crop_flip_params(seed, epoch, load, 1, batch_size, rank, world_size)

    def rows(self, cuts: CropFlip) -> list[tuple]:
        """Each sample's cut as Python values, (top, left, flip): what a worker process is sent."""
        return list(zip(cuts.top.tolist(), cuts.left.tolist(), cuts.flip.tolist(), strict=True))

    def read(self, index: int) -> torch.Tensor:
        return self.images[index].permute(2, 0, 1).contiguous()

    def cut_one(self, image: torch.Tensor, row: tuple) -> torch.Tensor:
        return crop_flip_one(image, *row)


class JpegSource(ArraySource):
    """JPEG storage: one file per sample, each of the arrays' shape, decoded by whichever pipeline reads it."""

    kind = "JPEG storage"

    def __init__(self, data: ImageData, augment: bool = False):
        super().__init__(data, augment)
        self.files = data.train_files

    def read(self, index: int) -> torch.Tensor:
        return decode_one(self.files[index], self.shape_chw)  # libjpeg-turbo, CHW already


class FolderSource(Source):
    """An image folder: files of any size, each sample cut by its random-resized-crop window to S x S and flipped or
    not. The window is the folder's training preprocessing, so it is always on (config refuses crop-flip with it).

    `root` is the folder (absolute) and `files` the run's selected training files in it, in sample order (a
    --train-size subset, as the manifest's image_folder.train_files_sha256 records): a plug-in that reads the folder
    itself reads these, `source_of(data).files`, never a listing of its own."""

    kind = "image folder"
    pixels = "resampled per pipeline: close to the other pipelines' pixels, not bit-identical"

    def __init__(self, data: ImageData):
        super().__init__(data, augment=True)
        self.files, self.image_size, self.root = data.train_files, data.image_size, data.train_root
        self.sizes = torch.tensor(data.train_sizes, dtype=torch.int64)  # each file's (H, W), on the CPU

    @property
    def augment_name(self) -> str:
        return f"random-resized-crop {self.image_size} + flip"

    def cuts(
        self, index: torch.Tensor, seed: int, epoch: int, load: int, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> Windows:
        return rrc_windows(self.sizes[index], seed, epoch, load, batch_size, rank, world_size)

    def rows(self, cuts: Windows) -> list[tuple]:
        """(top, left, height, width, flip) per sample."""
        return cuts.rows()

    def read(self, index: int) -> torch.Tensor:
        return decode_rgb(self.files[index])  # any format and mode, to RGB

    def cut_one(self, image: torch.Tensor, row: tuple) -> torch.Tensor:
        return resized_crop_one(image, row, self.image_size)


def source_of(data: ImageData, augment: bool = False) -> Source:
    """The source `data` holds: an image folder (image_size set), JPEG storage (train_files), or arrays."""
    if data.image_size is not None:
        return FolderSource(data)
    return JpegSource(data, augment) if data.train_files else ArraySource(data, augment)
