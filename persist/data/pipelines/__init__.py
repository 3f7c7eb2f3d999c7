"""The pipelines behind one protocol (persist.data.base.Pipeline), built from a RunConfig through one registry
(persist.registry.PIPELINES): the built-ins and a user's `--pipeline module:Class` alike.

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
from persist.registry import PIPELINES

__all__ = ["DelayedPipeline", "make_pipeline"]

# An image folder (ImageData.image_size set) goes through each built-in's folder variant: same name, same options,
# ImageNet preprocessing with the shared windows (persist/data/resized_crop.py). A plug-in gets the data as it is.
FOLDER_PIPELINES = {
    "preloaded": "persist.data.pipelines.folder_loaders:FolderPreloadedPipeline",
    "torchvision": "persist.data.pipelines.folder_loaders:FolderTorchvisionPipeline",
    "dali": "persist.data.pipelines.folder_dali:FolderDaliPipeline",
}


def _folder_variant(name: str):
    import importlib

    module, attr = FOLDER_PIPELINES[name].split(":")
    return getattr(importlib.import_module(module), attr)


def make_pipeline(
    config: RunConfig, data: ImageData, device: torch.device, rank: int = 0, world_size: int = 1
) -> Pipeline:
    """The configured pipeline; with several ranks, each yields only its part of every global batch."""
    folder = data.image_size is not None and config.pipeline in FOLDER_PIPELINES
    cls = _folder_variant(config.pipeline) if folder else PIPELINES.get(config.pipeline)
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
    if folder and config.pipeline == "preloaded":
        common["preload_size"] = config.preload_size
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
