"""Per-step timing that names its clock: CUDA events on a GPU, the host clock on the CPU.

On CUDA every step records two events (start of forward, end of optimizer step) on the run device's current stream,
and nothing waits for them; `resolve()` synchronizes once, at the end of the epoch, and reads all the intervals.
compute_s is the sum of the step intervals, gpu_idle_s the sum of the gaps between one step's end and the next one's
start.
On the CPU the work is synchronous, so the host clock at the same two points gives the same two sums.

gpu_idle_s is "not in a training step", not "no kernel running": on CUDA the gaps also hold whatever the stream runs
between steps, such as the preloaded pipeline's gather and normalize kernels (and its crop-flip), and the
host-to-device copies queued between steps (torchvision's batches, the crop parameters). A gap is device idle time
plus the loading work on the training stream; NVML's utilization counts the second as busy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class StepTimes:
    compute_s: float
    gpu_idle_s: float
    steps: int


class StepClock(Protocol):
    name: str

    def begin_epoch(self, steps: int) -> None: ...

    def step_start(self) -> None: ...

    def step_end(self) -> None: ...

    def pause(self) -> None: ...  # training stops here for a while: the next gap is not device idle time

    def resolve(self) -> StepTimes: ...


def sum_intervals(
    starts: Sequence, ends: Sequence, elapsed_s: Callable[[object, object], float], breaks: frozenset[int] = frozenset()
) -> StepTimes:
    """Busy time (start_i -> end_i) and idle time (end_i -> start_i+1), for any kind of time stamp. A gap before a
    step index in `breaks` is not idle time: training was paused there (an evaluation inside the epoch)."""
    if len(starts) != len(ends):
        raise RuntimeError(f"clock saw {len(starts)} step starts but {len(ends)} step ends")
    compute_s = sum(elapsed_s(s, e) for s, e in zip(starts, ends, strict=True))
    gaps = zip(ends[:-1], starts[1:], strict=True)
    gpu_idle_s = sum(elapsed_s(e, s) for i, (e, s) in enumerate(gaps, start=1) if i not in breaks)
    return StepTimes(compute_s, gpu_idle_s, len(starts))


class HostClock:
    name = "host"

    def __init__(self, now: Callable[[], float] = time.perf_counter):
        self.now = now
        self.starts: list[float] = []
        self.ends: list[float] = []

    def begin_epoch(self, steps: int) -> None:
        self.starts, self.ends, self.breaks = [], [], set()

    def step_start(self) -> None:
        self.starts.append(self.now())

    def step_end(self) -> None:
        self.ends.append(self.now())

    def pause(self) -> None:
        self.breaks.add(len(self.starts))

    def resolve(self) -> StepTimes:
        return sum_intervals(self.starts, self.ends, lambda a, b: b - a, frozenset(self.breaks))


class CudaEventClock:
    name = "cuda_events"

    def __init__(self, device: torch.device | None = None):
        self.device = device  # None: the current device
        self.pool: list[torch.cuda.Event] = []
        self.used = 0

    def begin_epoch(self, steps: int) -> None:
        # Events are made before the epoch starts, so the timed loop only records them. torch.cuda.Event creates its
        # CUDA event lazily, on its first record(): each new one is recorded once here, on the run's device.
        with torch.cuda.device(self.device) if self.device is not None else contextlib.nullcontext():
            while len(self.pool) < 2 * steps:
                self.pool.append(torch.cuda.Event(enable_timing=True))
                self.pool[-1].record(torch.cuda.current_stream(self.device))
        self.used, self.breaks = 0, set()

    def _record(self) -> None:
        if self.used == len(self.pool):  # more steps than announced: grow rather than fail
            self.pool.append(torch.cuda.Event(enable_timing=True))
        # the run's device's current stream, not the current device's: a Meter on cuda:1 without set_device
        self.pool[self.used].record(torch.cuda.current_stream(self.device))
        self.used += 1

    step_start = _record
    step_end = _record

    def pause(self) -> None:
        self.breaks.add(self.used // 2)

    def resolve(self) -> StepTimes:
        events = self.pool[: self.used]
        if events:
            events[-1].synchronize()  # deliberate sync: once per epoch, after the last step
        return sum_intervals(events[0::2], events[1::2], lambda a, b: a.elapsed_time(b) / 1000, frozenset(self.breaks))


class NullClock:
    """Times nothing; used to measure what the clock itself costs."""

    name = "none"

    def begin_epoch(self, steps: int) -> None:
        pass

    def step_start(self) -> None:
        pass

    step_end = step_start
    pause = step_start

    def resolve(self) -> StepTimes:
        return StepTimes(float("nan"), float("nan"), 0)


def make_clock(device: torch.device) -> StepClock:
    return CudaEventClock(device) if device.type == "cuda" else HostClock()


def make_sync(device: torch.device) -> Callable[[], None]:
    """The device is decided once: a real synchronize on CUDA, a no-op on the CPU."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None
