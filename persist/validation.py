"""Checks of config values, each failing with one line that names the bad value and what is allowed (a ConfigError),
and the parsers of the values that are written as text (K, a budget, a list of seeds)."""

from __future__ import annotations

import math
from dataclasses import fields

from persist.compute import check_compute
from persist.errors import ConfigError
from persist.registry import Registry


def registered(name: str, value: str, registry: Registry) -> None:
    """A built-in name is known without importing it; anything else is resolved now (a plug-in is imported), so a
    bad one is refused before any work starts."""
    if not isinstance(value, str):
        raise ConfigError(f"{name}={value!r} is not allowed: choose one of {registry.choices()}")
    if value not in registry.entries:
        registry.get(value)


def one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed: choose one of {', '.join(allowed)}")


def at_least(name: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name}={value!r} is not allowed: use an integer >= {low}")


def positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}={value!r} is not allowed: use a finite number > 0")


# what torch.manual_seed takes; a negative seed draws as 2**64 + seed (two's complement), as torch maps it
SEED_RANGE = (-(2**63), 2**64 - 1)


def check_seed(seed: int) -> None:
    low, high = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, int) or not low <= seed <= high:
        raise ConfigError(
            f"seed={seed!r} is not allowed: use an integer from {low} to {high} (the range torch.manual_seed takes)"
        )


MAX_CUDA_INDEX = 127  # torch keeps a device index in 8 bits: cuda:128 reads as cuda:-128, cuda:255 as plain cuda


def check_device(device: str) -> None:
    if device in ("auto", "cpu", "cuda"):
        return
    index = device[5:] if isinstance(device, str) and device.startswith("cuda:") else ""
    # ASCII digits only, no leading zero: str.isdigit() takes '²' and '٣', which torch.device refuses
    if index.isascii() and index.isdigit() and str(int(index)) == index and int(index) <= MAX_CUDA_INDEX:
        return
    raise ConfigError(
        f"device={device!r} is not allowed: use auto, cpu, cuda or cuda:N (N a device index from 0 to "
        f"{MAX_CUDA_INDEX} in ASCII digits)"
    )


def check_folder_options(config) -> None:
    """--dataset imagefolder's own options, and what it refuses."""
    folder = config.dataset == "imagefolder"
    given = [n for n in ("image_size", "skip_bad_files", "preload_size") if getattr(config, n) not in (None, False)]
    if given and not folder:
        raise ConfigError(f"{given[0]}={getattr(config, given[0])!r} applies only to --dataset imagefolder")
    if not folder:
        return
    if config.augment != "none" or config.reuse != "same":
        raise ConfigError(
            f"augment={config.augment!r}, reuse={config.reuse!r} are not allowed with --dataset imagefolder: its "
            "training preprocessing is ImageNet's random-resized crop and flip already (use augment none, reuse "
            "same)"
        )
    if config.storage != "raw":
        raise ConfigError(f"storage={config.storage!r} is not allowed with --dataset imagefolder: its images are files")


