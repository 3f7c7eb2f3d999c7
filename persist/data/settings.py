"""Loader settings chosen from the machine when a run leaves them unset, and recorded with the run.

On CUDA the model runs on the GPU and the host's cores are free for loading, so the torchvision DataLoader gets one
worker per core of this rank's share of the machine, less one for the training process (at most 8), pinned memory
(so that `non_blocking` copies overlap), PyTorch's prefetch of 2 batches per worker, and persistent workers (no
respawn each epoch); DALI gets one thread per core of the share, at most 4. On a CPU device the model's own kernels
already use every core, and loader processes would only take cores from them: 0 workers, no pinning, 1 DALI thread.
Any explicit flag (--num-workers, --pin-memory, --prefetch-factor, --persistent-workers, --dali-threads) wins.
"""

from __future__ import annotations

import os

import torch

from persist.config import PIPELINE_OPTIONS, RunConfig
from persist.errors import ConfigError

MAX_WORKERS, MAX_DALI_THREADS = 8, 4


def loader_settings(config: RunConfig, device: torch.device, world_size: int = 1, cpu_count: int | None = None):
    """(torchvision options, DALI options, how they were chosen) for `config` on `device`."""
    cores = cpu_count or os.cpu_count() or 1
    share = max(1, cores // world_size)  # ranks on one node split its cores
    gpu = device.type == "cuda"
    workers = config.num_workers if config.num_workers is not None else (min(MAX_WORKERS, share - 1) if gpu else 0)
    for name, value in (("prefetch_factor", config.prefetch_factor), ("persistent_workers", config.persistent_workers)):
        if value and workers == 0:
            raise ConfigError(f"{name}={value} needs num_workers >= 1 (the default on a {device.type} device is 0)")
    torchvision = {
        "num_workers": workers,
        "pin_memory": config.pin_memory if config.pin_memory is not None else gpu,
        "persistent_workers": config.persistent_workers if config.persistent_workers is not None else workers > 0,
        "prefetch_factor": config.prefetch_factor if config.prefetch_factor is not None else (2 if workers else None),
    }
    dali = {
        "num_threads": config.dali_threads or (min(MAX_DALI_THREADS, share) if gpu else 1),
        "prefetch_queue_depth": config.dali_prefetch_depth or 2,
        "py_num_workers": config.dali_py_workers or 0,
    }
    given = [name for name in PIPELINE_OPTIONS if getattr(config, name) is not None]
    chosen = f"{cores} cores, {world_size} rank(s) on {device.type}; set by flag: {', '.join(given) or 'none'}"
    return torchvision, dali, chosen


def pipeline_options(config: RunConfig, device: torch.device, world_size: int = 1) -> dict:
    """The options of the built-in pipeline `config.pipeline`, by the name that declares them; {} for any other
    (a plug-in gets the protocol's arguments only)."""
    torchvision, dali, chosen = loader_settings(config, device, world_size)
    options = {
        "preloaded": {"preload_size": config.preload_size},
        "torchvision": {**torchvision, "settings_chosen_from": chosen},
        "dali": {**dali, "settings_chosen_from": chosen},
    }
    return options.get(config.pipeline, {})
