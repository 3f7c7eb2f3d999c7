"""--compute emulated:SPEC: the deadline wait, the profiles and their sources, the trainer's K waits per load."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from persist.compute import (
    COMPUTE_PROFILES,
    PAPER_GTX1080TI,
    ComputeProfile,
    check_compute,
    named_profile,
    register_compute_profile,
)
from persist.config import RunConfig
from persist.errors import ConfigError, PersistError, PluginError
from persist.measure.clock import EmulatedClock
from persist.records import EpochRecord
from persist.training.emulated import DeadlineSleep, EmulatedStep, resolve_profile
from persist.training.trainer import Trainer


class LateSleeper:
    """A fake host clock whose sleep runs `late_s` past what it was asked, as an OS's sleep does."""

    def __init__(self, late_s: float):
        self.t, self.late_s, self.slept = 0.0, late_s, []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds + self.late_s


def test_the_wait_does_not_drift_whatever_the_gaps_between_steps():
    clock, step_s = LateSleeper(late_s=0.3e-3), 2e-3
    wait, busy = DeadlineSleep(step_s, now=clock.now, sleep=clock.sleep), 0.0
    for n in range(1000):
        clock.t += 1e-3 * (n % 7)  # the loader's gaps between steps, uneven
        start = clock.t
        wait()
        busy += clock.t - start
    # each oversleep is taken off the next wait: 1000 steps take 1000 x step_s plus the last oversleep only
    assert busy == pytest.approx(1000 * step_s + 0.3e-3, rel=1e-9)
    assert all(s == pytest.approx(step_s - 0.3e-3) for s in clock.slept[1:])


def test_a_naive_sleep_would_drift_and_the_wait_counts_from_the_clocks_stamp():
    clock = LateSleeper(late_s=0.3e-3)
    stamps = []
    wait = DeadlineSleep(2e-3, now=clock.now, sleep=clock.sleep, started=lambda: stamps[-1])
    stamps.append(clock.t)
    clock.t += 0.1e-3  # the host's own work between the clock's stamp and the wait
    wait()
    assert clock.t - stamps[-1] == pytest.approx(2e-3 + 0.3e-3)  # from the stamp, not from the wait's start
    clock.t += 5e-3
    wait()  # a stale stamp (from before the last wait ended) is not this step's: the wait counts from now
    assert clock.slept[-1] == pytest.approx(2e-3 - 0.3e-3)


def test_profiles_scale_with_m_and_name_their_source():
    h100 = COMPUTE_PROFILES.get("h100-resnet50")
    assert h100.step_s_at(400) == 0.224 and h100.step_s_at(200) == pytest.approx(0.112)
    assert "resnet50_h100.yaml" in h100.source and "mlcommons/storage" in h100.source
    a100 = COMPUTE_PROFILES.get("a100-resnet50-amp")
    assert a100.step_s_at(2470) == pytest.approx(1.0) and "DeepLearningExamples" in a100.source
    number = named_profile("12.5ms@256")
    assert number.step_s_at(256) == 0.0125 and number.step_s_at(128) == pytest.approx(0.00625)
    assert named_profile("0.5s@64").step_s == 0.5
    described = h100.describe(100)
    assert described["step_s_used"] == pytest.approx(0.056) and described["source"] == h100.source


def test_the_paper_profile_gives_back_the_papers_times():
    """700 s at K = 1 and 2,000 s at K = 5 over 100 epochs of 1,562.5 loads of m = 32, with a 2.40 ms load."""
    loads, step_s, load_s = 100 * 50_000 / 32, PAPER_GTX1080TI.step_s_at(32), 2.40e-3
    assert loads * (load_s + step_s) == pytest.approx(700, rel=0.01)
    assert loads * (load_s + 5 * step_s) == pytest.approx(2000, rel=0.01)
    assert (load_s + 5 * step_s) / (load_s + step_s) == pytest.approx(2.9, abs=0.05)
    assert "2.08 ms" in PAPER_GTX1080TI.source and "2.40 ms" in PAPER_GTX1080TI.source


