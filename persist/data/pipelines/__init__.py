"""The pipelines behind one protocol (persist.data.base.Pipeline), built from a RunConfig through one registry
(persist.registry.PIPELINES): the built-ins and a user's `--pipeline module:Class` alike, for every dataset.

Every pipeline is built as Class(data, batch_size, seed, device, *, augment, rank, world_size, **its own options).
The ImageData says what it holds (arrays, JPEG storage in train_files, or an image folder: image_size set, with
train_files and train_sizes); each built-in reads it through its source (sources.py). The options come from the
loader settings (persist/data/settings.py) for the built-in that declares them; a plug-in gets the common arguments
only, and is wrapped (plugin.py): what it declares (`prefetches`, `normalization`) is recorded, and its first batch's
normalization is checked against the test split's.
"""

from __future__ import annotations

import torch

from persist.config import RunConfig
from persist.data.base import ImageData, Pipeline
from persist.data.pipelines.delayed import DelayedPipeline
from persist.data.pipelines.plugin import PluginPipeline
from persist.data.settings import pipeline_options
from persist.registry import PIPELINES, plugin_call

__all__ = ["DelayedPipeline", "PluginPipeline", "make_pipeline"]


def make_pipeline(
    config: RunConfig, data: ImageData, device: torch.device, rank: int = 0, world_size: int = 1
) -> Pipeline:
    """The configured pipeline; with several ranks, each yields only its part of every global batch."""
    cls = PIPELINES.get(config.pipeline)
    target = PIPELINES.entries.get(config.pipeline)
    builtin = isinstance(target, str) and target.startswith("persist.")  # not a user's class under a built-in name
    # under `reuse same` the pipeline applies the crop-flip; under `reaugment` the trainer does, once per use
    common = {
        "rank": rank,
        "world_size": world_size,
        "augment": config.augment == "crop-flip" and config.reuse == "same",
    }
    options = pipeline_options(config, device, world_size)  # checked for every pipeline, passed to its built-in only
    if builtin:
        pipeline = cls(data, config.batch_size, config.seed, device, **common, **options)
    else:  # a plug-in: whatever its code raises, here or in any later call, is one line naming it and the call
        flag = f"--pipeline {config.pipeline}"
        built = f"{cls.__name__}(data, batch_size, seed, device, *, augment, rank, world_size)"
        inner = plugin_call(flag, built, cls, data, config.batch_size, config.seed, device, **common)
        pipeline = PluginPipeline(inner, data, flag)
    return DelayedPipeline(pipeline, config.delay_ms) if config.delay_ms > 0 else pipeline
