"""The pipelines behind one protocol (persist.data.base.Pipeline), built from a RunConfig through one registry
(persist.registries.PIPELINES): the built-ins and a user's `--pipeline module:Class` alike.

Every pipeline is built as Class(data, batch_size, seed, device, *, augment, rank, world_size, **its own options).
The options come from the loader settings (persist/data/settings.py) for the built-ins that have them; a plug-in
gets the common arguments only.
"""

from __future__ import annotations

import torch

from persist.config import RunConfig
from persist.data.base import ImageData, Pipeline
from persist.data.pipelines.delayed import DelayedPipeline
from persist.data.settings import loader_settings
from persist.errors import PluginError
from persist.registries import PIPELINES

__all__ = ["DelayedPipeline", "make_pipeline"]


def make_pipeline(
    config: RunConfig, data: ImageData, device: torch.device, rank: int = 0, world_size: int = 1
) -> Pipeline:
    """The configured pipeline; with several ranks, each yields only its part of every global batch."""
    cls = PIPELINES.get(config.pipeline)
    # under `reuse same` the pipeline applies the crop-flip; under `reaugment` the trainer does, once per use
    common = {
        "rank": rank,
        "world_size": world_size,
        "augment": config.augment == "crop-flip" and config.reuse == "same",
    }
    torchvision_options, dali_options, chosen = loader_settings(config, device, world_size)
    options = {"torchvision": torchvision_options, "dali": dali_options}.get(config.pipeline)
    if options is not None:
        common.update(options, settings_chosen_from=chosen)
    try:
        pipeline = cls(data, config.batch_size, config.seed, device, **common)
    except TypeError as error:  # a plug-in whose constructor does not take the protocol's arguments
        if config.pipeline in PIPELINES.entries and isinstance(PIPELINES.entries[config.pipeline], str):
            raise
        raise PluginError(
            f"--pipeline {config.pipeline}: {cls.__name__}(data, batch_size, seed, device, *, augment, rank, "
            f"world_size) failed: {error}"
        ) from error
    return DelayedPipeline(pipeline, config.delay_ms) if config.delay_ms > 0 else pipeline