MINE = ComputeProfile("my-gpu", "my GPU", "resnet18", 224, "bf16", 0.01, 128, "measured by me")


def test_profiles_extend_from_python_and_from_a_plugin(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1]))  # `tests` importable as a package, as users' code is
    register_compute_profile(MINE)
    try:
        assert RunConfig(compute="emulated:my-gpu").compute == "emulated:my-gpu"
    finally:
        COMPUTE_PROFILES.entries.pop("my-gpu")
        COMPUTE_PROFILES.helps.pop("my-gpu")
    assert named_profile("tests.test_emulated:MINE") == MINE  # package.module:attr, imported
    with pytest.raises(PluginError, match=r"expects a persist\.compute\.ComputeProfile"):
        check_compute("emulated:tests.test_emulated:LateSleeper")


@pytest.mark.parametrize(
    "compute, message",
    [
        ("fake", "compute='fake' is not allowed: use real, or emulated:NAME"),
        ("emulated:", "compute='emulated:' is not allowed"),
        ("emulated:0ms@256", "a step time > 0"),
    ],
)
def test_bad_compute_is_one_line(compute, message):
    with pytest.raises(ConfigError, match=message) as error:
        RunConfig(compute=compute)
    assert "\n" not in str(error.value)


def test_emulated_refuses_compile():
    with pytest.raises(ConfigError, match="compile=True is not allowed with compute='emulated:1ms@32'"):
        RunConfig(compute="emulated:1ms@32", compile=True)


def _run_folder(path, clock: str, compute: str = "real", steps: int = 100, compute_s: float = 0.5):
    path.mkdir()
    config = RunConfig(batch_size=64, compute=compute)
    manifest = {"config": config.as_dict(), "clock": clock, "device": "NVIDIA H100 80GB HBM3"}
    (path / "manifest.json").write_text(json.dumps(manifest))
    record = EpochRecord(
        1, 1.0, 0.1, compute_s, 0.1, 0.0, steps, steps, 64 * steps, 64 * steps, 1.0, 1.0, 0.5, clock, "x"
    )
    (path / "epochs.jsonl").write_text(json.dumps(record.as_dict()) + "\n")
    return path


def test_a_gpu_run_folder_gives_its_compute_per_step(tmp_path):
    folder = _run_folder(tmp_path / "h100", "cuda_events")
    profile = resolve_profile(RunConfig(compute=f"emulated:{folder}", batch_size=32))
    assert profile.step_s == pytest.approx(0.005) and profile.batch_size == 64
    assert profile.step_s_at(32) == pytest.approx(0.0025) and "500 steps" not in profile.source
    assert "100 steps of m = 64" in profile.source


@pytest.mark.parametrize(
    "clock, compute, message",
    [
        ("host", "real", "not on a GPU: its step time is no accelerator's"),
        ("emulated", "emulated:1ms@64", "was itself emulated"),
    ],
)
def test_a_cpu_or_emulated_run_folder_is_refused(tmp_path, clock, compute, message):
    folder = _run_folder(tmp_path / "run", clock, compute)
    with pytest.raises(ConfigError, match=message) as error:
        resolve_profile(RunConfig(compute=f"emulated:{folder}"))
    assert "\n" not in str(error.value)


def test_no_such_profile_or_folder_is_one_line(tmp_path):
    with pytest.raises(PersistError, match="neither a compute profile nor a persist run folder") as error:
        resolve_profile(RunConfig(compute=f"emulated:{tmp_path / 'nowhere'}"))
    assert "\n" not in str(error.value) and "h100-resnet50" in str(error.value)


class CountedWait:
    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1


