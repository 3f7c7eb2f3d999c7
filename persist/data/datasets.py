"""Datasets as uint8 HWC tensors: `synthetic` (offline default), `cifar10` (the standard folder) and `digits`.

`synthetic` is CIFAR-like in size and difficulty: each class has a few smooth colour patterns, and each image is
one of them, shifted, maybe flipped, at a random contrast, over a smooth random background, under pixel noise. Its
pixel mean and std are close to CIFAR-10's, and a linear probe on raw pixels scores about 35% (CIFAR-10: about 40%).
The images are fixed, like CIFAR's (`SYNTHETIC_SEED`); the run seed changes initialization and order only. `digits`
is scikit-learn's 8x8 handwritten digits (real images that ship inside the package), upscaled to 32x32x3.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from persist.config import RunConfig
from persist.data.base import ImageData, channel_stats
from persist.errors import ConfigError, DataError, PluginError
from persist.registry import DATASETS

SYNTHETIC_SEED = 20181203  # the data are fixed, like CIFAR's; the run seed varies init and order, not the images
SYNTHETIC_SIZES = (50_000, 10_000)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_FOLDER = "cifar-10-batches-py"


def load_dataset(config: RunConfig, on_progress=None) -> ImageData:
    """The dataset named by `config`, cut to `train_size`/`test_size` (the first samples of each split). With
    `storage="jpeg"` it is written as JPEG files under the data root on first use (`on_progress(done, total)` follows
    the writing) and read back from them."""
    if config.storage_dir is not None:  # a prepared folder: its index names the data, no raw dataset is needed
        from persist.data.storage import load_encoded

        return check_stored(load_encoded(Path(config.storage_dir)), config).normalized(config.normalization)
    data = raw_dataset(config)
    if config.storage == "jpeg":
        from persist.data.storage import load_encoded, prepare_default

        folder, written = prepare_default(data, config.data_root, config.jpeg_quality, on_progress)
        if written:  # say where the default folder went: it can be large, and is reused by later runs
            print(f"persist: wrote {data.name} as JPEG files to {folder} (reused by later runs)", file=sys.stderr)
        data = load_encoded(folder)
    return data.normalized(config.normalization)


def check_stored(data: ImageData, config: RunConfig) -> ImageData:
    """A --storage-dir folder must hold what the run asks for: its dataset, its sizes (when given) and quality."""
    wanted = {"dataset": config.dataset, "train_size": config.train_size, "test_size": config.test_size}
    found = {"dataset": data.name, "train_size": len(data.train_y), "test_size": len(data.test_y)}
    found_quality = int(data.storage.removeprefix("jpeg q"))
    for name, value in [*wanted.items(), ("jpeg_quality", config.jpeg_quality)]:
        held = found_quality if name == "jpeg_quality" else found[name]
        if value is not None and value != held:
            raise DataError(
                f"--storage-dir {config.storage_dir} holds {data.name}, {found['train_size']} + {found['test_size']} "
                f"images at JPEG q{found_quality}, not {name}={value!r}: pass --{name.replace('_', '-')} {held}, "
                "or prepare a folder for this run with persist prepare --out"
            )
    return data


def raw_dataset(config: RunConfig) -> ImageData:
    """The dataset as uint8 arrays, before any storage format: what `persist prepare` encodes. Any registered
    dataset (registries.DATASETS), a plug-in included, is cut to the config's sizes here."""
    loader = DATASETS.get(config.dataset)
    # an image folder is cut to --image-size by every pipeline, and may leave undecodable files out
    folder = {"image_size": config.image_size, "skip_bad_files": config.skip_bad_files}
    data = loader(
        data_root=config.data_root,
        download=config.download,
        train_size=config.train_size,
        test_size=config.test_size,
        **(folder if config.dataset == "imagefolder" else {}),
    )
    if not isinstance(data, ImageData):
        raise PluginError(f"--dataset {config.dataset}: returned a {type(data).__name__}, expected an ImageData")
    return subset(data, config.train_size, config.test_size)


