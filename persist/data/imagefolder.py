"""`--dataset imagefolder --data-root DIR`: the torchvision ImageFolder convention, images at any size and mode.

DIR/train/<class>/<file> for training and DIR/val/<class>/<file> (or DIR/test/) for evaluation; classes are the
sorted folder names under train/. Files ending in .jpg, .jpeg, .png (any case) count; anything else is ignored.

The folder is scanned once, and what the scan learned is cached in an index with a fingerprint of the file list
(every path, size and modification time): a changed folder is noticed and scanned again. The scan **decodes every
file in full** (torchvision.io.decode_image, mode RGB: grayscale, RGB, CMYK JPEGs and PNGs with alpha or a palette
all come out 3-channel RGB), because a header check passes a truncated JPEG that then fails mid-epoch. On a
2-core CPU that was about 43 images of 400-500 px per second; it runs once per folder version, and the index
keeps each file's (H, W) (the crop windows need them) and the training split's channel statistics. A file that
cannot be decoded is named in one line before training starts; `--skip-bad-files` leaves such files out instead,
and the manifest lists them.

The index lives in DIR/.persist-index.json, or, when DIR is not writable, under $XDG_CACHE_HOME/persist (default
~/.cache/persist), named by DIR's absolute path.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_image, read_file

from persist.data.base import ImageData
from persist.data.resized_crop import eval_transform
from persist.errors import ConfigError, FolderError

INDEX_NAME = ".persist-index.json"
INDEX_VERSION = 1
EXTENSIONS = (".jpg", ".jpeg", ".png")
EVAL_SPLITS = ("val", "test")
SUBSET_SEED = 0  # --train-size/--test-size: a fixed random subset (the first N files would be one class)


def decode_rgb(path: str) -> torch.Tensor:
    """Any JPEG or PNG as uint8 (3, H, W) RGB: grayscale is repeated, alpha dropped, a palette expanded."""
    return decode_image(read_file(path), mode=ImageReadMode.RGB)


def _list_split(root: Path, split: str, classes: list[str]) -> list[tuple[str, int]]:
    files = []
    for label, name in enumerate(classes):
        folder = root / split / name
        if folder.is_dir():
            files += [
                (str(p.relative_to(root)), label)
                for p in sorted(folder.iterdir())
                if p.is_file() and p.suffix.lower() in EXTENSIONS
            ]
    return files


def scan(root: Path) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """The classes and each split's (relative path, label), in sorted order."""
    if not (root / "train").is_dir():
        raise FolderError(f"{root} has no train/ folder: an image folder is DIR/train/<class>/<file> and DIR/val/...")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise FolderError(f"{root / 'train'} has no class folders: expected DIR/train/<class>/<file>")
    eval_split = next((s for s in EVAL_SPLITS if (root / s).is_dir()), None)
    if eval_split is None:
        raise FolderError(f"{root} has no val/ or test/ folder: evaluation needs DIR/val/<class>/<file>")
    unknown = sorted(p.name for p in (root / eval_split).iterdir() if p.is_dir() and p.name not in classes)
    if unknown:
        raise FolderError(f"{root / eval_split / unknown[0]} is a class that train/ does not have")
    splits = {"train": _list_split(root, "train", classes), "test": _list_split(root, eval_split, classes)}
    for split, files in splits.items():
        if not files:
            raise FolderError(f"{root} has no .jpg/.jpeg/.png files in its {split} split")
    return classes, splits


def fingerprint(root: Path, splits: dict) -> str:
    """A hash of every file's path, size and modification time: any added, removed or rewritten file changes it."""
    digest = hashlib.sha256()
    for split in ("train", "test"):
        for relative, label in splits[split]:
            stat = (root / relative).stat()
            digest.update(f"{split}\0{relative}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def index_path(root: Path) -> Path:
    if os.access(root, os.W_OK):
        return root / INDEX_NAME
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "persist"
    return cache / (hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16] + INDEX_NAME)


def _check(root: Path, relative: str) -> tuple[int, int, list[float]] | str:
    """(H, W, per-channel sum, sum of squares on the 0..1 scale), or why the file cannot be decoded."""
    try:
        image = decode_rgb(str(root / relative))
    except Exception as error:  # torchvision raises RuntimeError for a corrupt file, others for odd ones
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'cannot decode'}"
    pixels = image.reshape(3, -1).to(torch.float64) / 255
    return image.shape[1], image.shape[2], [*pixels.sum(1).tolist(), *(pixels * pixels).sum(1).tolist()]


