"""A name -> thing registry that also takes the user's own thing, named `package.module:attr` (after ffcv's loader
registry).

Built-ins are registered by the same `module:attr` form and imported only when named, so listing the names of the
pipelines never imports DALI. A plug-in is imported when a config names it; what it holds is checked against what its
flag expects, and a wrong one is one line (PluginError) that names it and says what was expected. `provenance` gives
a plug-in's module file and its sha256, which the manifest and the bench's extra_info record.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from persist.errors import ConfigError, PluginError


@dataclass
class Registry:
    kind: str  # "pipeline": what one entry is, for messages
    flag: str  # "--pipeline": where the user names one
    expected: str  # what a plug-in must be: "a class that implements persist's Pipeline protocol"
    accepts: Callable[[object], bool] = callable  # is the imported object of the right kind?
    entries: dict[str, str] = field(default_factory=dict)  # name -> "module:attr", imported when named
    helps: dict[str, str] = field(default_factory=dict)  # name -> one line for --help and the docs
    families: dict[str, str] = field(default_factory=dict)  # "torchvision" -> "module:attr" resolving "torchvision:X"

    def register(self, name: str, target: str | object, help: str = "") -> None:
        """Add a built-in (or a user's entry under a short name). `target` is "module:attr" or the object itself."""
        self.entries[name] = target
        self.helps[name] = help

    def names(self) -> tuple[str, ...]:
        return tuple(self.entries)

    def choices(self) -> str:
        """The names for messages and --help, with the plug-in form last."""
        return ", ".join([*self.entries, *(f"{family}:NAME" for family in self.families), "or a plug-in module:attr"])

    def described(self) -> str:
        """The names with their one-line descriptions, for --help."""
        named = [f"{name} ({self.helps[name]})" if self.helps.get(name) else name for name in self.entries]
        return "; ".join([*named, *(f"{family}:NAME" for family in self.families), "or a plug-in module:attr"])

    def is_plugin(self, name: str) -> bool:
        return name not in self.entries and ":" in name and name.split(":", 1)[0] not in self.families

    def get(self, name: str):
        """The registered object (imported on first use), a family member, or a plug-in."""
        if name in self.entries:
            target = self.entries[name]
            return _import(target, self) if isinstance(target, str) else target
        family, sep, member = name.partition(":")
        if sep and family in self.families:
            return _import(self.families[family], self)(member)
        if not sep or not family or not member:
            raise ConfigError(f"{self.kind}={name!r} is not allowed: choose one of {self.choices()}")
        found = _import(name, self)
        if not self.accepts(found):
            raise PluginError(f"{self.flag} {name}: it is {_what(found)}, but {self.flag} expects {self.expected}")
        return found

    def provenance(self, name: str) -> dict | None:
        """For a plug-in or a user's registered entry: its name, module file and the file's sha256. None for a
        built-in (persist's own code: the manifest's persist version names it)."""
        target = self.entries.get(name)
        if isinstance(target, str) and target.startswith("persist."):
            return None
        if target is None and not self.is_plugin(name):
            return None  # a family member (torchvision:NAME): the torchvision version names it
        # a plug-in's module, or for a registered object the module that defined it
        module = importlib.import_module(name.split(":", 1)[0]) if target is None else inspect.getmodule(self.get(name))
        if module is None or getattr(module, "__file__", None) is None:
            return {"name": name, "module": None, "module_file": None, "sha256": None}  # defined in a notebook, say
        path = inspect.getsourcefile(module) or module.__file__
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
        return {"name": name, "module": module.__name__, "module_file": str(path), "sha256": digest}


def _import(target: str, registry: Registry):
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # a plug-in's own import error, whatever it is, becomes one line
        raise PluginError(
            f"{registry.flag} {target}: cannot import {module_name!r} ({type(error).__name__}: {error}); "
            f"expected package.module:attr naming {registry.expected}"
        ) from error
    found = module
    for part in attr.split("."):
        if not hasattr(found, part):
            raise PluginError(f"{registry.flag} {target}: {module_name} has no {attr!r}; expected {registry.expected}")
        found = getattr(found, part)
    return found


def _what(value: object) -> str:
    if inspect.isclass(value):
        return f"the class {value.__name__}"
    return f"a {type(value).__name__}"


# The five registries: pipelines, models, datasets, lr schedules and normalizations. Each is the one list of its
# names: the CLI's choices and --help, RunConfig's validation and the docs read it here. Built-ins are named by
# `module:attr` and imported only when used; a user's own is named the same way on the command line
# (`--model mypkg.nets:make_net`), or registered under a short name with the `register_*` functions.
def _is_pipeline_class(value: object) -> bool:
    return inspect.isclass(value) and all(hasattr(value, name) for name in ("epoch", "describe", "close", "__len__"))


def plugin_call(flag: str, what: str, function, *args, **kwargs):
    """function(*args, **kwargs), a call into a plug-in's code: whatever it raises becomes one line (PluginError)
    naming the plug-in (`flag`: "--pipeline module:Class"), the call and the error. KeyboardInterrupt passes."""
    try:
        return function(*args, **kwargs)
    except Exception as error:
        raise PluginError(f"{flag}: {what} raised {type(error).__name__}: {error}") from error


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
    "imagefolder", "persist.data.imagefolder:imagefolder_dataset", "DIR/train/<class>/<file>, any size (--image-size)"
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
    for key, registry in ALL.items():
        name = values.get(key)
        described = registry.provenance(name) if isinstance(name, str) else None
        if described is not None:
            found[key] = described
    return found
