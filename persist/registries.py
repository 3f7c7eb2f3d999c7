"""The five registries: pipelines, models, datasets, lr schedules and normalizations.

Each is the one list of its names: the CLI's choices and --help, RunConfig's validation and README read it here.
Built-ins are named by `module:attr` and imported only when used; a user's own is named the same way on the command
line (`--model mypkg.nets:make_net`), or registered under a short name with the `register_*` functions.
"""

from __future__ import annotations

import inspect

from persist.registry import Registry


def _is_pipeline_class(value: object) -> bool:
    return inspect.isclass(value) and all(hasattr(value, name) for name in ("epoch", "describe", "close", "__len__"))


PIPELINES = Registry(
    "pipeline",
    "--pipeline",
    "a class that implements persist's Pipeline protocol (persist/data/base.py), built as "
    "Class(data, batch_size, seed, device, *, augment, rank, world_size)",
    _is_pipeline_class,
)
PIPELINES.register(
    "preloaded", "persist.data.pipelines.preloaded:PreloadedPipeline", "the dataset on the device, a gather per batch"
)
PIPELINES.register(
    "torchvision",
    "persist.data.pipelines.torchvision_loader:TorchvisionPipeline",
    "per-sample torchvision transforms in a DataLoader",
)
PIPELINES.register("dali", "persist.data.pipelines.dali_loader:DaliPipeline", "NVIDIA DALI, on the GPU or CPU-only")

MODELS = Registry(
    "model",
    "--model",
    "a factory called as factory(num_classes=int, image_shape=(C, H, W)) that returns a torch.nn.Module",
)
MODELS.register("paper-alexnet", "persist.training.models:paper_alexnet", "the paper's reduced AlexNet, the default")
MODELS.families["torchvision"] = "persist.training.models:torchvision_factory"

DATASETS = Registry(
    "dataset",
    "--dataset",
    "a function called as function(data_root=str or None, download=bool, train_size=int or None, test_size=int or "
    "None) that returns a persist.data.base.ImageData",
)
DATASETS.register("synthetic", "persist.data.datasets:synthetic_dataset", "CIFAR-shaped, offline, the default")
DATASETS.register("cifar10", "persist.data.datasets:cifar10_dataset", "the cifar-10-batches-py folder")
DATASETS.register("digits", "persist.data.datasets:digits_dataset", "scikit-learn's digits, upscaled to 32x32")
DATASETS.register(
    "imagefolder", "persist.data.folder:imagefolder_dataset", "DIR/train/<class>/<file>, any size (--image-size)"
)

LR_SCHEDULES = Registry(
    "lr_schedule", "--lr-schedule", "a function called as function(mu, k) for the k-th use of a batch, returning its lr"
)
LR_SCHEDULES.register("constant", "persist.training.schedules:constant", "mu on every use (the paper's main runs)")
LR_SCHEDULES.register("linear", "persist.training.schedules:linear", "k*mu on the k-th use (the paper's Section 3)")

NORMALIZATIONS = Registry(
    "normalization",
    "--normalization",
    "a function called as function(channel_mean, channel_std) that returns (mean, std), three floats each on the "
    "0..1 scale: the model sees (pixel/255 - mean) / std",
)
NORMALIZATIONS.register("unit", "persist.data.base:unit_scale", "pixel / 255, in [0, 1] (default)")
NORMALIZATIONS.register("symmetric", "persist.data.base:symmetric_scale", "in [-1, 1]")
NORMALIZATIONS.register("standardize", "persist.data.base:standardize", "per channel, the training split's statistics")

ALL = {"pipeline": PIPELINES, "model": MODELS, "dataset": DATASETS, "lr_schedule": LR_SCHEDULES}
ALL["normalization"] = NORMALIZATIONS


def register_pipeline(name: str, cls, help: str = "") -> None:
    """Make `cls` (a Pipeline class) available as --pipeline NAME and RunConfig(pipeline=NAME)."""
    PIPELINES.register(name, cls, help)


def register_model(name: str, factory, help: str = "") -> None:
    """Make `factory(num_classes=, image_shape=)` available as --model NAME."""
    MODELS.register(name, factory, help)


def register_dataset(name: str, loader, help: str = "") -> None:
    """Make `loader(data_root=, download=, train_size=, test_size=)` -> ImageData available as --dataset NAME."""
    DATASETS.register(name, loader, help)


def register_lr_schedule(name: str, schedule, help: str = "") -> None:
    """Make `schedule(mu, k)` available as --lr-schedule NAME."""
    LR_SCHEDULES.register(name, schedule, help)


def register_normalization(name: str, scale, help: str = "") -> None:
    """Make `scale(channel_mean, channel_std) -> (mean, std)` available as --normalization NAME."""
    NORMALIZATIONS.register(name, scale, help)


def plugins(values: dict) -> dict:
    """The plug-ins a config names, with each module's file and sha256: {"model": {...}, ...}; empty for built-ins."""
    found = {}
    for field, registry in ALL.items():
        name = values.get(field)
        described = registry.provenance(name) if isinstance(name, str) else None
        if described is not None:
            found[field] = described
    return found
