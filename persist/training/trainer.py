"""The training loop: epochs -> loads -> K uses of each loaded batch (`train_batch`) -> evaluation.

The trainer never asks which pipeline it has. Per epoch it measures, as docs/clocks.md defines them: wall_s (host clock,
device synchronized at both ends), data_wait_s (host time blocked on the pipeline), compute_s and gpu_idle_s (from the
step clock: CUDA events on a GPU, resolved once per epoch; the host clock on the CPU). Loss and accuracy accumulate on
the device, so nothing waits for the GPU inside the loop.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from persist.config import RunConfig
from persist.data import ImageData, Pipeline, load_dataset
from persist.data.augment import Reaugment
from persist.data.base import Normalizer
from persist.data.images import DeviceImages
from persist.data.pipelines import make_pipeline
from persist.errors import DivergedError, PersistError, PipelineError
from persist.measure import EpochMeasure, EpochTiming, StepClock
from persist.measure.machine import device_name
from persist.measure.nvml import Sampler
from persist.records import EpochRecord, EvalRecord
from persist.training.adaptive import Prefetcher, StepDone, train_while_late, uses_histogram
from persist.training.counters import RunCounters
from persist.training.device import resolve_device, set_determinism
from persist.training.dist import DistContext
from persist.training.emulated import emulate, resolve_profile
from persist.training.evaluation import counted, evaluate
from persist.training.models import make_model
from persist.training.optim import PaperSGD, set_lr
from persist.training.precision import Precision, warm_up_compile
from persist.training.schedules import Use, counts, uses


class Trainer:
    """Model, paper-form optimizer, pipeline and clocks for one run; `train_epoch` and `evaluate` do the work."""

    def __init__(
        self,
        config: RunConfig,
        data: ImageData | None = None,
        *,
        clock: StepClock | None = None,
        sampler: Sampler | None = None,
        now: Callable[[], float] = time.perf_counter,
        dist: DistContext | None = None,
    ):
        self.config = config
        self.dist = dist or DistContext()
        self.device = resolve_device(config.device, self.dist)
        # before any kernel runs: --deterministic or --cudnn-benchmark
        self.determinism = set_determinism(self.device, config.deterministic, config.cudnn_benchmark)
        # the run's normalization applies whatever data were handed in: every pipeline reads data.mean/std
        self.data = (data if data is not None else load_dataset(config)).normalized(config.normalization)
        n, world = len(self.data.train_y), self.dist.world_size
        self.dist.check_fits(config, n)
        self.pipeline: Pipeline = make_pipeline(config, self.data, self.device, self.dist.rank, world)
        # --reuse reaugment: each use of a batch gets its own crop-flip from the seed, on the device, in the step
        self.reaugment = Reaugment(config, Normalizer(self.data, self.device), self.dist.rank, world)
        self.test = DeviceImages(self.data.test_x, self.data.test_y, self.data, self.device)
        # autocast, gradient scaler and memory layout (persist/training/precision.py); refuses what cannot run here
        self.precision = Precision(config.precision, self.device, config.channels_last)
        model = make_model(
            config.model, self.data.num_classes, self.data.image_shape, config.seed, self.device, config.width
        )
        self.model = self.precision.model(model)  # the model itself, unwrapped: what a checkpoint saves, eval runs
        self._forward = self.dist.wrap(self.model, self.device)  # DDP with several ranks: what training calls
        self.optimizer = PaperSGD(self.model.parameters(), lr=config.lr, momentum=config.momentum)
        self.compile_s = self._compile() if config.compile else None  # timed on its own, inside no epoch
        self.uses: list[Use] = uses(config.persistency, config.lr_schedule, config.lr)  # the K uses of a batch
        self.step_done = StepDone(self.device)  # --persistency auto: has the device finished the queued step?
        self.emulated = resolve_profile(config)  # --compute emulated: the accelerator's ComputeProfile; None: real
        if self.emulated is not None:  # the same train_batch and clocks: each use waits instead of training
            self.step, clock = emulate(self.emulated.step_s_at(config.batch_size), self.device, clock)
        # the epoch's measurement (persist/measure/epoch.py), the same engine a Meter around a user's loop uses
        self.measure = EpochMeasure(self.device, clock=clock, sampler=sampler, now=now)
        self.clock, self.sync, self.now = self.measure.clock, self.measure.sync, now
        self.counts = counts(n, config.batch_size * world, config.persistency)  # global: every rank's samples
        # the loss is summed per example in either reduction, so train_loss reads the same for sum and mean
        self.loss_scale = 1.0 if config.loss_reduction == "sum" else float(config.batch_size)
        # DDP averages gradients over ranks; the paper's gradient is the sum over the (global) minibatch
        self.grad_scale = float(world) if config.loss_reduction == "sum" else 1.0
        # cumulative counts, evaluation on a cadence of fresh (global) samples, and the budget
        self.counters = RunCounters(config.eval_every or max(1, n // 4), config.budget_s, config.budget_sample_steps)
        self.resume_from, self.budget_met = self.counters.add_records, self.counters.budget_met
        self.eval_record = self.counters.eval_record
        self.on_eval_batch: Callable[[int, int], None] | None = None  # (images evaluated, of) while evaluating

    def step(self, x: torch.Tensor, y: torch.Tensor, loss_sum: torch.Tensor) -> torch.Tensor:
        """One SGD step: forward, loss, backward, paper-form momentum update; adds the step's summed per-example loss
        to `loss_sum` and returns it, on the device. No host sync."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(x, y)
        self.precision.backward_and_step(loss * self.grad_scale if self.grad_scale != 1 else loss, self.optimizer)
        summed = loss.detach() * self.loss_scale if self.loss_scale != 1 else loss.detach()
        loss_sum.add_(summed)
        return summed

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The training loss of a batch, under the run's autocast and memory layout; float32 out."""
        with self.precision.autocast():
            logits = self._forward(self.precision.inputs(x))
        return F.cross_entropy(logits.float(), y, reduction=self.config.loss_reduction)

    def _compile(self) -> float:
        """torch.compile the training forward, and make one forward+backward at the training batch's shape, so it
        compiles before any epoch starts; weights, statistics and momentum are restored after it
        (precision.warm_up_compile). Returns the compile's seconds."""
        self._forward = torch.compile(self._forward)
        c, h, w = self.data.image_shape
        x = torch.zeros(self.config.batch_size, c, h, w, device=self.device)
        y = torch.zeros(self.config.batch_size, dtype=torch.int64, device=self.device)
        self._forward.train()
        return warm_up_compile(lambda x, y: self._loss(x, y).backward(), self.model, self.optimizer, x, y)

    def describe_compute(self) -> dict:
        """Precision, layout and compilation as the manifest records them (compile_s: seconds, outside any epoch)."""
        described = {**self.precision.describe(), "compile": self.config.compile, "compile_s": self.compile_s}
        return {**described, "emulated": self.emulated.describe(self.config.batch_size) if self.emulated else None}

    def train_batch(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        epoch: int,
        load: int,
        loss_sum: torch.Tensor,
        *,
        uses: list[Use] | None = None,
        clock: StepClock | None = None,
        on_step: Callable[[Use, torch.Tensor], bool] | None = None,
    ) -> int:
        """Minibatch persistency, written once: the K uses of one loaded batch (load `load` of `epoch`, 0-based), each
        with its schedule's lr and, under --reuse reaugment, its own crop-flip, each timed on `clock` (the run's by
        default). The epoch loop, `persist stability` and the health trace all train through here. `uses` narrows it
        to some of the K (--persistency auto steps one use at a time). `on_step(use, loss)` runs after each step and
        may return True to stop; returns the number of steps taken."""
        clock = self.clock if clock is None else clock
        uses = self.uses if uses is None else uses
        for use in uses:
            set_lr(self.optimizer, use.lr)
            clock.step_start()
            loss = self.step(self.reaugment(x, epoch, load, use.k), y, loss_sum)
            clock.step_end()
            if on_step is not None and on_step(use, loss):
                return uses.index(use) + 1
        return len(uses)

    def _train_load(self, batch, epoch: int, load: int, loss_sum: torch.Tensor, source) -> tuple[int, float]:
        """The uses of one loaded batch: all K (the paper's persistency) or, under --persistency auto, one and then
        another only while the next batch is late, up to the cap (training/adaptive.py). Returns (uses, seconds the
        host waited for the device's queued step to learn whether the next batch had come: device wait)."""
        if not self.config.adaptive:
            return self.train_batch(*batch, epoch, load, loss_sum), 0.0

        def one_use(use: Use) -> None:
            self.train_batch(*batch, epoch, load, loss_sum, uses=[use])
            self.step_done.record()

        return train_while_late(one_use, self.uses, source.ready, self.step_done, self.now)

    def state_dict(self) -> dict:
        """What resumes training exactly: the unwrapped model's weights and the optimizer (momentum included)."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    def train_epoch(
        self,
        epoch: int,
        on_load: Callable[[int], None] | None = None,
        on_eval: Callable[[EvalRecord], None] | None = None,
    ) -> dict:
        """Train one epoch (1-based), reusing each loaded batch for K steps; return its timings and counts.

        With `on_eval`, the model is evaluated whenever the run's fresh samples pass the next multiple of
        eval_every inside the epoch (the epoch's end is run_epoch's), with every training clock stopped."""
        self._forward.train()
        loss_sum = torch.zeros((), device=self.device)
        steps, uses_per_load, spent, batches = 0, [], False, None
        global_m = self.config.batch_size * self.dist.world_size
        try:
            with self.measure.epoch(self.counts["steps"]) as timing:
                batches = iter(self.pipeline.epoch(epoch))
                if self.config.adaptive:  # whatever the pipeline prefetches, a queue that can be asked without waiting
                    batches = Prefetcher(batches, device=self.device)  # on CUDA, loads on a stream of its own
                while (batch := timing.fetch(lambda: self._next_batch(batches, epoch, timing.loads))) is not None:
                    load = timing.loads - 1  # 0-based: the batch just fetched
                    used, waited_s = self._train_load(batch, epoch, load, loss_sum, batches)  # minibatch persistency
                    steps += used
                    timing.add_device_wait(waited_s)  # the device was busy: no data wait
                    uses_per_load.append(used)
                    if on_load is not None:
                        on_load(timing.loads)
                    spent = self.budget_met(steps * global_m, timing.train_s())
                    if spent:  # the epoch ends here; run_epoch evaluates at this point
                        break
                    fresh = self.counters.seen["fresh_samples"] + timing.loads * global_m
                    if on_eval is not None and fresh >= self.counters.next_eval and timing.loads < len(self.pipeline):
                        self._evaluate_inside(epoch, timing, steps, batches, on_eval)
        finally:
            if self.config.adaptive and batches is not None:
                batches.close()  # the prefetch thread stops
        measured, loads = timing.measured, timing.loads
        self.counters.add(loads * global_m, steps * global_m, steps, measured.wall_s)
        # deliberate sync, once per epoch; with several ranks the loss is first summed over them. Emulated: no loss
        train_loss = math.nan if self.emulated else self.dist.sum_(loss_sum).item() / max(1, steps * global_m)
        # A non-finite loss is returned, not raised: a training run stops on it (run_epoch), a timing loop records it.
        return {
            "epoch": epoch,
            **measured.record_fields(),
            "loads": loads,
            "steps": steps,
            "fresh_samples": loads * global_m,
            "sample_steps": steps * global_m,
            "train_loss": train_loss,
            "dist": self.dist.epoch_summary(measured.data_wait_s, measured.compute_s, self.model, self.device),
            "budget_met": spent,
            "uses_per_load": uses_histogram(uses_per_load) if self.config.adaptive else {},
        }

    def _evaluate_inside(self, epoch: int, timing: EpochTiming, steps: int, batches, on_eval) -> None:
        """Evaluate in the middle of an epoch with the training clocks stopped (and, under --persistency auto, the
        prefetcher: no load starts on a stopped clock). Every rank pauses at the same load (the counts are global),
        rank 0 evaluates, the others wait."""
        global_m = self.config.batch_size * self.dist.world_size
        fresh, sample_steps = timing.loads * global_m, steps * global_m
        with batches.paused() if self.config.adaptive else contextlib.nullcontext(), timing.paused() as train_s:
            on_eval(self.eval_record(epoch, self.evaluate(), fresh, sample_steps, steps, train_s))
            self.dist.barrier()
            self._forward.train()

    def _next_batch(self, batches, epoch: int, loads: int):
        try:
            return next(batches, None)
        except PersistError:
            raise
        except Exception as error:  # a dead worker or a broken source: one line, finished epochs stay on disk
            raise PipelineError(
                f"{self.pipeline.name} pipeline failed loading batch {loads + 1} of epoch {epoch}: "
                f"{type(error).__name__}: {error}"
            ) from error

    def evaluate(self) -> dict:
        """Mean per-example test loss and top-1 accuracy, timed on its own (on rank 0 only: it writes the records)."""
        if not self.dist.is_main or self.emulated is not None:  # emulated compute trained nothing: no evaluation
            return {"test_loss": math.nan, "test_acc": math.nan, "eval_s": 0.0}
        self.sync()  # deliberate sync: keep training's queued work out of eval_s
        start = self.now()
        # the unwrapped model: evaluation needs no collective; under the run's autocast and memory layout
        batches = ((self.precision.inputs(x), y) for x, y in self.test.in_order(self.config.eval_batch_size))
        if self.on_eval_batch is not None:
            batches = counted(batches, len(self.test), self.on_eval_batch)
        with self.precision.autocast():
            test_loss, test_acc = evaluate(self.model, batches, len(self.test))
        return {"test_loss": test_loss, "test_acc": test_acc, "eval_s": self.now() - start}

    def check_finite(self, trained: dict) -> None:
        if not math.isfinite(trained["train_loss"]) and self.emulated is None:  # emulated: NaN, nothing trained
            raise DivergedError(
                f"train loss became {trained['train_loss']} in epoch {trained['epoch']} (lr={self.config.lr}, "
                f"schedule {self.config.lr_schedule}, K={self.config.persistency}): the run diverged; "
                "use a smaller --lr"
            )

    def run_epoch(
        self,
        epoch: int,
        on_load: Callable[[int], None] | None = None,
        on_eval: Callable[[EvalRecord], None] | None = None,
    ) -> EpochRecord:
        """Train and evaluate one epoch. With `on_eval`, the epoch's end is an evaluation point too (the counts are
        those after the epoch, already added by train_epoch)."""
        on_eval = on_eval if self.emulated is None else None  # emulated compute trained nothing: no evaluation
        trained = self.train_epoch(epoch, on_load, on_eval)
        self.check_finite(trained)
        evaluated = self.evaluate()
        if on_eval is not None:
            on_eval(self.eval_record(epoch, evaluated))
        self.dist.barrier()  # the next epoch starts together, not while rank 0 is still evaluating
        return EpochRecord(**trained, **evaluated, device=device_name(self.device))

    def close(self) -> None:
        self.pipeline.close()
        self.measure.close()
        self._forward = self.model  # release DDP (and its reducer's hold on the process group) before teardown
