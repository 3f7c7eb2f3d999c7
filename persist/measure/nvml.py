"""GPU sampling through NVML (nvidia-ml-py, imported as pynvml), in a background thread during each epoch.

Utilization comes from the driver's own sample buffer (nvmlDeviceGetSamples) read once at the end of the epoch, with
polling of nvmlDeviceGetUtilizationRates as the fallback. The driver averages utilization over windows of 1/6 s to
1 s, so an epoch shorter than that has few meaningful utilization samples: every figure carries its sample count.
Memory (peak), power (mean), SM clock (mean) and PCIe rx/tx (mean) are polled; energy is the difference of the
board's total-energy counter. PCIe throughput is read rarely (every `pcie_every` polls, about once a second; or never):
each of its two queries samples the bus for 20 ms, and the sampler's thread must stay out of the epoch's way. With no
NVML or no GPU the summary says why, and nothing fails.
"""

from __future__ import annotations

import statistics
import threading
import time
import warnings
from typing import Protocol

import torch

UTIL_WINDOW_NOTE = "NVML utilization is the busy fraction of a driver window of 1/6 s to 1 s"
MEAN_FIELDS = {  # polled series -> (its mean's field, its sample count's field) in the summary
    "util_pct": ("util_mean_pct", "util_samples"),
    "power_w": ("power_mean_w", "power_samples"),
    "sm_clock_mhz": ("sm_clock_mean_mhz", "sm_clock_samples"),
    "pcie_rx_kb_per_s": ("pcie_rx_mean_kb_per_s", "pcie_rx_samples"),
    "pcie_tx_kb_per_s": ("pcie_tx_mean_kb_per_s", "pcie_tx_samples"),
}


class Sampler(Protocol):
    def start(self) -> None: ...

    def stop(self) -> dict: ...

    def close(self) -> None: ...


class UnavailableSampler:
    """Records why there is no GPU sampling."""

    def __init__(self, reason: str):
        self.reason = reason

    def start(self) -> None:
        pass

    def stop(self) -> dict:
        return {"available": False, "reason": self.reason}

    def close(self) -> None:
        pass


PCIE_EVERY = 20  # polls per PCIe reading: once a second at the default 50 ms


def import_pynvml():
    """(pynvml or None, the warnings its import raised). nvidia-ml-py provides the module; the legacy `pynvml`
    package wraps it and warns with a FutureWarning on import. Such a warning is recorded, not raised: it says
    which package is installed, and it must not fail a run or a test suite that turns warnings into errors."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            import pynvml
        except ImportError:
            pynvml = None
    return pynvml, [f"{w.category.__name__}: {w.message}" for w in caught]


def open_sampler(device: torch.device, interval_s: float = 0.05, pcie_every: int = PCIE_EVERY) -> Sampler:
    if device.type != "cuda":
        return UnavailableSampler(f"no GPU sampling: the run is on {device.type}")
    pynvml, import_warnings = import_pynvml()
    noted = f" (import warned: {'; '.join(import_warnings)})" if import_warnings else ""
    if pynvml is None:
        return UnavailableSampler("no GPU sampling: nvidia-ml-py is not installed (pip install nvidia-ml-py)")
    try:
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByUUID(_uuid(device))
    except Exception as error:  # NVMLError subclasses, or a torch build that cannot name the UUID
        return UnavailableSampler(f"no GPU sampling: NVML failed: {error}{noted}")
    return NvmlSampler(pynvml, handle, interval_s, import_warnings=import_warnings, pcie_every=pcie_every)


def _uuid(device: torch.device) -> str:
    # CUDA and NVML can number devices differently (CUDA_VISIBLE_DEVICES); the UUID is the same in both.
    uuid = str(torch.cuda.get_device_properties(device).uuid)
    return uuid if uuid.startswith("GPU-") else f"GPU-{uuid}"


class NvmlSampler:
    """Polls every `interval_s` between start() and stop(), PCIe throughput only every `pcie_every` polls (0: never);
    stop() always joins the thread."""

    def __init__(
        self,
        nvml,
        handle,
        interval_s: float = 0.05,
        now=time.time,
        import_warnings: list[str] = (),
        pcie_every: int = PCIE_EVERY,
    ):
        self.nvml, self.handle, self.interval_s, self.now = nvml, handle, interval_s, now
        self.import_warnings = list(import_warnings)
        self.pcie_every, self.polls = pcie_every, 0
        self._polls = {
            "util_pct": lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu,
            "mem_used_bytes": lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used,
            "power_w": lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000,
            "sm_clock_mhz": lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM),
            "pcie_rx_kb_per_s": lambda: nvml.nvmlDeviceGetPcieThroughput(handle, nvml.NVML_PCIE_UTIL_RX_BYTES),
            "pcie_tx_kb_per_s": lambda: nvml.nvmlDeviceGetPcieThroughput(handle, nvml.NVML_PCIE_UTIL_TX_BYTES),
        }
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        self.values: dict[str, list[float]] = {name: [] for name in self._polls}
        self.unsupported: set[str] = set()
        self.polls = 0
        self.start_time_us = int(self.now() * 1e6)
        self.energy_start_mj = self._try(lambda: self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="persist-nvml", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.poll_once()
            if self._stop.wait(self.interval_s):
                return

    def poll_once(self) -> None:
        pcie = self.pcie_every > 0 and self.polls % self.pcie_every == 0  # the first poll, then rarely
        self.polls += 1
        for name, read in self._polls.items():
            if name.startswith("pcie_") and not pcie:
                continue
            if name not in self.unsupported:
                value = self._try(read)
                if value is None:
                    self.unsupported.add(name)
                else:
                    self.values[name].append(float(value))

    def _try(self, read):
        try:
            return read()
        except self.nvml.NVMLError:
            return None

    def stop(self) -> dict:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        energy_end_mj = self._try(lambda: self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        util, source = self._driver_util_samples(), "nvmlDeviceGetSamples"
        if not util:
            util, source = self.values["util_pct"], "polling"
        summary = {
            "available": True,
            "util_source": source,
            "util_note": UTIL_WINDOW_NOTE,
            **_describe("util_pct", util),
            "util_p50_pct": statistics.median(util) if util else None,
            "mem_used_peak_bytes": max(self.values["mem_used_bytes"], default=None),
            "mem_samples": len(self.values["mem_used_bytes"]),
        }
        for name in ("power_w", "sm_clock_mhz", "pcie_rx_kb_per_s", "pcie_tx_kb_per_s"):
            summary.update(_describe(name, self.values[name]))
        summary["energy_j"] = (
            None
            if self.energy_start_mj is None or energy_end_mj is None
            else (energy_end_mj - self.energy_start_mj) / 1000
        )
        summary["pcie_every_polls"] = self.pcie_every
        summary["unsupported"] = sorted(self.unsupported)
        if self.import_warnings:
            summary["import_warnings"] = self.import_warnings
        return summary

    def _driver_util_samples(self) -> list[float]:
        try:
            _, samples = self.nvml.nvmlDeviceGetSamples(
                self.handle, self.nvml.NVML_GPU_UTILIZATION_SAMPLES, self.start_time_us
            )
        except self.nvml.NVMLError:
            return []
        return [float(s.sampleValue.uiVal) for s in samples if s.timeStamp >= self.start_time_us]

    def close(self) -> None:
        if self._thread is not None:
            self.stop()


def _describe(name: str, values: list[float]) -> dict:
    mean_field, count_field = MEAN_FIELDS[name]
    return {mean_field: statistics.fmean(values) if values else None, count_field: len(values)}
