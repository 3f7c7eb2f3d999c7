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

On CUDA the clock also records an event at the start of each load (`load_start`, before each fetch of a batch; a
fetch that brings none is dropped at `load_end`), resolved with the step events. data_stall_s is the device's side of
data wait: for each step that follows a load, the gap on the training stream from the previous step's end to that
step's start (from the load's start event for the epoch's first step, or after a pause). The gaps between uses of
the same batch are not in it. On the CPU the host clock has no timeline apart from the host: data_stall_s is None
there, and the epoch takes the host's data wait for it.
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
    data_stall_s: float | None = None  # device idle before the first step after each load; None: no device timeline


class StepClock(Protocol):
    name: str

    def begin_epoch(self, steps: int) -> None: ...

    def step_start(self) -> None: ...

    def step_end(self) -> None: ...

    def pause(self) -> None: ...  # training stops here for a while: the next gap is not device idle time

    def load_start(self) -> None: ...  # a fetch of the next batch begins

    def load_end(self, loaded: bool = True) -> None: ...  # it ended; loaded=False: it brought no batch (the end)

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


def sum_stalls(
    starts: Sequence,
    ends: Sequence,
    loads: Sequence[tuple[object, int]],
    elapsed_s: Callable[[object, object], float],
    breaks: frozenset[int] = frozenset(),
) -> float:
    """The data stall: for each load, given as (its start stamp, the index of the step after it), the gap from the
    previous step's end to that step's start; from the load's own start for the first step or after a pause (the
    device was idle there). A load with no step after it (the epoch's last fetch) stalls nothing; a step after
    several loads counts its gap once."""
    stall_s, seen = 0.0, set()
    for load_start, step in loads:
        if step >= len(starts) or step in seen:
            continue
        seen.add(step)
        since = load_start if step == 0 or step in breaks else ends[step - 1]
        stall_s += max(0.0, elapsed_s(since, starts[step]))
    return stall_s


def _elapsed_s(start: torch.cuda.Event, end: torch.cuda.Event) -> float:
    return start.elapsed_time(end) / 1000  # CUDA reports ms


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

    def load_start(self) -> None:
        """Nothing to stamp: on the host clock a load's wait is the data stall itself (data_stall_s = data_wait_s)."""

    def load_end(self, loaded: bool = True) -> None:
        """As load_start: the host clock has no device timeline to mark."""

    def resolve(self) -> StepTimes:
        return sum_intervals(self.starts, self.ends, lambda a, b: b - a, frozenset(self.breaks))


class EmulatedClock(HostClock):
    """The step clock of --compute emulated: the host clock, since the step is a host wait and a CUDA event pair
    around it would time an idle device (two events back to back, about 0 s). On CUDA each step first waits for the
    training stream (the batch's copy, a gather), as a real step's kernels queue behind them: that wait lands in the
    gap before the step, as it does on the CUDA event clock, and the device idles through the step itself."""

    name = "emulated"

    def __init__(self, device: torch.device | None = None, now: Callable[[], float] = time.perf_counter):
        super().__init__(now)
        self.stream = torch.cuda.current_stream(device) if device is not None and device.type == "cuda" else None
        self.on_begin_epoch: list[Callable[[], None]] = []  # the emulated step's wait starts each epoch afresh

    def begin_epoch(self, steps: int) -> None:
        super().begin_epoch(steps)
        for call in self.on_begin_epoch:
            call()

    def step_start(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()  # deliberate sync: the emulated step starts when the batch is on the device
        self.starts.append(self.now())

    def last_start(self) -> float | None:
        """The last step's start stamp: the emulated step's wait counts from it (training/emulated.py)."""
        return self.starts[-1] if self.starts else None


class CudaEventClock:
    name = "cuda_events"

    def __init__(self, device: torch.device | None = None):
        self.device = device  # None: the current device
        self.pool: list[torch.cuda.Event] = []
        self.used = 0
        self.load_pool: list[torch.cuda.Event] = []  # one start event per load
        self.loads: list[tuple[int, int]] = []  # (load_pool index of its start, index of the step after it)

    def begin_epoch(self, steps: int) -> None:
        # Events are made before the epoch starts, so the timed loop only records them. torch.cuda.Event creates its
        # CUDA event lazily, on its first record(): each new one is recorded once here, on the run's device.
        with torch.cuda.device(self.device) if self.device is not None else contextlib.nullcontext():
            for pool, count in ((self.pool, 2 * steps), (self.load_pool, steps + 1)):  # at most a load per step
                while len(pool) < count:
                    pool.append(torch.cuda.Event(enable_timing=True))
                    pool[-1].record(torch.cuda.current_stream(self.device))
        self.used, self.breaks, self.loads = 0, set(), []

    def _record(self, pool: list, index: int) -> None:
        if index == len(pool):  # more steps or loads than announced: grow rather than fail
            pool.append(torch.cuda.Event(enable_timing=True))
        # the run's device's current stream, not the current device's: a Meter on cuda:1 without set_device
        pool[index].record(torch.cuda.current_stream(self.device))

    def step_start(self) -> None:
        self._record(self.pool, self.used)
        self.used += 1

    step_end = step_start

    def pause(self) -> None:
        self.breaks.add(self.used // 2)

    def load_start(self) -> None:
        # stamped before the fetch; the step after it is the next one to start
        self._record(self.load_pool, len(self.loads))
        self.loads.append((len(self.loads), self.used // 2))

    def load_end(self, loaded: bool = True) -> None:
        # the stall is measured up to the next step's start event: the end needs no event of its own
        if not loaded and self.loads:
            self.loads.pop()

    def resolve(self) -> StepTimes:
        events = self.pool[: self.used]
        if events:
            events[-1].synchronize()  # deliberate sync: once per epoch, after the last step
        times = sum_intervals(events[0::2], events[1::2], _elapsed_s, frozenset(self.breaks))
        if not self.loads:  # the caller fetched nothing through the clock: no stall to tell
            return times
        loads = [(self.load_pool[i], step) for i, step in self.loads]
        stall_s = sum_stalls(events[0::2], events[1::2], loads, _elapsed_s, frozenset(self.breaks))
        return StepTimes(times.compute_s, times.gpu_idle_s, times.steps, stall_s)


class NullClock:
    """Times nothing; used to measure what the clock itself costs."""

    name = "none"

    def begin_epoch(self, steps: int) -> None:
        pass

    def step_start(self) -> None:
        pass

    step_end = step_start
    pause = step_start
    load_start = step_start

    def load_end(self, loaded: bool = True) -> None:
        pass

    def resolve(self) -> StepTimes:
        return StepTimes(float("nan"), float("nan"), 0)


def make_clock(device: torch.device) -> StepClock:
    return CudaEventClock(device) if device.type == "cuda" else HostClock()


def make_sync(device: torch.device) -> Callable[[], None]:
    """The device is decided once: a real synchronize on CUDA, a no-op on the CPU."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None