@pytest.mark.parametrize("k", [1, 3])
def test_k_uses_of_a_load_wait_k_times_and_train_nothing(tiny_config, tiny_data, k):
    config = replace(tiny_config, compute="emulated:1ms@32", persistency=k, epochs=1)
    trainer = Trainer(config, tiny_data)
    try:
        assert isinstance(trainer.step, EmulatedStep) and trainer.clock.name == "emulated"
        trainer.step.wait = waits = CountedWait()
        before = [p.detach().clone() for p in trainer.model.parameters()]
        record = trainer.run_epoch(1)
    finally:
        trainer.close()
    assert waits.calls == record.steps == k * record.loads == k * 8
    assert all((a == b).all() for a, b in zip(before, trainer.model.parameters(), strict=True))  # no update
    assert math.isnan(record.train_loss) and math.isnan(record.test_acc) and record.eval_s == 0.0
    assert record.clock == "emulated"


def test_per_epoch_emulated_compute_is_within_1_percent_of_steps_times_step_time(tiny_config, tiny_data):
    """Real host sleeps: 8 loads x K = 4 of 5 ms, twice."""
    config = replace(tiny_config, compute="emulated:5ms@32", persistency=4, epochs=2)
    trainer = Trainer(config, tiny_data)
    try:
        records = [trainer.run_epoch(epoch) for epoch in (1, 2)]
    finally:
        trainer.close()
    for record in records:
        assert record.steps == 32
        assert record.compute_s == pytest.approx(record.steps * 5e-3, rel=0.01)
        assert record.wall_s >= record.compute_s


def test_auto_decides_on_the_emulated_step(tiny_config, tiny_data):
    config = replace(tiny_config, compute="emulated:1ms@32", persistency=4, adaptive=True, epochs=1)
    trainer = Trainer(config, tiny_data)
    try:
        record = trainer.run_epoch(1)
    finally:
        trainer.close()
    assert sum(record.uses_per_load.values()) == record.loads and record.loads <= record.steps <= 4 * record.loads
    assert sum(int(k) * n for k, n in record.uses_per_load.items()) == record.steps


def test_the_emulated_clock_is_the_host_clock_named_emulated():
    ticks = iter([1.0, 3.5, 4.0, 6.0])
    clock = EmulatedClock(now=lambda: next(ticks))
    clock.begin_epoch(2)
    assert clock.last_start() is None
    clock.step_start()
    assert clock.last_start() == 1.0
    clock.step_end()
    clock.step_start()
    clock.step_end()
    times = clock.resolve()
    assert clock.name == "emulated" and times.compute_s == 4.5 and times.gpu_idle_s == 0.5


@pytest.mark.gpu
def test_on_cuda_the_emulated_step_is_timed_by_the_host_clock_and_does_not_drift(tiny_config, tiny_data):
    config = replace(tiny_config, compute="emulated:5ms@32", persistency=2, epochs=1, device="cuda")
    trainer = Trainer(config, tiny_data)
    try:
        record = trainer.run_epoch(1)
    finally:
        trainer.close()
    assert record.clock == "emulated" and trainer.clock.stream is not None  # it waits for the training stream
    assert record.compute_s == pytest.approx(record.steps * 5e-3, rel=0.01)
    assert record.data_stall_s == record.data_wait_s  # no device timeline: the host's wait, as on a CPU


def test_each_epoch_starts_its_wait_afresh_and_counts_from_the_clocks_stamps():
    from persist.training.emulated import emulate

    step, clock = emulate(1e-3, torch.device("cpu"), None)
    assert isinstance(clock, EmulatedClock) and step.wait.started == clock.last_start
    step.wait.late_s = 0.5  # an oversleep at the end of the last epoch
    clock.begin_epoch(4)
    assert step.wait.late_s == 0.0  # not carried into the new epoch's compute
    injected = EmulatedStep(1e-3, torch.device("cpu"))
    other, given = emulate(1e-3, torch.device("cpu"), clock=FakeStepClock())
    assert isinstance(given, FakeStepClock) and other.wait.started is None and injected.wait.started is None


class FakeStepClock:
    name = "fake"
