"""--compute emulated:SPEC in the trainer: the step that waits instead of training, and the profile a spec resolves to.

`EmulatedStep` has Trainer.step's interface, (x, y, loss_sum) -> the step's loss, so train_batch, --persistency auto
and the clocks are the same code for both: the K uses of a load wait K times. The wait sleeps on the host (it takes
no core from the loader, as DLIO's sleep does) to a deadline: each wait ends at its start plus the step time less what
the previous sleep overslept, so the oversleeps do not add up and an epoch's compute_s stays within a fraction of a
percent of steps x step time. On CUDA the device idles through the wait; the step clock is the host's
(measure/clock.py EmulatedClock).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from persist.compute import ComputeProfile, allowed_text, emulated_spec, named_profile
from persist.config import RunConfig
from persist.errors import ConfigError
from persist.measure.clock import EmulatedClock, StepClock
from persist.records import from_dict, read_manifest, read_records


class DeadlineSleep:
    """Waits `step_s` per call, to a deadline: the time the last sleep ran past its deadline is taken off the next
    wait, so n calls back to back take n x step_s plus one oversleep, however the loader's gaps fall between them.
    `started()`, where given, is the step clock's stamp of this step's start (EmulatedClock.last_start): the wait
    counts from it, so the host's own work between the stamp and the wait is inside the step time, not added to it.
    A stamp from before the last wait ended (another clock timed this step) is not this step's: the wait counts from
    now."""

    def __init__(
        self,
        step_s: float,
        now: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
        started: Callable[[], float | None] | None = None,
    ):
        self.step_s, self.now, self.sleep, self.started = step_s, now, sleep, started
        self.late_s = 0.0  # how far the last wait ran past its deadline (negative: it ended early)
        self.last_end = -math.inf

    def __call__(self) -> None:
        now = self.now()
        stamped = self.started() if self.started is not None else None
        start = stamped if stamped is not None and self.last_end <= stamped <= now else now
        deadline = start + self.step_s - self.late_s
        if deadline > now:
            self.sleep(deadline - now)  # the host sleeps: no core spins
        self.last_end = self.now()
        self.late_s = self.last_end - deadline

    def reset(self) -> None:
        """A new epoch: no oversleep is carried into it, so each epoch's compute holds its own last one only."""
        self.late_s = 0.0


class EmulatedStep:
    """Trainer.step for an emulated accelerator: one wait of the profile's step time, no forward, backward or update.
    The loss it returns is NaN on the device: nothing was trained."""

    def __init__(
        self,
        step_s: float,
        device: torch.device,
        wait: Callable[[], None] | None = None,
        started: Callable[[], float | None] | None = None,
    ):
        self.step_s = step_s
        self.wait = wait if wait is not None else DeadlineSleep(step_s, started=started)
        self.loss = torch.full((), math.nan, device=device)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, loss_sum: torch.Tensor) -> torch.Tensor:
        self.wait()
        return self.loss


def emulate(step_s: float, device: torch.device, clock: StepClock | None) -> tuple[EmulatedStep, StepClock]:
    """The trainer's emulated step and its step clock: an EmulatedClock unless one was given (tests inject theirs);
    the wait counts from that clock's stamps and starts each epoch afresh."""
    clock = clock if clock is not None else EmulatedClock(device)
    if not isinstance(clock, EmulatedClock):
        return EmulatedStep(step_s, device), clock
    step = EmulatedStep(step_s, device, started=clock.last_start)
    clock.on_begin_epoch.append(step.wait.reset)
    return step, clock


def resolve_profile(config: RunConfig) -> ComputeProfile | None:
    """The profile of config.compute (None: real compute), a run folder's read now."""
    spec = emulated_spec(config.compute)
    if spec is None:
        return None
    return named_profile(spec) or run_profile(spec, config.compute)


def run_profile(folder: str, compute: str) -> ComputeProfile:
    """The compute per step of a persist run recorded on a GPU: its finished epochs' compute_s over their steps, at
    its batch size. An emulated run (its step time is its profile's: name that) and a CPU run (a CPU's step time, not
    an accelerator's) are refused, each in one line."""
    path = Path(folder)
    manifest = read_manifest(path) if path.is_dir() else None
    if manifest is None:
        raise ConfigError(
            f"compute={compute!r}: {folder!r} is neither a compute profile nor a persist run folder (no manifest.json):"
            f" use {allowed_text()}"
        )
    run = from_dict(manifest["config"])
    records = read_records(path)
    if run.compute != "real" or manifest.get("clock") == "emulated":
        raise ConfigError(f"compute={compute!r}: {folder} was itself emulated ({run.compute}); name its profile")
    if manifest.get("clock") != "cuda_events" or any(r.clock != "cuda_events" for r in records):
        raise ConfigError(
            f"compute={compute!r}: {folder} ran on {manifest.get('device', 'a CPU')} (clock "
            f"{manifest.get('clock')!r}), not on a GPU: its step time is no accelerator's"
        )
    steps = sum(r.steps for r in records)
    if not steps:
        raise ConfigError(f"compute={compute!r}: {folder} has no finished epoch to take a step time from")
    step_s = sum(r.compute_s for r in records) / steps
    source = (
        f"the persist run {path.resolve()} on {manifest.get('device')}: {sum(r.compute_s for r in records):.3f} s of "
        f"compute over {steps} steps of m = {run.batch_size} ({run.model}, {run.precision})"
    )
    return ComputeProfile(
        str(folder),
        str(manifest.get("device")),
        run.model,
        run.image_size,
        run.precision,
        step_s,
        run.batch_size,
        source,
    )