def check_pipeline_options(config, owners: dict[str, str]) -> None:
    """Each pipeline's own options (`owners`: field -> pipeline) are refused for another, and checked."""
    for name, owner in owners.items():
        value = getattr(config, name)
        if value is not None and owner != config.pipeline:
            raise ConfigError(f"{name}={value!r} applies only to --pipeline {owner}, not to {config.pipeline}")
    for f in fields(config):  # the lowest integer each allows (its field's metadata)
        if f.name in owners and getattr(config, f.name) is not None and "at_least" in f.metadata:
            at_least(f.name, getattr(config, f.name), f.metadata["at_least"])
    # with num_workers unset, the default depends on the machine: persist/data/settings.py checks these then
    if config.prefetch_factor is not None and config.num_workers == 0:
        raise ConfigError(f"prefetch_factor={config.prefetch_factor} needs num_workers >= 1")
    if config.persistent_workers and config.num_workers == 0:
        raise ConfigError("persistent_workers=True needs num_workers >= 1")


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


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> those seeds; 'Nx' -> N seeds, 0..N-1. '3' is the one seed 3, never a count."""
    text = str(text).strip()
    try:
        if text.endswith("x"):
            count = int(text[:-1])
            if count >= 1:
                return list(range(count))
        else:
            seeds = [int(v) for v in text.split(",")]
            if all(seed >= 0 for seed in seeds) and len(set(seeds)) == len(seeds):
                return seeds
    except ValueError:
        pass
    raise ConfigError(
        f"seeds={text!r} is not allowed: use a comma-separated list of distinct seeds >= 0 (0,1,2), or a count Nx "
        "with N >= 1 (3x: seeds 0,1,2)"
    )


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


IMAGE_FOLDER_LR_PER_256 = 0.00625  # lr per 256 images of m; the largest tried that trains ResNet-50 with no warm-up


def image_folder_fields(batch_size: int) -> dict:
    """The training settings an image folder gets where they are not given: the paper's summed loss at lr 0.001
    diverges at once on a torchvision ResNet; a mean loss, momentum 0.9 and lr linear in m train."""
    return {"loss_reduction": "mean", "momentum": 0.9, "lr": IMAGE_FOLDER_LR_PER_256 * batch_size / 256}


UNCAPPED_EPOCHS = 1_000_000  # a time or sample budget alone: the budget ends the run, not an epoch count


def budget_fields(budget: dict | None, epochs: int | None) -> dict:
    """A parsed --budget beside an explicit --epochs (None: not given), as RunConfig fields."""
    budget = dict(budget or {})
    if "epochs" in budget and epochs is not None:
        raise ConfigError(f"--budget {budget['epochs']}epochs and --epochs {epochs} say the same thing: give one")
    if budget.keys() & {"budget_s", "budget_sample_steps"} and epochs is None:
        budget["epochs"] = UNCAPPED_EPOCHS
    return budget


def check_values(config) -> None:
    """A RunConfig's checks across fields and of values its field metadata cannot state (ranges of floats, pairs
    that exclude each other); each is one line naming the value and what is allowed."""
    check_device(config.device)
    check_seed(config.seed)
    check_compute(config.compute)  # real, or emulated: a profile, a number, a plug-in (a run folder: at the start)
    if config.cudnn_benchmark and config.deterministic:
        raise ConfigError(
            "cudnn_benchmark=True is not allowed with deterministic=True: autotuning picks algorithms by timing, "
            "which --deterministic rules out; drop one of them"
        )
    if config.compute != "real" and config.compile:
        raise ConfigError(
            f"compile=True is not allowed with compute={config.compute!r}: an emulated step runs no model"
        )
    if config.storage_dir is not None and config.storage != "jpeg":
        raise ConfigError(f"storage_dir={config.storage_dir!r} needs storage='jpeg', not {config.storage!r}")
    if not (isinstance(config.jpeg_quality, int) and not isinstance(config.jpeg_quality, bool)) or not (
        1 <= config.jpeg_quality <= 100
    ):
        raise ConfigError(f"jpeg_quality={config.jpeg_quality!r} is not allowed: use an integer from 1 to 100")
    if config.reuse == "reaugment" and config.augment != "crop-flip":
        raise ConfigError(
            f"reuse='reaugment' needs augment='crop-flip' (it re-draws the crop-flip), not {config.augment!r}"
        )
    if config.adaptive and config.persistency < 2:
        raise ConfigError(f"persistency=auto:{config.persistency} is not allowed: auto needs a cap of 2 or more")
    if config.budget_s is not None:
        positive("budget_s", config.budget_s)
    if config.budget_s is not None and config.budget_sample_steps is not None:
        raise ConfigError("budget_s and budget_sample_steps are both set: give one budget")
    positive("lr", config.lr)
    positive("width", config.width)
    if config.width != 1.0 and config.model != "paper-alexnet":
        raise ConfigError(f"width={config.width!r} applies only to --model paper-alexnet, not to {config.model}")
    if not (0.0 <= config.momentum < 1.0) or math.isnan(config.momentum):
        raise ConfigError(f"momentum={config.momentum!r} is not allowed: use 0 <= momentum < 1")
    if not (config.delay_ms >= 0.0 and math.isfinite(config.delay_ms)):
        raise ConfigError(f"delay_ms={config.delay_ms!r} is not allowed: use a finite value >= 0")
