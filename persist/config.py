"""Run configuration: one frozen dataclass that validates itself, and the named size profiles.

argparse lives only in persist/cli/; everything below it takes a RunConfig. `asdict(config)` is written into every run's
manifest, so a record can always be traced back to exactly what produced it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from persist.errors import ConfigError, PersistError
from persist.registry import DATASETS, LR_SCHEDULES, MODELS, NORMALIZATIONS, PIPELINES
from persist.validation import at_least, check_device, one_of, positive, registered

__all__ = ["ConfigError", "PersistError", "RunConfig"]

LOSS_REDUCTIONS = ("sum", "mean")
AUGMENTS = ("none", "crop-flip")  # persist/data/augment.py
REUSES = ("same", "reaugment")  # same: the paper's persistency; reaugment: a fresh crop-flip for each of the K uses
STORAGES = ("raw", "jpeg")  # persist/data/storage.py
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")  # persist/training/precision.py

# Options that only one pipeline understands. Setting one for another pipeline is refused by name, never ignored.
PIPELINE_OPTIONS = {
    "num_workers": "torchvision",
    "pin_memory": "torchvision",
    "persistent_workers": "torchvision",
    "prefetch_factor": "torchvision",
    "dali_threads": "dali",
    "dali_prefetch_depth": "dali",
    "dali_py_workers": "dali",
    "preload_size": "preloaded",
}


@dataclass(frozen=True)
class RunConfig:
    dataset: str = "synthetic"
    data_root: str | None = None
    download: bool = False
    pipeline: str = "preloaded"  # a name in registries.PIPELINES, or a plug-in module:Class
    model: str = "paper-alexnet"  # paper-alexnet | torchvision:NAME | a plug-in module:factory
    batch_size: int = 256  # m
    persistency: int = 1  # K: consecutive SGD steps per loaded minibatch (with adaptive: the most it may take)
    adaptive: bool = False  # --persistency auto:K: step again only while the next batch is late, at most K times
    lr: float = 0.001  # mu
    momentum: float = 0.5  # gamma
    lr_schedule: str = "constant"  # "linear": lr = k*mu on the k-th use of a batch
    epochs: int = 1  # with a budget: the most epochs it may take
    budget_s: float | None = None  # stop once this many training seconds are spent (evaluation excluded)
    budget_sample_steps: int | None = None  # stop once steps x m reaches this
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    width: float = 1.0  # channel multiplier of paper-alexnet; 1.0 is the paper's
    train_size: int | None = None  # None: the whole training split
    test_size: int | None = None
    loss_reduction: str = "sum"  # the paper sums per-example gradients
    delay_ms: float = 0.0  # extra host delay per load: simulates slow storage
    eval_batch_size: int = 1000
    normalization: str = "unit"  # input scale: unit [0, 1] | symmetric [-1, 1] | standardize (see README)
    eval_every: int | None = None  # fresh training samples between evaluations; None: a quarter of the training set
    storage: str = "raw"  # jpeg: the dataset as JPEG files under data_root, read and decoded by each pipeline
    storage_dir: str | None = None  # jpeg: a folder `persist prepare --out` wrote (None: the default under data_root)
    jpeg_quality: int = 90
    augment: str = "none"  # crop-flip: pad 4, random 32x32 crop, horizontal flip, from the shared seed
    reuse: str = "same"  # reaugment: each of the K uses of a batch gets its own crop-flip, on the device
    deterministic: bool = False  # CUDA: deterministic cuDNN/cuBLAS algorithms, so every pipeline's run is identical
    precision: str = "fp32"  # fp32 | tf32 (CUDA) | bf16 | fp16 (autocast; fp16 with a gradient scaler)
    channels_last: bool = False  # NHWC weights and inputs
    compile: bool = False  # torch.compile the training forward; compiled once before the first epoch (compile_s)
    # --dataset imagefolder (data/imagefolder.py): ImageNet preprocessing to image_size (None: 224) on every pipeline
    image_size: int | None = None
    skip_bad_files: bool = False  # leave undecodable files out (listed in the manifest) instead of refusing the folder
    preload_size: int | None = None  # preloaded pipeline: each image stored P x P on the device (None: S / 0.875)
    # torchvision pipeline (None: not set; the pipeline picks its default)
    num_workers: int | None = None
    pin_memory: bool | None = None
    persistent_workers: bool | None = None
    prefetch_factor: int | None = None
    # DALI pipeline
    dali_threads: int | None = None
    dali_prefetch_depth: int | None = None
    dali_py_workers: int | None = None

    def __post_init__(self) -> None:
        for name, registry in (
            ("dataset", DATASETS),
            ("pipeline", PIPELINES),
            ("model", MODELS),
            ("lr_schedule", LR_SCHEDULES),
            ("normalization", NORMALIZATIONS),
        ):
            registered(name, getattr(self, name), registry)
        one_of("loss_reduction", self.loss_reduction, LOSS_REDUCTIONS)
        one_of("storage", self.storage, STORAGES)
        if self.storage_dir is not None and self.storage != "jpeg":
            raise ConfigError(f"storage_dir={self.storage_dir!r} needs storage='jpeg', not {self.storage!r}")
        if not (isinstance(self.jpeg_quality, int) and not isinstance(self.jpeg_quality, bool)) or not (
            1 <= self.jpeg_quality <= 100
        ):
            raise ConfigError(f"jpeg_quality={self.jpeg_quality!r} is not allowed: use an integer from 1 to 100")
        one_of("augment", self.augment, AUGMENTS)
        one_of("reuse", self.reuse, REUSES)
        one_of("precision", self.precision, PRECISIONS)
        if self.reuse == "reaugment" and self.augment != "crop-flip":
            raise ConfigError(
                f"reuse='reaugment' needs augment='crop-flip' (it re-draws the crop-flip), not {self.augment!r}"
            )
        at_least("batch_size", self.batch_size, 1)
        at_least("persistency", self.persistency, 1)
        if self.adaptive and self.persistency < 2:
            raise ConfigError(f"persistency=auto:{self.persistency} is not allowed: auto needs a cap of 2 or more")
        at_least("epochs", self.epochs, 1)
        at_least("eval_batch_size", self.eval_batch_size, 1)
        if self.budget_s is not None:
            positive("budget_s", self.budget_s)
        if self.budget_sample_steps is not None:
            at_least("budget_sample_steps", self.budget_sample_steps, 1)
        if self.budget_s is not None and self.budget_sample_steps is not None:
            raise ConfigError("budget_s and budget_sample_steps are both set: give one budget")
        if self.eval_every is not None:
            at_least("eval_every", self.eval_every, 1)
        for name in ("train_size", "test_size"):
            if getattr(self, name) is not None:
                at_least(name, getattr(self, name), 1)
        positive("lr", self.lr)
        positive("width", self.width)
        if self.width != 1.0 and self.model != "paper-alexnet":
            raise ConfigError(f"width={self.width!r} applies only to --model paper-alexnet, not to {self.model}")
        if not (0.0 <= self.momentum < 1.0) or math.isnan(self.momentum):
            raise ConfigError(f"momentum={self.momentum!r} is not allowed: use 0 <= momentum < 1")
        if not (self.delay_ms >= 0.0 and math.isfinite(self.delay_ms)):
            raise ConfigError(f"delay_ms={self.delay_ms!r} is not allowed: use a finite value >= 0")
        check_device(self.device)
        self._check_pipeline_options()
        self._check_folder_options()

    def _check_folder_options(self) -> None:
        folder = self.dataset == "imagefolder"
        for name in ("image_size", "preload_size"):
            if getattr(self, name) is not None:
                at_least(name, getattr(self, name), 8)
        given = [n for n in ("image_size", "skip_bad_files", "preload_size") if getattr(self, n) not in (None, False)]
        if given and not folder:
            raise ConfigError(f"{given[0]}={getattr(self, given[0])!r} applies only to --dataset imagefolder")
        if not folder:
            return
        if self.augment != "none" or self.reuse != "same":
            raise ConfigError(
                f"augment={self.augment!r}, reuse={self.reuse!r} are not allowed with --dataset imagefolder: its "
                "training preprocessing is ImageNet's random-resized crop and flip already (use augment none, reuse "
                "same)"
            )
        if self.storage != "raw":
            raise ConfigError(
                f"storage={self.storage!r} is not allowed with --dataset imagefolder: its images are files"
            )

    def _check_pipeline_options(self) -> None:
        for name, owner in PIPELINE_OPTIONS.items():
            value = getattr(self, name)
            if value is not None and owner != self.pipeline:
                raise ConfigError(f"{name}={value!r} applies only to --pipeline {owner}, not to {self.pipeline}")
        for name in ("num_workers", "dali_py_workers"):
            if getattr(self, name) is not None:
                at_least(name, getattr(self, name), 0)
        for name in ("prefetch_factor", "dali_threads", "dali_prefetch_depth"):
            if getattr(self, name) is not None:
                at_least(name, getattr(self, name), 1)
        # with num_workers unset, the default depends on the machine: persist/data/settings.py checks these then
        if self.prefetch_factor is not None and self.num_workers == 0:
            raise ConfigError(f"prefetch_factor={self.prefetch_factor} needs num_workers >= 1")
        if self.persistent_workers and self.num_workers == 0:
            raise ConfigError("persistent_workers=True needs num_workers >= 1")

    def as_dict(self) -> dict:
        return asdict(self)

    def differences(self, other: RunConfig, ignore: tuple[str, ...] = ()) -> list[str]:
        """Names of the fields whose values differ, except those in `ignore`."""
        return [
            f.name for f in fields(self) if f.name not in ignore and getattr(self, f.name) != getattr(other, f.name)
        ]


AUTO_CAP = 8  # --persistency auto: at most this many uses of a batch unless auto:N says otherwise


def parse_persistency(text: str) -> dict:
    """'5' -> a fixed K; 'auto' or 'auto:N' -> adaptive persistency with a cap (RunConfig fields)."""
    word, _, cap = str(text).partition(":")
    try:
        if word == "auto":
            return {"persistency": int(cap) if cap else AUTO_CAP, "adaptive": True}
        if not cap:
            return {"persistency": int(word), "adaptive": False}
    except ValueError:
        pass
    raise ConfigError(f"persistency={text!r} is not allowed: use an integer K >= 1, auto, or auto:N (a cap N >= 2)")


def persistency_label(persistency: int, adaptive: bool) -> str:
    """How K is shown: '5', or 'auto:8'."""
    return f"auto:{persistency}" if adaptive else str(persistency)


BUDGET_UNITS = {"s": "budget_s", "sample-steps": "budget_sample_steps", "epochs": "epochs"}


def parse_budget(text: str) -> dict:
    """'120s' | '2e6sample-steps' | '10epochs' -> the RunConfig field that says it, with its value."""
    for unit, name in sorted(BUDGET_UNITS.items(), key=lambda item: -len(item[0])):
        if text.endswith(unit):
            try:
                value = float(text[: -len(unit)])
            except ValueError:
                break
            if not (value > 0 and math.isfinite(value)) or (name != "budget_s" and value != int(value)):
                break
            return {name: value if name == "budget_s" else int(value)}
    raise ConfigError(
        f"{text!r} is not a budget: use training seconds (120s), sample-steps, i.e. steps x m (2e6sample-steps), "
        "or epochs (10epochs)"
    )


UNCAPPED_EPOCHS = 1_000_000  # a time or sample budget alone: the budget ends the run, not an epoch count


def budget_fields(budget: dict | None, epochs: int | None) -> dict:
    """A parsed --budget beside an explicit --epochs (None: not given), as RunConfig fields."""
    budget = dict(budget or {})
    if "epochs" in budget and epochs is not None:
        raise ConfigError(f"--budget {budget['epochs']}epochs and --epochs {epochs} say the same thing: give one")
    if budget.keys() & {"budget_s", "budget_sample_steps"} and epochs is None:
        budget["epochs"] = UNCAPPED_EPOCHS
    return budget


# Named sizes. `smoke` keeps a 2-core CPU under minutes; `paper` is the paper's setup (Section 2.1).
PROFILES: dict[str, dict] = {
    "smoke": {"train_size": 1024, "test_size": 256, "width": 0.125, "epochs": 3},
    "paper": {"train_size": 50_000, "test_size": 10_000, "width": 1.0, "epochs": 100},
}


def with_profile(config: RunConfig, profile: str) -> RunConfig:
    """`config` with the sizes of a named profile (smoke | paper) applied."""
    one_of("profile", profile, tuple(PROFILES))
    return replace(config, **PROFILES[profile])


# Fields added after runs were already on disk, with the value those runs used (not today's default): a manifest
# that lacks one describes a run made before it existed.
LEGACY_VALUES = {
    "normalization": "standardize",
    "augment": "none",
    "reuse": "same",
    "storage": "raw",
    "jpeg_quality": 90,
    "model": "paper-alexnet",
    "precision": "fp32",
    "channels_last": False,
    "compile": False,
    "image_size": None,
    "skip_bad_files": False,
    "preload_size": None,
    "adaptive": False,
}


def from_dict(values: dict) -> RunConfig:
    """Rebuild a RunConfig from a manifest, refusing unknown keys rather than dropping them."""
    values = {**LEGACY_VALUES, **values}
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown config field(s) {', '.join(unknown)}: this manifest is from another persist version"
        )
    return RunConfig(**values)