def build_index(root: Path) -> dict:
    """Scan and decode every file once (threads: the decoder releases the GIL); what load_folder needs."""
    classes, splits = scan(root)
    index = {"version": INDEX_VERSION, "fingerprint": fingerprint(root, splits), "classes": classes, "bad": []}
    totals, count = [0.0] * 6, 0
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for split, files in splits.items():
            rows = []
            for (relative, label), checked in zip(files, pool.map(lambda f: _check(root, f[0]), files), strict=True):
                if isinstance(checked, str):
                    index["bad"].append([relative, checked])
                    continue
                height, width, sums = checked
                rows.append([relative, label, height, width])
                if split == "train":
                    totals = [a + b for a, b in zip(totals, sums, strict=True)]
                    count += height * width
            index[split] = rows
    mean = [t / max(1, count) for t in totals[:3]]
    index["channel_mean"] = mean
    index["channel_std"] = [max(0.0, t / max(1, count) - m * m) ** 0.5 for t, m in zip(totals[3:], mean, strict=True)]
    return index


def cached_index(root: Path) -> dict:
    """The folder's index: read back when its fingerprint still matches the folder, built (and saved) otherwise."""
    path = index_path(root)
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        index = None
    if index is not None and index.get("version") == INDEX_VERSION:
        _, splits = scan(root)
        if index.get("fingerprint") == fingerprint(root, splits):
            return index
    index = build_index(root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(index))
        tmp.replace(path)
    except OSError:  # a read-only folder and cache: the scan is simply redone next time
        pass
    return index


def _subset(rows: list, size: int | None, name: str) -> list:
    if size is None or size == len(rows):
        return rows
    if size > len(rows):
        raise ConfigError(f"{name}={size} is not allowed: the folder has {len(rows)} usable images in that split")
    chosen = torch.randperm(len(rows), generator=torch.Generator().manual_seed(SUBSET_SEED))[:size]
    return [rows[i] for i in sorted(chosen.tolist())]


def load_folder(
    root: str | Path,
    image_size: int,
    skip_bad_files: bool = False,
    train_size: int | None = None,
    test_size: int | None = None,
) -> ImageData:
    """The folder as ImageData: training files with their sizes, the evaluation split decoded once to S x S."""
    root = Path(root)
    index = cached_index(root)
    if index["bad"] and not skip_bad_files:
        relative, reason = index["bad"][0]
        more = f" (and {len(index['bad']) - 1} more)" if len(index["bad"]) > 1 else ""
        raise FolderError(
            f"{root / relative} cannot be decoded ({reason}){more}: fix or remove it, or pass --skip-bad-files"
        )
    for split, folder in (("train", "train"), ("test", "val")):
        if not index[split]:  # every file of it was bad, and skipped
            raise FolderError(
                f"{root / folder} has no usable image left ({len(index['bad'])} skipped as undecodable): "
                "fix or replace its files"
            )
    train = _subset(index["train"], train_size, "train_size")
    test = _subset(index["test"], test_size, "test_size")
    test_x = torch.stack([eval_transform(decode_rgb(str(root / r[0])), image_size) for r in test])
    return ImageData(
        "imagefolder",
        torch.empty(0, image_size, image_size, 3, dtype=torch.uint8),
        torch.tensor([r[1] for r in train], dtype=torch.int64),
        test_x.permute(0, 2, 3, 1).contiguous(),
        torch.tensor([r[1] for r in test], dtype=torch.int64),
        tuple(index["channel_mean"]),
        tuple(index["channel_std"]),
        num_classes=len(index["classes"]),
        storage="image folder",
        train_files=tuple(str(root / r[0]) for r in train),
        image_size=image_size,
        train_sizes=tuple((r[2], r[3]) for r in train),
        train_root=str(root.resolve()),
        skipped_files=tuple(str(root / r[0]) for r in index["bad"]),
    )


DEFAULT_IMAGE_SIZE = 224


def imagefolder_dataset(
    *, data_root=None, train_size=None, test_size=None, image_size=None, skip_bad_files=False, **_
) -> ImageData:
    """The registry's loader for --dataset imagefolder (persist.registry.DATASETS)."""
    if data_root is None:
        raise ConfigError("--dataset imagefolder needs --data-root DIR (DIR/train/<class>/<file>, DIR/val/...)")
    if not Path(data_root).is_dir():
        raise FolderError(f"--data-root {data_root} is not a folder")
    return load_folder(data_root, image_size or DEFAULT_IMAGE_SIZE, skip_bad_files, train_size, test_size)


def files_sha256(files) -> str:
    """The sha256 of a list of file paths, one per line, in order."""
    return hashlib.sha256("\n".join(files).encode()).hexdigest()


def describe_folder(data: ImageData) -> dict:
    """What the manifest records about an image folder: sizes, preprocessing, and the files left out."""
    return {
        "image_size": data.image_size,
        "train_files": len(data.train_files),
        "root": data.train_root,
        # the selected training files (a --train-size subset), so a plug-in's own reading can be checked against it
        "train_files_sha256": files_sha256(data.train_files),
        "test_images": len(data.test_y),
        "classes": data.num_classes,
        "train_preprocessing": f"random-resized crop to {data.image_size} (scale 0.08-1, ratio 3/4-4/3) + flip",
        "test_preprocessing": f"resize to {round(data.image_size / 0.875)}, center crop {data.image_size}",
        "skipped_files": list(data.skipped_files),
    }
