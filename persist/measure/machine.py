"""What machine a result came from: package versions, the device's name, the CPU, and a device id for baselines.

Every manifest and every bench file records this, so that no figure is read without its machine.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

import torch

from persist.measure.nvml import import_pynvml


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def versions() -> dict:
    found = {
        "python": platform.python_version(),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    for package in ("persist", "torch", "torchvision", "numpy", "nvidia-dali-cuda120", "nvidia-ml-py"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_id(device: torch.device) -> str:
    """What a timing baseline belongs to: the GPU's name, or the CPU's model and core count ("cpu" alone is not
    one machine)."""
    return device_name(device) if device.type == "cuda" else f"cpu {cpu_model()} x{os.cpu_count()}"


def math_settings() -> dict:
    """What decides float32 math and kernel choice on CUDA: TF32 for matmuls and cuDNN convolutions, cuDNN's
    autotuning (benchmark) and determinism. Read through torch's fp32_precision API where it exists (torch >= 2.9;
    "none" inherits the parent setting, and at the top means torch's default: IEEE matmuls, TF32 convolutions); the
    older allow_tf32 flags are read only where it is missing, since newer torch warns about them."""
    cudnn = torch.backends.cudnn
    settings = {
        "cudnn_benchmark": bool(cudnn.benchmark),
        "cudnn_deterministic": bool(cudnn.deterministic),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }
    conv = getattr(cudnn, "conv", None)
    if conv is not None and hasattr(torch.backends, "fp32_precision"):
        return {
            "tf32_api": "fp32_precision",
            "fp32_precision": torch.backends.fp32_precision,
            "matmul_fp32_precision": torch.backends.cuda.matmul.fp32_precision,
            "cudnn_fp32_precision": cudnn.fp32_precision,
            "cudnn_conv_fp32_precision": conv.fp32_precision,
            **settings,
        }
    return {
        "tf32_api": "allow_tf32",
        "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(cudnn.allow_tf32),
        **settings,
    }


def machine_info(device: torch.device) -> dict:
    """Versions plus what the accelerator is: name, driver and CUDA (or why there is none), and its math settings."""
    info = {**versions(), "cpu_count": os.cpu_count(), "device": device_name(device), "device_id": device_id(device)}
    info["math"] = math_settings()  # TF32 and cuDNN autotuning: they change GPU speed (and digits)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu_name=props.name, gpu_memory_bytes=props.total_memory, gpu_sm_count=props.multi_processor_count)
        pynvml, info["nvml_import_warnings"] = import_pynvml()
        try:
            if pynvml is None:
                raise ImportError("nvidia-ml-py is not installed")
            pynvml.nvmlInit()
            info["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception as error:  # no NVML: say so rather than guess
            info["driver"] = f"unknown (NVML: {error})"
    else:
        info["gpu_name"] = f"none (device {device.type}; CUDA available: {torch.cuda.is_available()})"
    return info
