"""One epoch's measurement, written once: persist's trainer and the Meter around a user's loop both measure through it.

    measure = EpochMeasure(device)                        # the device's step clock, NVML sampler and sync
    with measure.epoch(expected_steps) as timing:         # sync, clock.begin_epoch, sampler started
        while (batch := timing.fetch(lambda: next(batches, None))) is not None:   # timed as data wait
            with timing.step(): ...                       # or measure.clock.step_start()/step_end() around it
            with timing.paused() as train_s: ...          # a mid-epoch evaluation: out of wall_s and device idle
    measured = timing.measured                            # MeasuredEpoch: wall_s, data_wait_s, compute_s, ...

As docs/clocks.md defines them: wall_s is the host clock from the epoch's start to its end, the device synchronized at
both ends, less the pauses; data_wait_s is the host time blocked in fetches (plus what a caller adds: the adaptive
trainer's wait for a batch when its cap is reached); device_wait_s is host time spent waiting for the device to
finish a queued step (the adaptive trainer asking whether to step again); compute_s, gpu_idle_s and data_stall_s
(the device idle before the first step after each load; on the CPU the host's data_wait_s) come from the step clock,
resolved once at the end.
The sampler stops however the epoch ends; the clock resolves only when it ends normally.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from persist.measure.clock import StepClock, make_clock, make_sync
from persist.measure.nvml import Sampler, open_sampler

# the EpochRecord fields an epoch's measurement fills (the counts, losses and evaluation are the caller's)
RECORD_FIELDS = ("wall_s", "data_wait_s", "device_wait_s", "data_stall_s", "compute_s", "gpu_idle_s", "clock", "nvml")


@dataclass(frozen=True)
class MeasuredEpoch:
    """What the measurement of one finished epoch found."""

    wall_s: float  # host clock, start to end, device synchronized at both ends, pauses left out
    data_wait_s: float  # host time blocked fetching (and any wait the caller added)
    compute_s: float  # step clock: sum of the steps
    gpu_idle_s: float  # step clock: sum of the gaps between steps, pauses left out
    clock: str  # the step clock's name: cuda_events | host
    nvml: dict = field(default_factory=dict)
    first_wait_s: float | None = None  # the first fetch that brought a batch (a loader's start-up included)
    loads: int = 0  # fetches that brought a batch
    paused_s: float = 0.0  # host time inside pauses (mid-epoch evaluations)
    device_wait_s: float = 0.0  # host time waiting for the device to finish a queued step (not for data)
    data_stall_s: float | None = None  # step clock: device idle before the first step after each load

    def record_fields(self) -> dict:
        """The measured part of an EpochRecord."""
        return {name: getattr(self, name) for name in RECORD_FIELDS}


class EpochTiming:
    """The running sums of the epoch in progress, handed out by `EpochMeasure.epoch`."""

    def __init__(self, measure: EpochMeasure, start: float):
        self._measure, self.start, self.last_active = measure, start, start
        self.data_wait_s, self.first_wait_s, self.paused_s, self.loads = 0.0, None, 0.0, 0
        self.device_wait_s = 0.0
        self.measured: MeasuredEpoch | None = None  # set when the epoch has ended normally

    def fetch(self, take: Callable[[], Any], end: Any = None) -> Any:
        """`take()` timed as data wait. A result other than `end` (the epoch's last fetch) counts as a load; the
        first such fetch's wait is also kept apart (first_wait_s). The step clock marks the load (on CUDA, an event)."""
        now, clock = self._measure.now, self._measure.clock
        clock.load_start()
        start = now()
        item = take()
        self.last_active = now()
        clock.load_end(item is not end)
        wait_s = self.last_active - start
        self.data_wait_s += wait_s
        if item is not end:
            self.loads += 1
            if self.first_wait_s is None:
                self.first_wait_s = wait_s
        return item

    def add_wait(self, seconds: float) -> None:
        """Data wait measured elsewhere."""
        self.data_wait_s += seconds

    def add_device_wait(self, seconds: float) -> None:
        """Host time spent waiting for the device to finish queued work (the adaptive trainer's next_ready): the
        device was busy, so it is no data wait."""
        self.device_wait_s += seconds

    @contextlib.contextmanager
    def step(self):
        """One training step on the step clock (CUDA events on a GPU: no sync)."""
        clock = self._measure.clock
        clock.step_start()
        try:
            yield
        finally:
            clock.step_end()
            self.last_active = self._measure.now()

    def train_s(self) -> float:
        """Host seconds of training so far (pauses left out); no device sync, so a GPU may still be behind."""
        return self._measure.now() - self.start - self.paused_s

    @contextlib.contextmanager
    def paused(self) -> Iterator[float]:
        """Training stops inside this block (an evaluation): the device first finishes what training queued, and
        the block's host time counts toward neither wall_s nor device idle time. Yields the training seconds so far."""
        measure = self._measure
        measure.sync()  # deliberate sync: training so far is finished before its clock stops
        paused_at = measure.now()
        measure.clock.pause()  # the gap across the pause is not device idle time
        try:
            yield paused_at - self.start - self.paused_s
        finally:
            self.last_active = measure.now()
            self.paused_s += self.last_active - paused_at

    def pause_since_active(self) -> tuple[float, float]:
        """Take the host time since the loop was last active (the end of a step or a fetch) as a pause that has just
        ended, with no sync: a user's evaluation done between steps. Returns (its seconds, training seconds so far)."""
        now = self._measure.now()
        gap_s = now - self.last_active
        self.paused_s += gap_s
        self.last_active = now
        self._measure.clock.pause()
        return gap_s, now - self.start - self.paused_s


class EpochMeasure:
    """The measurement of every epoch of one run on `device`: its step clock, NVML sampler, device sync and host
    clock (`now`). Each is made for the device unless given (tests inject fakes)."""

    def __init__(
        self,
        device: torch.device | None = None,
        *,
        clock: StepClock | None = None,
        sampler: Sampler | None = None,
        sync: Callable[[], None] | None = None,
        now: Callable[[], float] = time.perf_counter,
    ):
        device = torch.device("cpu") if device is None else device
        self.clock = clock if clock is not None else make_clock(device)
        self.sampler = sampler if sampler is not None else open_sampler(device)
        self.sync = sync if sync is not None else make_sync(device)
        self.now = now

    @contextlib.contextmanager
    def epoch(self, expected_steps: int) -> Iterator[EpochTiming]:
        """Measure the block as one training epoch; `expected_steps` lets a CUDA clock make its events beforehand.
        After a normal end the yielded timing's `measured` holds the result; on an exception the sampler is
        stopped and the exception goes on."""
        self.clock.begin_epoch(expected_steps)
        self.sampler.start()
        try:
            self.sync()  # deliberate sync: the epoch starts on an idle device
            timing = EpochTiming(self, self.now())
            yield timing
            self.sync()  # deliberate sync: the epoch ends when the device is done
            wall_s = self.now() - timing.start - timing.paused_s
        finally:
            nvml = self.sampler.stop()
        times = self.clock.resolve()
        timing.measured = MeasuredEpoch(
            wall_s=wall_s,
            data_wait_s=timing.data_wait_s,
            compute_s=times.compute_s,
            gpu_idle_s=times.gpu_idle_s,
            clock=self.clock.name,
            nvml=nvml,
            first_wait_s=timing.first_wait_s,
            loads=timing.loads,
            paused_s=timing.paused_s,
            device_wait_s=timing.device_wait_s,
            # no device timeline (the CPU): the host blocked in fetches is the device idle waiting for data
            data_stall_s=times.data_stall_s if times.data_stall_s is not None else timing.data_wait_s,
        )

    def close(self) -> None:
        self.sampler.close()