def prepare_storage(config: RunConfig, on_progress=None):
    """Write the dataset that `config` names to the folder its `--storage jpeg` reads, if it is not there yet."""
    from persist.data.storage import prepare_default

    return prepare_default(raw_dataset(config), config.data_root, config.jpeg_quality, on_progress)


def synthetic_dataset(*, train_size=None, test_size=None, **_) -> ImageData:
    """The offline default: generated at exactly the sizes asked (cutting a larger draw would give other images)."""
    return synthetic(train_size or SYNTHETIC_SIZES[0], test_size or SYNTHETIC_SIZES[1])


def cifar10_dataset(*, data_root=None, download=False, **_) -> ImageData:
    return cifar10(data_root or "data", download)


def digits_dataset(**_) -> ImageData:
    return digits()


def subset(data: ImageData, train_size: int | None, test_size: int | None) -> ImageData:
    if (train_size or len(data.train_y)) == len(data.train_y) and (test_size or len(data.test_y)) == len(data.test_y):
        return data
    for name, limit, have in (
        ("train_size", train_size, len(data.train_y)),
        ("test_size", test_size, len(data.test_y)),
    ):
        if limit is not None and limit > have:
            raise ConfigError(f"{name}={limit} is not allowed: {data.name} has {have} samples in that split")
    return ImageData(
        data.name,
        data.train_x[:train_size],
        data.train_y[:train_size],
        data.test_x[:test_size],
        data.test_y[:test_size],
        data.channel_mean,
        data.channel_std,
        normalization=data.normalization,
    )


# The synthetic generator's knobs, in 0..255 pixel units. They set its difficulty: a linear classifier on raw pixels
# reaches about 35% (CIFAR-10: about 40%), while the reduced AlexNet learns it well past that.
SYNTHETIC_MODES = 4  # distinct looks per class, like CIFAR's many cars and birds
SYNTHETIC_SIGNAL = 100.0  # amplitude of the class pattern (scaled per image by 0.5..1.5)
SYNTHETIC_CLUTTER = 30.0  # amplitude of a smooth random background, different in every image
SYNTHETIC_NOISE = 20.0  # per-pixel Gaussian noise
SYNTHETIC_SHIFT = 6  # the pattern moves by up to this many pixels (circularly), and flips left-right at random


def synthetic(train_size: int, test_size: int, seed: int = SYNTHETIC_SEED) -> ImageData:
    generator = torch.Generator().manual_seed(seed)
    # Per class, SYNTHETIC_MODES smooth patterns: random 6x6 colours, upsampled, so the signal is spatial structure.
    prototypes = _smooth_fields(10 * SYNTHETIC_MODES, 6, generator).view(10, SYNTHETIC_MODES, 3, 32, 32)
    train_x, train_y = _synthetic_split(prototypes, train_size, generator)
    test_x, test_y = _synthetic_split(prototypes, test_size, generator)
    mean, std = channel_stats(train_x)
    return ImageData("synthetic", train_x, train_y, test_x, test_y, mean, std)


def _smooth_fields(n: int, cells: int, generator: torch.Generator) -> torch.Tensor:
    """n smooth colour fields in about [-1, 1]: random cells x cells colours, upsampled to 32 x 32."""
    coarse = torch.rand(n, 3, cells, cells, generator=generator) * 2 - 1
    return F.interpolate(coarse, size=32, mode="bicubic", align_corners=False)


