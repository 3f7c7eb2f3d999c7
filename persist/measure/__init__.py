"""Clocks (CUDA events or the host clock) and the background NVML sampler."""

from persist.measure.clock import CudaEventClock, HostClock, NullClock, StepClock, make_clock, make_sync

__all__ = ["CudaEventClock", "HostClock", "NullClock", "StepClock", "make_clock", "make_sync"]
