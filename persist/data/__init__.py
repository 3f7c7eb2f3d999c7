"""Pipelines behind one protocol (base.Pipeline), built from a RunConfig by `make_pipeline`."""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from persist.config import RunConfig
from persist.data.base import Batch, ImageData, Pipeline, batch_indices, epoch_order
from persist.data.datasets import DataError, load_dataset
from persist.data.settings import loader_settings

__all__ = ["DataError", "ImageData", "Pipeline", "batch_indices", "epoch_order", "load_dataset", "make_pipeline"]


class DelayedPipeline:
    """Adds a fixed host delay to every load, as slow storage would, so users can see when persistency pays."""

    def __init__(self, inner: Pipeline, delay_ms: float, sleep=time.sleep):
        self.inner, self.delay_s, self.sleep = inner, delay_ms / 1000, sleep
        self.name = inner.name

    def __len__(self) -> int:
        return len(self.inner)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        for batch in self.inner.epoch(epoch):
            self.sleep(self.delay_s)
            yield batch

    def describe(self) -> dict:
        return {**self.inner.describe(), "delay_ms": self.delay_s * 1000}

    def close(self) -> None:
        self.inner.close()


def make_pipeline(
    config: RunConfig, data: ImageData, device: torch.device, rank: int = 0, world_size: int = 1
) -> Pipeline:
    """The configured pipeline; with several ranks, each yields only its part of every global batch."""
    args = (data, config.batch_size, config.seed, device)
    # under `reuse same` the pipeline applies the crop-flip; under `reaugment` the trainer does, once per use
    shard = {
        "rank": rank,
        "world_size": world_size,
        "augment": config.augment == "crop-flip" and config.reuse == "same",
    }
    if config.pipeline == "preloaded":
        from persist.data.preloaded import PreloadedPipeline

        pipeline = PreloadedPipeline(*args, **shard)
    elif config.pipeline == "torchvision":
        from persist.data.torchvision_loader import TorchvisionPipeline

        options, _, chosen = loader_settings(config, device, world_size)
        pipeline = TorchvisionPipeline(*args, **options, settings_chosen_from=chosen, **shard)
    else:
        from persist.data.dali_loader import DaliPipeline

        _, options, chosen = loader_settings(config, device, world_size)
        pipeline = DaliPipeline(*args, **options, settings_chosen_from=chosen, **shard)
    return DelayedPipeline(pipeline, config.delay_ms) if config.delay_ms > 0 else pipeline
