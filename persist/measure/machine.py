"""What machine a result came from: package versions, the device's name, the CPU, and a device id for baselines.

Every manifest and every bench file records this, so that no figure is read without its machine.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata

import torch


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


def machine_info(device: torch.device) -> dict:
    """Versions plus what the accelerator is: name, driver and CUDA (or why there is none)."""
    info = {**versions(), "cpu_count": os.cpu_count(), "device": device_name(device), "device_id": device_id(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu_name=props.name, gpu_memory_bytes=props.total_memory, gpu_sm_count=props.multi_processor_count)
        try:
            import pynvml

            pynvml.nvmlInit()
            info["driver"] = pynvml.nvmlSystemGetDriverVersion()
        except Exception as error:  # no NVML: say so rather than guess
            info["driver"] = f"unknown (NVML: {error})"
    else:
        info["gpu_name"] = f"none (device {device.type}; CUDA available: {torch.cuda.is_available()})"
    return info
