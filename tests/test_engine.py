"""One engine measures an epoch (persist/measure/epoch.py): its sums under a fake clock, and the trainer and a Meter
loop over the same work giving records of the same shape and counts."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import persist
from persist.data.pipelines import make_pipeline
from persist.measure import EpochMeasure, HostClock
from persist.measure.clock import StepTimes
from persist.measure.epoch import RECORD_FIELDS
from persist.records import EpochRecord, read_meter_lines, read_records
from persist.training.trainer import Trainer

NO_GPU = "no GPU sampling: the run is on cpu"


class RecordingClock(HostClock):
    """The host clock over a fake `now`, writing each call into a shared log."""

    def __init__(self, now, log: list):
        super().__init__(now=now)
        self.log = log

    def begin_epoch(self, steps: int) -> None:
        self.log.append("begin_epoch")
        super().begin_epoch(steps)

    def pause(self) -> None:
        self.log.append("pause")
        super().pause()

    def resolve(self) -> StepTimes:
        self.log.append("resolve")
        return super().resolve()


class RecordingSampler:
    def __init__(self, log: list):
        self.log = log

    def start(self) -> None:
        self.log.append("start")

    def stop(self) -> dict:
        self.log.append("stop")
        return {"available": False, "reason": "a test's sampler"}

    def close(self) -> None:
        self.log.append("close")


@pytest.fixture
def log():
    return []


@pytest.fixture
def measure(fake_clock, log):
    return EpochMeasure(
        clock=RecordingClock(fake_clock.now, log),
        sampler=RecordingSampler(log),
        sync=lambda: log.append("sync"),
        now=fake_clock.now,
    )


def sleeping(fake_clock, seconds: float, item):
    def take():
        fake_clock.sleep(seconds)
        return item

    return take


def test_data_wait_sums_the_fetches_and_keeps_the_first_apart(measure, fake_clock):
    """Fetches of 3, 1 and 1 s bring batches, the last (0.5 s) finds the end: data wait 5.5 s, first 3 s, 3 loads."""
    with measure.epoch(expected_steps=3) as timing:
        for wait_s in (3.0, 1.0, 1.0):
            assert timing.fetch(sleeping(fake_clock, wait_s, "batch")) == "batch"
            with timing.step():
                fake_clock.sleep(2.0)
        assert timing.fetch(sleeping(fake_clock, 0.5, None)) is None
        timing.add_wait(0.25)  # a wait measured elsewhere (the adaptive trainer's queue)
    m = timing.measured
    assert (m.data_wait_s, m.first_wait_s, m.loads) == pytest.approx((5.75, 3.0, 3))
    assert (m.wall_s, m.compute_s, m.gpu_idle_s) == pytest.approx((11.5, 6.0, 2.0))
    assert m.clock == "host" and m.paused_s == 0


def test_a_fetch_that_finds_the_end_first_leaves_no_first_wait(measure, fake_clock):
    with measure.epoch(0) as timing:
        assert timing.fetch(sleeping(fake_clock, 1.0, "end"), end="end") == "end"
    assert (timing.measured.first_wait_s, timing.measured.loads, timing.measured.data_wait_s) == (None, 0, 1.0)


def test_wall_s_and_device_idle_leave_the_pauses_out(measure, fake_clock, log):
    """Step 1 s, a 5 s pause (evaluation) with its own sync, step 1 s, then 2 s idle since the last step taken as a
    user's evaluation: wall 2 s, no device idle, 7 s paused; the training time so far is handed out at each pause."""
    with measure.epoch(2) as timing:
        with timing.step():
            fake_clock.sleep(1.0)
        with timing.paused() as train_s:
            assert train_s == pytest.approx(1.0) and log[-2:] == ["sync", "pause"]
            fake_clock.sleep(5.0)
        with timing.step():
            fake_clock.sleep(1.0)
        assert timing.train_s() == pytest.approx(2.0)
        fake_clock.sleep(2.0)
        gap_s, train_s = timing.pause_since_active()
        assert (gap_s, train_s) == pytest.approx((2.0, 2.0))
    m = timing.measured
    assert (m.wall_s, m.paused_s, m.compute_s, m.gpu_idle_s) == pytest.approx((2.0, 7.0, 2.0, 0.0))


