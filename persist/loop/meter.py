"""persist.Meter: the trainer's measurements, inside a user's own training loop, written as a persist run folder.

    meter = persist.Meter("runs/mine", device=device, config={"model": "resnet50", "batch_size": 256})
    for epoch in range(1, epochs + 1):
        with meter.epoch(epoch):
            for (x, y), use in persist.reuse(meter.timed(loader), k=2, schedule="linear"):
                with meter.step(samples=len(y)) as step:
                    ...forward, backward, optimizer step...
                    step.loss(loss)                    # kept on the device: no sync
        meter.evaluate(test_acc=acc, test_loss=test_loss)

Per epoch, as docs/clocks.md defines them for the trainer: wall_s (host clock, device synchronized at both ends),
data_wait_s (host time inside the loader's next(), start-up included), compute_s and gpu_idle_s (step clock: CUDA
events on a GPU resolved once per epoch, the host clock elsewhere), NVML sampled in the background on a GPU.
"""

from __future__ import annotations

import atexit
import math
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

import torch

from persist.errors import ConfigError, PersistError
from persist.loop.handles import EpochSums, Step, Timed
from persist.loop.record import (
    LOADER_KINDS,
    check_new_folder,
    check_user_config,
    loader_kind,
    write_meter_manifest,
)
from persist.measure import EpochMeasure, EpochTiming, MeasuredEpoch, StepClock
from persist.measure.machine import device_name
from persist.measure.nvml import Sampler
from persist.records import EpochRecord, EvalRecord, append_meter_line, append_record


