"""The device, decided once per run: which one, what it is called, and whether its kernels must be deterministic."""

from __future__ import annotations

import os

import torch

from persist.config import RunConfig
from persist.errors import ConfigError
from persist.training.dist import DistContext
from persist.training.precision import check_precision


def resolve_device(spec: str, dist: DistContext | None = None) -> torch.device:
    """The run's device, decided once, with its index on CUDA. It also becomes the process's current CUDA device, so
    that events, streams and tensors made on "cuda" with no index land on cuda:N (N != 0), not on cuda:0."""
    device = _decide_device(spec, dist)
    if device.type == "cuda":
        if device.index is None:  # "auto": the current device (0 unless something set another)
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def check_runs_here(config: RunConfig, dist: DistContext | None = None) -> None:
    """Refuse, before any folder is made, what cannot run on this machine: a device it lacks, or a precision its
    device lacks (tf32 on a CPU). The Trainer checks both again where it decides the device."""
    check_precision(config.precision, resolve_device(config.device, dist))


def _decide_device(spec: str, dist: DistContext | None) -> torch.device:
    if dist is not None and dist.enabled and spec in ("auto", "cuda") and dist.backend == "nccl":
        return torch.device("cuda", dist.local_rank)  # torchrun: one GPU per local rank
    if dist is not None and dist.enabled and spec.startswith("cuda:"):
        raise ConfigError(f"device={spec!r} would put every rank on one GPU: use --device cuda with torchrun")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = device.index or 0
        if index >= count:
            raise ConfigError(
                f"device={spec!r} does not exist: this machine has {count} CUDA device(s); use cpu or auto"
            )
        return torch.device("cuda", index)
    return device


def set_determinism(device: torch.device, deterministic: bool, cudnn_benchmark: bool = False) -> dict:
    """What --deterministic asks of the device, done once per process before the first kernel; returns what was set.

    On CUDA: deterministic cuDNN algorithms (no autotuning), torch's deterministic-algorithms mode, and cuBLAS's
    fixed workspace (CUBLAS_WORKSPACE_CONFIG, read when its first handle is made). On a CPU the kernels persist uses
    are deterministic already, so nothing is set."""
    if device.type != "cuda":
        return {"requested": deterministic, "applied": False, "why": "cpu kernels are deterministic already"}
    if not deterministic:
        if cudnn_benchmark:  # --cudnn-benchmark: per process, before the first convolution
            torch.backends.cudnn.benchmark = True
        return {"requested": False, "applied": False, "cudnn_benchmark": torch.backends.cudnn.benchmark}
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True)
    return {
        "requested": True,
        "applied": True,
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
        "cublas_workspace_config": os.environ["CUBLAS_WORKSPACE_CONFIG"],
    }