def test_sync_at_both_ends_and_the_sampler_around_the_epoch(measure, log):
    with measure.epoch(0) as timing:
        assert log == ["begin_epoch", "start", "sync"]  # the epoch's clock starts on an idle device
    assert log == ["begin_epoch", "start", "sync", "sync", "stop", "resolve"]
    assert timing.measured.nvml == {"available": False, "reason": "a test's sampler"}
    measure.close()
    assert log[-1] == "close"


def test_the_sampler_stops_when_the_epoch_raises_and_nothing_is_measured(measure, log):
    with pytest.raises(RuntimeError, match="out of memory"), measure.epoch(4) as timing:
        raise RuntimeError("out of memory")
    assert log == ["begin_epoch", "start", "sync", "stop"]  # no end sync, no resolve
    assert timing.measured is None


def test_the_measured_part_names_epoch_record_fields(measure):
    with measure.epoch(0) as timing:
        pass
    record_fields = {f.name for f in dataclasses.fields(EpochRecord)}
    assert set(RECORD_FIELDS) <= record_fields
    assert timing.measured.record_fields().keys() == set(RECORD_FIELDS)


def train_through_a_meter(tmp_path, config, data, epochs: int) -> list[EpochRecord]:
    """A plain PyTorch loop over the preloaded pipeline's batches of `config`, with persist.reuse and the Meter."""
    data = data.normalized(config.normalization)
    device = torch.device("cpu")
    pipeline = make_pipeline(config, data, device)
    torch.manual_seed(config.seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(math.prod(data.image_shape), data.num_classes))
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    meter = persist.Meter(tmp_path / "meter", device=device, config=config.as_dict())
    try:
        for epoch in range(1, epochs + 1):
            with meter.epoch(epoch):
                batches = meter.timed(pipeline.epoch(epoch))
                for (x, y), use in persist.reuse(batches, k=config.persistency, schedule=config.lr_schedule):
                    for group in optimizer.param_groups:
                        group["lr"] = config.lr * use.lr_factor
                    with meter.step(samples=len(y)) as step:
                        optimizer.zero_grad(set_to_none=True)
                        loss = F.cross_entropy(model(x), y)
                        loss.backward()
                        optimizer.step()
                        step.loss(loss)
            meter.evaluate(test_acc=0.0, test_loss=0.0)
    finally:
        meter.close()
        pipeline.close()
    return read_records(tmp_path / "meter")


@pytest.mark.slow
def test_the_trainer_and_a_meter_loop_record_the_same_epochs(tmp_path, tiny_data, tiny_config):
    """The same work (256 samples, batches of 32, K=2, 2 epochs, preloaded, CPU) through persist's trainer and
    through a user's loop around a Meter: records with the same fields and counts, each timed by the same engine."""
    config = dataclasses.replace(tiny_config, pipeline="preloaded", persistency=2, lr_schedule="linear", epochs=2)
    trainer = Trainer(config, tiny_data)
    try:
        by_trainer = [trainer.run_epoch(epoch) for epoch in (1, 2)]
    finally:
        trainer.close()
    by_meter = train_through_a_meter(tmp_path, config, tiny_data, epochs=2)

    def counts(r: EpochRecord) -> tuple:
        return r.epoch, r.loads, r.steps, r.fresh_samples, r.sample_steps, r.clock, r.device

    assert (
        [counts(r) for r in by_trainer]
        == [counts(r) for r in by_meter]
        == [(epoch, 8, 16, 256, 512, "host", "cpu") for epoch in (1, 2)]
    )
    assert [r.as_dict().keys() for r in by_trainer] == [r.as_dict().keys() for r in by_meter]
    for r in by_trainer + by_meter:  # the host clock's intervals are disjoint and inside the epoch
        assert r.compute_s > 0 and r.data_wait_s >= 0 and r.data_wait_s + r.compute_s <= r.wall_s
        assert math.isfinite(r.train_loss) and r.nvml == {
            "available": False,
            "reason": "no GPU sampling: the run is on cpu",
        }
    lines = read_meter_lines(tmp_path / "meter")
    assert [(line["epoch"], line["fetches"], line["paused_s"]) for line in lines] == [(1, 8, 0.0), (2, 8, 0.0)]
    assert all(line["first_wait_s"] > 0 for line in lines)
