"""Encoded data is what its index says, or nothing trains on it.

index.json records, for every sample, its file, its label, the file's size in bytes and the SHA-256 of its bytes,
and, over all of that, a hash of the index's own content (`index_sha256`). Two checks read it back:

- the default check, before every read (`persist train`, `sweep`, the bench, and `persist prepare` before it reuses
  a folder): the index hash, each label against the folder layout (train/<label>/...), and each file's size (one
  stat per file, no file read);
- the full check, on demand (`persist verify DIR`): the default check, and every file's bytes hashed against the index.

A mismatch is one line naming the first bad file and how to rebuild the folder. An index written before these
fields existed (format_version 1) is refused the same way: rebuild it with persist prepare.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from torchvision.io import decode_jpeg, read_file

from persist.errors import DecodeError, StorageError

INDEX = "index.json"
FORMAT_VERSION = 2  # 2: each row is [file, label, size_bytes, sha256], and the index carries index_sha256


def index_sha256(index: dict) -> str:
    """The hash of everything in the index but the hash itself (canonical JSON: sorted keys, no spaces)."""
    content = {key: value for key, value in index.items() if key != "index_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sealed(index: dict) -> dict:
    return {**index, "index_sha256": index_sha256(index)}


def row(relative: str, label: int, content: bytes) -> list:
    """One sample's index row: its file (relative to the folder), label, size in bytes and the bytes' SHA-256."""
    return [relative, label, len(content), hashlib.sha256(content).hexdigest()]


def rebuild_hint(folder: Path, index: dict | None = None) -> str:
    folder = Path(folder)
    if not index or "dataset" not in index:
        return f"rebuild it: rm -r {folder}, then persist prepare --out {folder} with the dataset's flags"
    flags = f"--dataset {index['dataset']} --train-size {index.get('train_size')} --test-size {index.get('test_size')}"
    return f"rebuild it: rm -r {folder} && persist prepare {flags} --quality {index.get('quality')} --out {folder}"


def read_index(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / INDEX).read_text())
    except (OSError, ValueError) as error:
        raise StorageError(f"{Path(folder) / INDEX} is unreadable ({error}); {rebuild_hint(folder)}") from error


def verify(folder: Path, full: bool = False) -> dict:
    """The folder's index, once the default check (or with `full`, the full check) has passed; else StorageError."""
    folder = Path(folder)
    index = read_index(folder)
    hint = rebuild_hint(folder, index)
    if index.get("format_version", 1) < FORMAT_VERSION or "index_sha256" not in index:
        raise StorageError(f"{folder / INDEX} is from an older persist (no file sizes or hashes): {hint}")
    if index_sha256(index) != index["index_sha256"]:
        raise StorageError(f"{folder / INDEX} was changed after it was written (its content hash differs): {hint}")
    for split in ("train", "test"):
        for relative, label, size, digest in index[split]:
            path = folder / relative
            if Path(relative).parts[:2] != (split, str(label)) or len(Path(relative).parts) != 3:
                raise StorageError(
                    f"{path}: label {label} in {INDEX} does not match the folder layout {split}/<label>/: {hint}"
                )
            try:
                found = os.stat(path).st_size
            except OSError:
                raise StorageError(f"{path} is missing: {hint}") from None
            if found != size:
                raise StorageError(f"{path} has {found} bytes, {INDEX} says {size}: {hint}")
            if full and hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                raise StorageError(f"{path}: its bytes differ from {INDEX} (SHA-256): {hint}")
    return index


def _reason(error: Exception) -> str:
    return str(error).rsplit(", ", 1)[-1].strip()  # torchvision: "decode_jpeg, <source:line>, <reason>"


def decode_one(path: str, chw: tuple[int, int, int], content: torch.Tensor | None = None) -> torch.Tensor:
    """One file decoded (libjpeg-turbo) into a uint8 CHW tensor of shape `chw`; DecodeError naming the file if not."""
    try:
        image = decode_jpeg(read_file(str(path)) if content is None else content)
    except RuntimeError as error:
        raise DecodeError(
            f"{path} cannot be decoded as a JPEG ({_reason(error)}): {rebuild_hint(folder_of(path))}"
        ) from None
    if tuple(image.shape) != tuple(chw):
        raise DecodeError(
            f"{path} decodes to {'x'.join(map(str, image.shape))} (channels x height x width), not the dataset's "
            f"{'x'.join(map(str, chw))}: {rebuild_hint(folder_of(path))}"
        )
    return image


def first_undecodable(paths, chw: tuple[int, int, int]) -> None:
    """Raise DecodeError for the first of `paths` that does not decode to `chw` (a diagnosis after a batch failed)."""
    for path in paths:
        decode_one(path, chw)


def folder_of(path) -> Path:
    return Path(path).parent.parent.parent  # DIR/<split>/<label>/<file>


def one_line(error: DecodeError) -> DecodeError:
    """A DecodeError raised in a DataLoader worker comes back with the worker's traceback in its message; keep the
    last line, which is ours."""
    last = str(error).rstrip().splitlines()[-1] if str(error).strip() else ""
    prefix = f"{DecodeError.__module__}.{DecodeError.__name__}: "
    return DecodeError(last.removeprefix(prefix))
