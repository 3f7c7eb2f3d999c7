"""Hand-written loops that persist's pipelines are measured against, side by side in the same run.

Each is what a user writes without persist: airbench-style gathers on the device, the pytorch/examples DataLoader loop,
and a DALI loop in the style of DALI's own external-source examples. Each runs one epoch and returns nothing. With
JPEG storage (`data.train_files`) each decodes as its users do: every file once into the device tensor (airbench
style), `read_file` + `decode_jpeg` in a Dataset (the ImageFolder idiom), DALI's own `fn.readers.file` over the class
folders with `fn.decoders.image`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.io import decode_jpeg, read_file

from persist.data.base import ImageData, scaled_stats
from persist.data.pipelines.sources import ArraySource
from persist.data.pipelines.torchvision_loader import SourceDataset


class JpegFolder(torch.utils.data.Dataset):
    """Files read and decoded per sample, then normalized: what a torchvision user writes for JPEG folders."""

    def __init__(self, files, labels, data: ImageData):
        self.files, self.labels = files, labels
        mean, std = scaled_stats(data)
        self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        return (decode_jpeg(read_file(self.files[i])).float() - self.mean) / self.std, self.labels[i]


def preloaded_loop(data: ImageData, batch_size: int, device: torch.device):
    if data.train_files:  # decode every file once, into the device tensor
        images = torch.stack(decode_jpeg([read_file(f) for f in data.train_files], device=device))
    else:
        images = data.train_x.permute(0, 3, 1, 2).contiguous().to(device)
    labels = data.train_y.to(device)
    mean, std = (torch.tensor(v, device=device).view(1, 3, 1, 1) for v in scaled_stats(data))
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None

    def epoch():
        order = torch.randperm(len(labels), device=device)
        for i in range(len(labels) // batch_size):
            index = order[i * batch_size : (i + 1) * batch_size]
            x = images.index_select(0, index).float().sub_(mean).div_(std)
            labels.index_select(0, index)
        sync()
        return x

    return epoch


def dataloader_loop(
    data: ImageData,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool = False,
    prefetch_factor: int | None = None,
):
    dataset = JpegFolder(data.train_files, data.train_y, data) if data.train_files else None
    loader = DataLoader(
        dataset or SourceDataset(ArraySource(data), data),
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers,
        prefetch_factor=prefetch_factor,
    )
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None

    def epoch():
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        sync()

    return epoch


def dali_loop(data: ImageData, batch_size: int, device: torch.device, num_threads: int = 1):
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.plugin.base_iterator import LastBatchPolicy
    from nvidia.dali.plugin.pytorch import DALIGenericIterator

    images, labels = data.train_x.numpy(), data.train_y.numpy()
    mean, std = scaled_stats(data)
    gpu = device.type == "cuda"

    loads, orders = len(labels) // batch_size, {}

    def shuffled_batch(info):  # DALI's batch_info callable: a fresh permutation per epoch
        if info.iteration >= loads:
            raise StopIteration
        order = orders.setdefault(info.epoch_idx, np.random.permutation(len(labels)))
        index = order[info.iteration * batch_size : (info.iteration + 1) * batch_size]
        return images[index], labels[index]

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=(device.index or 0) if gpu else None)
    def pipe():
        if data.train_files:  # DALI's own reader over DIR/train/<class>/*.jpg, then its decoder
            root = str(Path(data.train_files[0]).parent.parent)
            jpegs, y = fn.readers.file(file_root=root, random_shuffle=True, name="reader")
            x = fn.decoders.image(jpegs, device="mixed" if gpu else "cpu", output_type=types.RGB)
            return fn.crop_mirror_normalize(x, dtype=types.FLOAT, output_layout="CHW", mean=mean, std=std), y
        x, y = fn.external_source(
            source=shuffled_batch,
            num_outputs=2,
            batch=True,
            batch_info=True,
            layout=["HWC", ""],
            dtype=[types.UINT8, types.INT64],
        )
        if gpu:
            x, y = x.gpu(), y.gpu()
        return fn.crop_mirror_normalize(x, dtype=types.FLOAT, output_layout="CHW", mean=mean, std=std), y

    p = pipe()
    p.build()
    # the file reader's epoch is its own shard; drop the last partial batch as the other loops do
    reader = {"reader_name": "reader", "last_batch_policy": LastBatchPolicy.DROP} if data.train_files else {}
    iterator = DALIGenericIterator(p, ["x", "y"], auto_reset=True, **reader)
    sync = torch.cuda.synchronize if gpu else lambda: None

    def epoch():
        for _ in iterator:
            pass
        sync()

    return epoch
