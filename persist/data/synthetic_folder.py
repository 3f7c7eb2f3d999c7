"""`persist prepare --dataset synthetic-folder`: an offline ImageNet-like folder of JPEGs at varied sizes.

The images come from the synthetic generator's recipe (persist/data/datasets.py) drawn at full resolution: each class
has SYNTHETIC_MODES smooth colour patterns; an image is one of them at a random contrast, maybe flipped, over a smooth
random background, with fine texture and pixel noise, at its own size and aspect ratio. The texture and noise make
the JPEGs cost to decode about what photos of the same size cost (reports/image-folder gives the bytes per image).

Layout, the torchvision ImageFolder convention: DIR/train/<class>/<n>.jpg and DIR/val/<class>/<n>.jpg, plus
DIR/persist-synthetic-folder.json (how it was made). Written under DIR.partial and renamed when complete; a rerun with
the same parameters reuses the folder, anything else in DIR is refused.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.io import encode_jpeg

from persist.data.datasets import SYNTHETIC_CLUTTER, SYNTHETIC_MODES, SYNTHETIC_NOISE, SYNTHETIC_SEED, SYNTHETIC_SIGNAL
from persist.errors import ConfigError

MARKER = "persist-synthetic-folder.json"
TEXTURE = 25.0  # amplitude of fine random detail (cells of about 8 pixels): what photos have and 32x32 images lack
ASPECTS = (3 / 4, 4 / 3)  # width / height, drawn log-uniformly, like ImageNet's landscape and portrait photos


@dataclass(frozen=True)
class FolderSpec:
    train_images: int = 1000
    val_images: int = 200
    classes: int = 10
    min_size: int = 400  # the longer side, in pixels, is drawn uniformly from [min_size, max_size]
    max_size: int = 500  # ImageNet's photos are mostly 500 px on their longer side
    quality: int = 90
    seed: int = SYNTHETIC_SEED

    def __post_init__(self) -> None:
        for name in ("train_images", "classes", "min_size", "quality"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}={value!r} is not allowed: use an integer >= 1")
        if isinstance(self.val_images, bool) or not isinstance(self.val_images, int) or self.val_images < 0:
            raise ConfigError(f"val_images={self.val_images!r} is not allowed: use an integer >= 0")
        if not self.min_size <= self.max_size or self.min_size < 8:
            raise ConfigError(
                f"min_size={self.min_size}, max_size={self.max_size} are not allowed: use 8 <= min-size <= max-size"
            )
        if self.quality > 100:
            raise ConfigError(f"quality={self.quality} is not allowed: use an integer from 1 to 100")


def _prototypes(spec: FolderSpec) -> torch.Tensor:
    """Per class, SYNTHETIC_MODES coarse 6x6 colour grids in [-1, 1], fixed by the seed (upsampled per image)."""
    generator = torch.Generator().manual_seed(spec.seed)
    return torch.rand(spec.classes, SYNTHETIC_MODES, 3, 6, 6, generator=generator) * 2 - 1


def _resampler(cells: int, size: int) -> torch.Tensor:
    """(size, cells): the weights of a smooth (cubic) 1-D upsampling from `cells` values to `size` pixels."""
    eye = torch.eye(cells)[None, :, :, None]  # each coarse value alone, as a (cells x 1) image
    return F.interpolate(eye, size=(size, 1), mode="bicubic", align_corners=False)[0, :, :, 0].T


def _field(coarse: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(3, h, w) coarse values upsampled to (3, height, width): separable, two small matmuls (a 2-D interpolate of a
    full-size image is ten times slower on a CPU, and bicubic is separable)."""
    rows, cols = _resampler(coarse.shape[1], height), _resampler(coarse.shape[2], width)
    return rows @ coarse @ cols.T


def make_image(prototypes: torch.Tensor, label: int, generator: torch.Generator, spec: FolderSpec) -> torch.Tensor:
    """One uint8 CHW image of class `label`, at a size and aspect ratio drawn from `generator`."""
    longer = int(torch.randint(spec.min_size, spec.max_size + 1, (1,), generator=generator))
    log_low, log_high = math.log(ASPECTS[0]), math.log(ASPECTS[1])
    aspect = math.exp(log_low + (log_high - log_low) * float(torch.rand(1, generator=generator)))
    height, width = (longer, round(longer * aspect)) if aspect < 1 else (round(longer / aspect), longer)
    mode = int(torch.randint(0, SYNTHETIC_MODES, (1,), generator=generator))
    pattern = _field(prototypes[label, mode], height, width)
    if float(torch.rand(1, generator=generator)) < 0.5:
        pattern = pattern.flip(-1)
    contrast = SYNTHETIC_SIGNAL * (0.5 + float(torch.rand(1, generator=generator)))
    background = SYNTHETIC_CLUTTER * _field(torch.rand(3, 4, 4, generator=generator) * 2 - 1, height, width)
    cells = (max(2, height // 8), max(2, width // 8))
    texture = TEXTURE * _field(torch.rand(3, *cells, generator=generator) * 2 - 1, height, width)
    brightness = 25 * float(torch.randn(1, generator=generator))
    noise = SYNTHETIC_NOISE * torch.randn(3, height, width, generator=generator)
    pixels = 120 + contrast * pattern + background + texture + brightness + noise
    return pixels.clamp_(0, 255).round_().to(torch.uint8)


def write_synthetic_folder(
    out: Path, spec: FolderSpec, on_progress: Callable[[int, int], None] | None = None
) -> tuple[Path, bool]:
    """Write the folder once; return it and whether it was written just now."""
    out, wanted = Path(out), {"format": "synthetic-folder", **asdict(spec)}
    if (out / MARKER).is_file():
        found = json.loads((out / MARKER).read_text())
        if found != wanted:
            raise ConfigError(f"{out} holds another synthetic folder ({found}): choose another --out")
        return out, False
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty and has no {MARKER}: choose another --out")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # what an interrupted run left
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one image's tensors are small: intra-op threads cost more than they save (15x here)
    try:
        _write_images(partial, spec, _prototypes(spec), on_progress)
    finally:
        torch.set_num_threads(threads)
    (partial / MARKER).write_text(json.dumps(wanted, indent=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()  # empty, checked above
    partial.rename(out)
    return out, True


def _write_images(partial: Path, spec: FolderSpec, prototypes: torch.Tensor, on_progress) -> None:
    total, done = spec.train_images + spec.val_images, 0
    for split_number, (split, count) in enumerate((("train", spec.train_images), ("val", spec.val_images))):
        for i in range(count):
            # one generator per image: any image can be remade alone, and the order of writing does not matter
            generator = torch.Generator().manual_seed((spec.seed * 7 + split_number) * 10_000_019 + i)
            label = i % spec.classes  # balanced: every class has images in both splits once count >= classes
            path = partial / split / f"class{label:03d}" / f"{i:07d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_jpeg(make_image(prototypes, label, generator, spec), spec.quality).numpy())
            done += 1
            if on_progress is not None and (done % 100 == 0 or done == total):
                on_progress(done, total)


def mean_file_bytes(folder: Path) -> float:
    files = list(Path(folder).rglob("*.jpg"))
    return sum(f.stat().st_size for f in files) / max(1, len(files))
