"""Clocks (CUDA events or the host clock), the background NVML sampler, and one epoch's measurement over them."""

from persist.measure.clock import CudaEventClock, HostClock, NullClock, StepClock, make_clock, make_sync
from persist.measure.epoch import EpochMeasure, EpochTiming, MeasuredEpoch

__all__ = [
    "CudaEventClock",
    "EpochMeasure",
    "EpochTiming",
    "HostClock",
    "MeasuredEpoch",
    "NullClock",
    "StepClock",
    "make_clock",
    "make_sync",
]
