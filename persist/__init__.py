"""persist: GPU training-throughput benchmarks for minibatch persistency (Fischetti, Mandatelli, Salvagnin).

The public API, what a user scripts against:

    import persist

    config = persist.RunConfig(dataset="digits", model="torchvision:resnet18", batch_size=64, persistency=2,
                               epochs=1, device="cpu")
    records = persist.train_run(config, "runs/resnet18-k2")          # the run folder persist report reads
    frame = persist.load_runs(["runs/resnet18-k2"])                  # one row per epoch, pandas
    persist.register_model("tiny", lambda num_classes, image_shape: torch.nn.Sequential(...))

    meter = persist.Meter("runs/mine", device=device, config={"batch_size": 256})   # your own loop, measured
    with meter.epoch(1):
        for (x, y), use in persist.reuse(meter.timed(loader), k=2, schedule="linear"):
            with meter.step(samples=len(y)) as step: ...                  # see docs/own-loop.md

Names are imported on first use, so `import persist` stays cheap (no torch until a name needs it).
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

_EXPORTS = {
    # configuring and running
    "RunConfig": "persist.config",
    "PROFILES": "persist.config",
    "with_profile": "persist.config",
    "train_run": "persist.runs.run",
    "Trainer": "persist.training.trainer",
    "Use": "persist.training.schedules",
    "uses": "persist.training.schedules",
    "SweepGrid": "persist.runs.sweep",
    # measuring your own loop
    "Meter": "persist.loop.meter",
    "reuse": "persist.loop.reuse",
    "replay": "persist.loop.reuse",
    "run_sweep": "persist.runs.sweep",
    # reading results
    "load_runs": "persist.records",
    "load_evals": "persist.records",
    "read_records": "persist.records",
    "decomposition": "persist.analysis.decomposition",
    "write_report": "persist.analysis.report",
    "compare_files": "persist.benchjson.compare",
    # plugging in
    "register_pipeline": "persist.registry",
    "register_model": "persist.registry",
    "register_dataset": "persist.registry",
    "register_lr_schedule": "persist.registry",
    "register_normalization": "persist.registry",
    "register_compute_profile": "persist.compute",  # --compute emulated:NAME (docs/emulated.md)
    "ComputeProfile": "persist.compute",
    "ImageData": "persist.data.base",
    "Pipeline": "persist.data.base",
    # image folders: a plug-in pipeline cuts the same windows as the built-ins with rrc_windows
    "load_folder": "persist.data.imagefolder",
    "rrc_windows": "persist.data.resized_crop",
    # errors: each is one line from the CLI, exit code 2
    "PersistError": "persist.errors",
    "ConfigError": "persist.errors",
    "PluginError": "persist.errors",
    "DataError": "persist.errors",
    "DivergedError": "persist.errors",
    "PipelineError": "persist.errors",
    "FolderError": "persist.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'persist' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