def _synthetic_split(prototypes: torch.Tensor, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image: one of its class's patterns, shifted, maybe flipped, at a random contrast, over a smooth random
    background, with a random brightness and pixel noise."""
    labels = torch.randint(0, 10, (n,), generator=generator)
    images = torch.empty(n, 32, 32, 3, dtype=torch.uint8)
    grid = torch.arange(32)
    for start in range(0, n, 8192):  # chunks keep the float intermediates small at 50k images
        y = labels[start : start + 8192]
        b = len(y)
        pattern = prototypes[y, torch.randint(0, SYNTHETIC_MODES, (b,), generator=generator)]
        dy, dx = torch.randint(-SYNTHETIC_SHIFT, SYNTHETIC_SHIFT + 1, (2, b, 1), generator=generator)
        rows, cols = (grid - dy) % 32, (grid - dx) % 32  # (b, 32) each: a circular shift per image
        pattern = pattern[torch.arange(b)[:, None, None, None], torch.arange(3)[:, None, None], rows[:, None, :, None],
                          cols[:, None, None, :]]  # fmt: skip
        flip = torch.rand(b, generator=generator) < 0.5
        pattern[flip] = pattern[flip].flip(-1)
        contrast = SYNTHETIC_SIGNAL * (0.5 + torch.rand(b, 1, 1, 1, generator=generator))
        background = SYNTHETIC_CLUTTER * _smooth_fields(b, 4, generator)
        brightness = 25 * torch.randn(b, 1, 1, 1, generator=generator)
        noise = SYNTHETIC_NOISE * torch.randn(b, 3, 32, 32, generator=generator)
        pixels = 120 + contrast * pattern + background + brightness + noise
        images[start : start + 8192] = pixels.clamp_(0, 255).round_().to(torch.uint8).permute(0, 2, 3, 1)
    return images, labels


def cifar10(root: str, download: bool = False) -> ImageData:
    folder = Path(root) / CIFAR10_FOLDER
    if not folder.is_dir():
        if not download:
            raise DataError(
                f"no CIFAR-10 at {folder}: pass --download (needs a network) "
                f"or --data-root DIR with DIR/{CIFAR10_FOLDER}"
            )
        _download_cifar10(root)
    train = [_read_cifar_batch(folder / f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = _read_cifar_batch(folder / "test_batch")
    train_x = torch.cat([x for x, _ in train])
    train_y = torch.cat([y for _, y in train])
    return ImageData("cifar10", train_x, train_y, test_x, test_y, CIFAR10_MEAN, CIFAR10_STD)


def _download_cifar10(root: str) -> None:
    from torchvision.datasets import CIFAR10  # fetches and checks the archive's md5, then unpacks cifar-10-batches-py

    try:
        CIFAR10(root, train=True, download=True)
    except Exception as error:  # any network or archive failure becomes one line for the user
        raise DataError(f"could not download CIFAR-10 into {root}: {error}") from error


def _read_cifar_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """One pickled CIFAR-10 batch: b'data' (n, 3072) uint8 in CHW order, b'labels' (n,) ints in 0..9."""
    if not path.is_file():
        raise DataError(f"CIFAR-10 batch file {path} is missing: the folder is incomplete")
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
        images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    except Exception as error:  # unpickling garbage raises anything from EOFError to UnpicklingError
        raise DataError(f"CIFAR-10 batch file {path} is corrupt: {type(error).__name__}: {error}") from error
    if len(labels) != len(images) or labels.min() < 0 or labels.max() > 9:
        raise DataError(f"CIFAR-10 batch file {path} is corrupt: {len(images)} images, {len(labels)} labels")
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)


def digits(test_fraction: float = 0.2) -> ImageData:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise DataError("dataset digits needs scikit-learn: pip install scikit-learn") from error
    bunch = load_digits()
    # 8x8 grey levels 0..16 -> 32x32 (each pixel a 4x4 block), 0..255, three equal channels
    grey = torch.from_numpy(bunch.images).mul(255 / 16).round().to(torch.uint8)
    images = grey.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2).unsqueeze(-1).expand(-1, -1, -1, 3)
    labels = torch.from_numpy(bunch.target).to(torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    n_test = int(len(labels) * test_fraction)
    train, test = order[n_test:], order[:n_test]
    train_x = images[train].contiguous()
    mean, std = channel_stats(train_x)
    return ImageData("digits", train_x, labels[train], images[test].contiguous(), labels[test], mean, std)
