"""The bench's options and grid, shared by bench/conftest.py (its hooks and fixtures) and the bench_*.py cells:
the --persist-* options, the grid's sizes, each check's time cap, and BenchSetup, what the options resolve to.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch

from persist.config import PROFILES, RunConfig
from persist.errors import ConfigError, PersistError
from persist.training.device import resolve_device
from persist.validation import check_device

BATCH_SIZES = {"smoke": (32, 256), "paper": (32, 256, 512)}
PERSISTENCIES = (1, 2, 5, "auto")  # auto: --persistency auto (cap 8), its K chosen by the loader's timing
PIPELINES = ("preloaded", "torchvision", "dali")
# pipeline-only cells need more loads per epoch than the smoke training set gives
PIPELINE_ONLY_SAMPLES = {"smoke": 8192, "paper": 50_000}
# Time caps (s) on each ratio check's pairs (persist.stats.sequential_pairs): a check adds pairs until its interval is
# narrower than its tolerance or its cap is spent (then checked after each whole ABBA block, at least 12 pairs).
# The smoke caps keep `make bench` under 10 minutes on a busy 2-core CPU; a check still wide at its cap is
# inconclusive, and says so.
CHECK_CAP_S = {
    "smoke": {
        "vs_reference": 30.0,
        "planted_slowdown": 20.0,
        "clock_overhead": 10.0,
        "planted_delay": 30.0,
        "auto_overhead": 20.0,
        "whatif": 30.0,
    },
    "paper": {
        "vs_reference": 120.0,
        "planted_slowdown": 60.0,
        "clock_overhead": 30.0,
        "planted_delay": 120.0,
        "auto_overhead": 60.0,
        "whatif": 60.0,
    },
}


def add_options(parser) -> None:
    """The bench's --persist-* options (bench/conftest.py's pytest_addoption)."""
    group = parser.getgroup("persist")
    group.addoption(
        "--persist-profile",
        default="auto",
        choices=("auto", "smoke", "paper"),
        help="sizes: paper on CUDA and smoke on CPU when auto",
    )
    group.addoption("--persist-device", default="auto", help="auto | cpu | cuda | cuda:N")
    group.addoption("--persist-dataset", default="synthetic", help="synthetic | cifar10 | digits")
    group.addoption("--persist-data-root", default=None, help="folder holding cifar-10-batches-py")
    group.addoption(
        "--persist-workload",
        default="all",
        choices=("all", "paper", "imagenet"),
        help="paper: the paper's grid (32 px, reduced AlexNet); imagenet: ResNet-50 at 224 px from an image folder "
        "(bench_imagenet.py; a smoke version on a CPU); all (default): both",
    )
    group.addoption("--persist-rounds", type=int, default=3, help="timed rounds per cell, after 1 warm-up round")
    group.addoption(
        "--persist-storage",
        default="raw",
        choices=("raw", "jpeg"),
        help="raw arrays (default) | jpeg: files under the data root, read and decoded by every pipeline",
    )
    group.addoption(
        "--persist-storage-dir",
        default=None,
        help="read a folder that persist prepare --out wrote (implies --persist-storage jpeg)",
    )
    group.addoption(
        "--persist-augment",
        default="none",
        choices=("none", "crop-flip", "crop-flip-reaugment"),
        help="none (default) | crop-flip in every pipeline | crop-flip-reaugment: a fresh crop-flip per use, on the "
        "device (training cells; the checks against hand-written loops stay unaugmented)",
    )
    group.addoption(
        "--persist-strict",
        action="store_true",
        help="an inconclusive ratio check fails its cell too (for quiet CI machines); by default only a failed one",
    )
    group.addoption(
        "--persist-compute",
        default="real",
        help="real (default) | emulated:SPEC: the training cells' steps wait an accelerator's step time instead of "
        "training (persist train --compute; docs/emulated.md); the model-only, reference-loop and clock cells stay "
        "real: they time the model itself",
    )
    group.addoption(
        "--persist-train-size",
        type=int,
        default=None,
        help="cut the training set to N images (e.g. the paper profile's full-width cells on a CPU)",
    )


@dataclass(frozen=True)
class BenchSetup:
    profile: str
    device: torch.device
    base: RunConfig  # the profile's sizes on the chosen device and dataset
    batch_sizes: tuple[int, ...]
    rounds: int
    skip_reason: str | None = None  # set when the requested device does not exist here
    strict: bool = False  # --persist-strict: an inconclusive check fails its cell
    compute: str = "real"  # --persist-compute: the training cells' compute (persist.compute)


def setup_of(config) -> BenchSetup:
    """The sizes, device and rounds the --persist-* options ask for; a UsageError (exit 4) for a bad one."""
    requested, skip_reason = config.getoption("--persist-device"), None
    try:
        check_device(requested)
    except ConfigError as error:  # a misspelt device is a usage error, not a missing GPU
        raise pytest.UsageError(f"--persist-device: {error}") from None
    try:
        device = resolve_device(requested)
    except ConfigError as error:  # a GPU asked for on a machine without it: skip every cell, never fake one
        device, skip_reason = torch.device("cpu"), f"--persist-device {requested}: {error}"
    profile = config.getoption("--persist-profile")
    if profile == "auto":
        profile = "paper" if device.type == "cuda" else "smoke"
    sizes = {k: v for k, v in PROFILES[profile].items() if k != "epochs"}
    train_size = config.getoption("--persist-train-size")
    if train_size is not None:
        if train_size < max(BATCH_SIZES[profile]):
            raise pytest.UsageError(
                f"--persist-train-size={train_size} is not allowed: the {profile} profile needs at least "
                f"{max(BATCH_SIZES[profile])} images (its largest m)"
            )
        sizes["train_size"] = train_size
    base = RunConfig(
        dataset=config.getoption("--persist-dataset"),
        data_root=config.getoption("--persist-data-root"),
        storage="jpeg" if config.getoption("--persist-storage-dir") else config.getoption("--persist-storage"),
        storage_dir=config.getoption("--persist-storage-dir"),
        augment="none" if config.getoption("--persist-augment") == "none" else "crop-flip",
        reuse="reaugment" if config.getoption("--persist-augment") == "crop-flip-reaugment" else "same",
        device=str(device),
        **sizes,
    )
    rounds = config.getoption("--persist-rounds")
    if rounds < 1:
        raise pytest.UsageError(f"--persist-rounds={rounds} is not allowed: use 1 or more timed rounds")
    strict = config.getoption("--persist-strict")
    compute = config.getoption("--persist-compute")
    try:
        replace(base, compute=compute)  # checked now: a bad spec is a usage error, before any cell
    except PersistError as error:  # a ConfigError, or a plug-in's PluginError
        raise pytest.UsageError(f"--persist-compute: {error}") from None
    return BenchSetup(profile, device, base, BATCH_SIZES[profile], rounds, skip_reason, strict, compute)
