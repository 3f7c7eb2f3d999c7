"""Encoded storage: a dataset written once as JPEG files, so that loading costs what real input costs (read, decode).

`persist prepare` (or `--storage jpeg` on first use) writes DIR/train/<class>/<index>.jpg and DIR/test/..., and
DIR/index.json: the dataset, a fingerprint of its pixels and labels, the quality, the image shape, and every sample's
file, label, size and SHA-256 in sample order, sealed by a hash of the index itself (integrity.py checks them before
every read). A rerun that finds the same dataset, intact, reuses it; a folder that holds anything else is refused. The
files are written under DIR.partial and renamed when complete. An interrupted run (an error, Ctrl-C, SIGTERM) removes
DIR.partial on its way out; only a hard kill (SIGKILL, power loss) leaves it, and the next run removes it.

Reading back gives an ImageData whose pixels are the files decoded once on the CPU (libjpeg-turbo, through
torchvision), for the test set and the channel statistics, and whose `train_files` let each pipeline read and decode
the training images itself, as its users do.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torchvision.io import decode_jpeg, encode_jpeg, read_file

from persist.data.base import ImageData, channel_stats
from persist.data.integrity import (
    FORMAT_VERSION,
    INDEX,
    DecodeError,
    StorageError,
    decode_one,
    read_index,
    row,
    sealed,
    verify,
)
from persist.errors import ConfigError

__all__ = ["INDEX", "DecodeError", "StorageError", "decode_files", "load_encoded", "prepare", "read_index", "verify"]


def fingerprint(data: ImageData) -> str:
    """A short hash of every pixel and label of both splits: two datasets with the same one are the same data."""
    digest = hashlib.sha256()
    for tensor in (data.train_x, data.train_y, data.test_x, data.test_y):
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def describe(data: ImageData, quality: int, source: str | None = None) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "dataset": data.name,
        "source": source or fingerprint(data),
        "format": "jpeg",
        "quality": quality,
        "train_size": len(data.train_y),
        "test_size": len(data.test_y),
        "image_shape": list(data.train_x.shape[1:]),  # H, W, C
    }


def storage_folder(data_root: str | None, data: ImageData, quality: int, source: str | None = None) -> Path:
    """Where `--storage jpeg` keeps a dataset by default: one folder per dataset, sizes, content and quality."""
    name = f"{data.name}-{len(data.train_y)}-{len(data.test_y)}-{source or fingerprint(data)}-q{quality}"
    return Path(data_root or "data") / "persist-jpeg" / name


def prepare_default(
    data: ImageData, data_root: str | None, quality: int, on_progress: Callable[[int, int], None] | None = None
) -> tuple[Path, bool]:
    """prepare() into storage_folder(), hashing the dataset once for both."""
    source = fingerprint(data)
    return prepare(data, storage_folder(data_root, data, quality, source), quality, on_progress, source)


def prepare(
    data: ImageData,
    out: Path,
    quality: int,
    on_progress: Callable[[int, int], None] | None = None,
    source: str | None = None,
) -> tuple[Path, bool]:
    """Write `data` as JPEG files under `out` (once); return the folder and whether it was written just now.
    `source`: the dataset's fingerprint, when the caller already has it."""
    if not 1 <= quality <= 100 or isinstance(quality, bool):
        raise ConfigError(f"quality={quality!r} is not allowed: use an integer from 1 to 100")
    out, wanted = Path(out), describe(data, quality, source)
    if (out / INDEX).is_file():
        found = verify(out)  # reused only if intact: a damaged folder is refused with how to rebuild it
        if {key: found.get(key) for key in wanted} != wanted:
            raise StorageError(
                f"{out} holds another dataset ({found.get('dataset')}, {found.get('train_size')} + "
                f"{found.get('test_size')} images, quality {found.get('quality')}, source {found.get('source')}): "
                "choose another folder"
            )
        return out, False
    if out.exists() and any(out.iterdir()):
        raise StorageError(f"{out} is not empty and has no {INDEX}: it is not a persist dataset; choose another folder")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)  # what a hard-killed run left
    try:
        splits = _write_files(data, partial, quality, on_progress)
        with open(partial / INDEX, "w") as f:
            json.dump(sealed({**wanted, **splits}), f)
            f.flush()
            os.fsync(f.fileno())
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()  # empty, checked above
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # an error or Ctrl-C leaves nothing behind; gone after the rename
    return out, True


def _write_files(data: ImageData, partial: Path, quality: int, on_progress) -> dict[str, list]:
    total, done, splits = len(data.train_y) + len(data.test_y), 0, {}
    for split, images, labels in (("train", data.train_x, data.train_y), ("test", data.test_x, data.test_y)):
        rows = []
        for i, (image, label) in enumerate(zip(images, labels.tolist(), strict=True)):
            relative = f"{split}/{label}/{i:05d}.jpg"
            content = encode_jpeg(image.permute(2, 0, 1).contiguous(), quality).numpy().tobytes()
            (partial / relative).parent.mkdir(parents=True, exist_ok=True)
            (partial / relative).write_bytes(content)
            rows.append(row(relative, label, content))
            done += 1
            if on_progress is not None and (done % 1000 == 0 or done == total):
                on_progress(done, total)
        splits[split] = rows
    return splits


def read_files(paths) -> list[torch.Tensor]:
    """Each file's bytes as a 1-D uint8 tensor."""
    return [read_file(str(p)) for p in paths]


def decode_files(paths, chw: tuple[int, int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Read and decode JPEG files into one uint8 NCHW tensor on `device`: nvJPEG on CUDA, libjpeg-turbo on the CPU.
    Every image must decode to `chw`; the first that does not is named (DecodeError)."""
    contents = read_files(paths)
    try:
        decoded = decode_jpeg(contents, device=device)
    except RuntimeError:
        decoded = None  # the batched call names no file: find the first bad one below
    if decoded is None or any(tuple(image.shape) != tuple(chw) for image in decoded):
        for path, content in zip(paths, contents, strict=True):
            decode_one(path, chw, content)
        raise DecodeError(f"decoding {len(contents)} files failed as a batch, yet each decodes alone")
    return torch.stack(decoded)


def load_encoded(folder: Path, name: str | None = None) -> ImageData:
    """The dataset stored in `folder`, once its default check passes (integrity.verify), its pixels decoded once on
    the CPU, with the training files' paths, the folder and its index hash."""
    index, folder = verify(folder), Path(folder)
    height, width, channels = index["image_shape"]
    splits = {}
    for split in ("train", "test"):
        files = [str(folder / relative) for relative, *_ in index[split]]
        pixels = decode_files(files, (channels, height, width)).permute(0, 2, 3, 1).contiguous()  # NHWC
        labels = torch.tensor([label for _, label, *_ in index[split]], dtype=torch.int64)
        splits[split] = (pixels, labels, tuple(files))
    mean, std = channel_stats(splits["train"][0])
    data = ImageData(name or index["dataset"], *splits["train"][:2], *splits["test"][:2], mean, std)
    return replace(
        data,
        train_files=splits["train"][2],
        storage=f"jpeg q{index['quality']}",
        storage_folder=str(folder.resolve()),
        storage_index_sha256=index["index_sha256"],
    )