class Meter:
    """Measures a user's training loop and writes it to `out` as a persist run folder (see persist/loop/record.py).

    device: where the model trains (None: CUDA if available, else the CPU); it picks the step clock and NVML.
    config: the user's description of the run, a JSON-able dict; keys that are RunConfig field names (batch_size,
    persistency, lr_schedule, seed, dataset, model, ...) fill the analysis columns, the rest is kept as given.
    loader: "async" (it prefetches while the model computes) or "sync"; None: inferred from what meter.timed wraps
    (DataLoader num_workers > 0 or DALI: async; num_workers == 0: sync). `persist whatif` models it.
    clock, sampler, now: injected in tests; by default the device's step clock, NVML on CUDA, time.perf_counter."""

    def __init__(
        self,
        out: str | Path,
        device: torch.device | str | None = None,
        config: dict | None = None,
        *,
        loader: str | None = None,
        clock: StepClock | None = None,
        sampler: Sampler | None = None,
        now: Callable[[], float] = time.perf_counter,
    ):
        if loader is not None and loader not in LOADER_KINDS:
            raise ConfigError(f"loader={loader!r} is not allowed: choose one of {', '.join(LOADER_KINDS)} (or None)")
        self.out = Path(out)
        self.device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
        self.user_config = check_user_config(config)
        self.declared_loader = loader
        self.out.mkdir(parents=True, exist_ok=True)
        check_new_folder(self.out)
        # the epoch's measurement (persist/measure/epoch.py), the same engine persist's trainer uses
        self.measure = EpochMeasure(self.device, clock=clock, sampler=sampler, now=now)
        self.clock, self.now = self.measure.clock, now
        self.seen: dict = {"loader": loader, "epochs": 0}  # what the manifest's derived columns come from
        self.totals = {"fresh_samples": 0, "sample_steps": 0, "steps": 0, "train_s": 0.0}
        self._current: EpochSums | None = None
        self._pending: dict | None = None  # the last epoch's record, waiting for its evaluation
        self._last_number, self._last_steps, self._ended_at = 0, 0, None
        self._closed, self._stopped = False, None
        self._write_manifest("running")
        atexit.register(self.close)  # a script that never calls close() still gets its last epoch written

    # the loop's pieces ------------------------------------------------------------------------------------------

    @contextmanager
    def epoch(self, number: int):
        """One training epoch (numbered from 1, increasing). The device is synchronized at both ends; the record is
        written when meter.evaluate() follows, or when the next epoch starts, or at close()."""
        if self._current is not None:
            raise PersistError(f"meter.epoch({number}) inside meter.epoch({self._current.number}): epochs do not nest")
        if isinstance(number, bool) or not isinstance(number, int) or number <= self._last_number:
            raise ConfigError(
                f"meter.epoch({number!r}) is not allowed: number epochs from 1, each above the last "
                f"({self._last_number})"
            )
        self._flush()
        try:
            # CUDA events are made before the loop, as many as the last epoch's steps
            with self.measure.epoch(self._last_steps) as timing:
                current = self._current = EpochSums(number, timing)
                yield current
        except BaseException as error:
            self._current = None
            self._stopped = f"stopped in epoch {number}: {type(error).__name__}: {error}"
            self._write_manifest(self._stopped)
            raise
        self._current = None
        self._end_epoch(current, timing.measured)

    def timed(self, iterable: Iterable) -> Timed:
        """`iterable` with each next() timed as data wait (the first includes iter(), where workers start)."""
        kind, details = loader_kind(iterable, self.declared_loader)
        self.seen.update(loader=kind, loader_details=details)
        return Timed(self, iterable)

    @contextmanager
    def step(self, samples: int):
        """One optimizer step on `samples` examples: timed on the step clock (CUDA events, no sync, on a GPU)."""
        current = self._require_epoch("meter.step()")
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            raise ConfigError(f"samples={samples!r} is not allowed: the step's number of examples, an integer >= 0")
        with current.timing.step():
            yield Step(current, samples)
        current.steps += 1
        current.sample_steps += samples
        loads = current.timing.loads
        if loads != current.loads_stepped or loads == 0:  # the first use of a loaded batch (or no timed loader)
            current.fresh_samples += samples
            current.loads_stepped = loads
        self.seen["batch_size"] = max(self.seen.get("batch_size") or 0, samples)

    def evaluate(self, test_acc: float | None = None, test_loss: float | None = None, eval_s: float | None = None):
        """A row of evals.jsonl (and the test figures of the epoch just ended). After an epoch, eval_s defaults to
        the host time since it ended; inside one, the host time since the last step or fetch is taken as the
        evaluation and left out of the epoch's wall_s. Returns the EvalRecord."""
        acc, loss = _number("test_acc", test_acc), _number("test_loss", test_loss)
        current, totals = self._current, self.totals
        if current is not None:  # in the middle of an epoch: the gap since the loop was last active is evaluation
            gap, train_s = current.timing.pause_since_active()  # out of wall_s, and not device idle time
            row = EvalRecord(
                current.number, totals["fresh_samples"] + current.fresh_samples,
                totals["sample_steps"] + current.sample_steps, totals["steps"] + current.steps,
                totals["train_s"] + train_s, loss, acc, gap if eval_s is None else eval_s,
            )  # fmt: skip
        else:
            spent = 0.0 if self._ended_at is None else self.now() - self._ended_at
            row = EvalRecord(
                self._last_number, totals["fresh_samples"], totals["sample_steps"], totals["steps"],
                totals["train_s"], loss, acc, spent if eval_s is None else eval_s,
            )  # fmt: skip
            if self._pending is not None:
                self._pending.update(test_acc=acc, test_loss=loss, eval_s=row.eval_s)
        append_record(self.out, row)
        self._flush()
        return row

    def close(self) -> None:
        """Write the last epoch's record and mark the run finished; safe to call twice (atexit calls it too)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._flush()
        self._write_manifest(self._stopped or "finished")
        self.measure.close()

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # internals --------------------------------------------------------------------------------------------------

    def _require_epoch(self, what: str) -> EpochSums:
        if self._current is None:
            raise PersistError(f"{what} outside `with meter.epoch(n):`: steps and fetches belong to an epoch")
        return self._current

    def _fetch_timing(self) -> EpochTiming:  # where meter.timed's fetches are timed: the current epoch's
        return self._require_epoch("a fetch from meter.timed(...)").timing

    def _end_epoch(self, current: EpochSums, measured: MeasuredEpoch) -> None:
        # deliberate sync, once per epoch: the loss summed on the device
        loss_sum = math.nan if current.loss_sum is None else current.loss_sum.item()
        loads = measured.loads or current.steps  # no timed loader: every step had its own batch
        self._pending = {
            "epoch": current.number, **measured.record_fields(), "eval_s": math.nan,
            "loads": loads, "steps": current.steps, "fresh_samples": current.fresh_samples,
            "sample_steps": current.sample_steps, "train_loss": loss_sum / max(1, current.sample_steps),
            "test_loss": math.nan, "test_acc": math.nan, "device": device_name(self.device),
        }  # fmt: skip
        append_meter_line(
            self.out,
            {"epoch": current.number, "first_wait_s": measured.first_wait_s, "fetches": measured.loads,
             "loader": self.seen.get("loader"), "paused_s": measured.paused_s},
        )  # fmt: skip
        for key in ("fresh_samples", "sample_steps", "steps"):
            self.totals[key] += getattr(current, key)
        self.totals["train_s"] += measured.wall_s
        self._last_number, self._last_steps, self._ended_at = current.number, current.steps, self.now()
        self.seen.update(
            epochs=self.seen["epochs"] + 1, loads=loads, steps=current.steps, fresh_samples=current.fresh_samples
        )

    @property
    def last_epoch(self) -> EpochRecord | None:
        """The last finished epoch as it will be recorded; its line reaches epochs.jsonl only when its evaluation
        comes (meter.evaluate), the next epoch starts, or at close()."""
        return EpochRecord(**self._pending) if self._pending is not None else None

    def _flush(self) -> None:
        if self._pending is not None:
            append_record(self.out, EpochRecord(**self._pending))
            self._pending = None
            self._write_manifest(self._stopped or ("finished" if self._closed else "running"))

    def _write_manifest(self, status: str) -> None:
        write_meter_manifest(self.out, self.seen, self.user_config, self.device, self.clock.name, status)


def _number(name: str, value) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)  # a tensor is read here: the user's evaluation is over
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{name}={value!r} is not allowed: give a number (or None)") from error
