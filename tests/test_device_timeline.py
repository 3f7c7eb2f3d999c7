"""The device's timeline on CUDA, with fake events and streams: the data stall from step and load events, and
--persistency auto loading on a stream of its own, bound to the run's device."""

import contextlib
import json
import threading
from typing import ClassVar

import pytest
import torch

from persist.measure.clock import CudaEventClock, StepTimes
from persist.measure.epoch import EpochMeasure
from persist.records import EpochRecord, read_records
from persist.training import adaptive
from persist.training.adaptive import Prefetcher


class ScriptedEvent:
    """A CUDA event whose time on the device is what the test says when it is recorded (`timeline["at"]`)."""

    timeline: ClassVar[dict] = {"at": 0.0}

    def __init__(self, enable_timing: bool = False):
        self.at = None

    def record(self, stream=None) -> None:
        self.at = self.timeline["at"]

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end) -> float:
        return (end.at - self.at) * 1000  # ms, as CUDA reports it


@pytest.fixture
def scripted(monkeypatch):
    timeline = {"at": 0.0}
    monkeypatch.setattr(ScriptedEvent, "timeline", timeline)
    monkeypatch.setattr(torch.cuda, "Event", ScriptedEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: ("training", device))
    monkeypatch.setattr(torch.cuda, "device", lambda index: contextlib.nullcontext())
    clock = CudaEventClock(torch.device("cuda", 0))

    def at(t: float, mark) -> None:  # the device reaches `mark`'s event at t
        timeline["at"] = t
        mark()

    return clock, at


def test_the_stall_is_the_device_idle_from_the_previous_step_to_the_first_step_after_a_load(scripted):
    clock, at = scripted
    clock.begin_epoch(steps=2)
    at(0.0, clock.load_start), clock.load_end()
    at(0.0, clock.step_start), at(10.0, clock.step_end)
    at(11.0, clock.load_start), clock.load_end()  # the load's start on the device, inside the gap
    at(13.0, clock.step_start), at(20.0, clock.step_end)
    at(20.0, clock.load_start), clock.load_end(loaded=False)  # the epoch's last fetch: no batch, no stall
    times = clock.resolve()
    assert times.data_stall_s == pytest.approx(3.0)  # 10 -> 13, not 11 -> 13: the device idled from the step's end
    assert times.compute_s == pytest.approx(17.0) and times.gpu_idle_s == pytest.approx(3.0)


def test_the_first_load_stalls_from_its_start_and_reuse_gaps_are_no_stall(scripted):
    clock, at = scripted
    clock.begin_epoch(steps=4)
    at(1.0, clock.load_start), clock.load_end()
    at(3.0, clock.step_start), at(5.0, clock.step_end)  # first step: 2 s waiting for the first batch
    at(6.0, clock.step_start), at(8.0, clock.step_end)  # the same batch again (K=2): the 1 s gap is no data stall
    at(8.5, clock.load_start), clock.load_end()
    clock.pause()  # an evaluation here: the stall after it counts from the load's start, not the step's end
    at(30.0, clock.step_start), at(32.0, clock.step_end)
    times = clock.resolve()
    assert times.data_stall_s == pytest.approx(2.0 + (30.0 - 8.5))
    assert times.gpu_idle_s == pytest.approx(1.0)  # 5 -> 6; the gap across the pause is left out


def test_a_cuda_clock_that_saw_no_load_tells_no_stall(scripted):
    clock, at = scripted
    clock.begin_epoch(steps=1)
    at(0.0, clock.step_start), at(1.0, clock.step_end)
    assert clock.resolve().data_stall_s is None


class Steps:
    """A step clock that notes the marks it gets and resolves to a scripted stall."""

    name = "cuda_events"

    def __init__(self, data_stall_s):
        self.data_stall_s, self.marks = data_stall_s, []

    def begin_epoch(self, steps=0):
        pass

    def step_start(self):
        self.marks.append("step")

    step_end = pause = begin_epoch

    def load_start(self):
        self.marks.append("load")

    def load_end(self, loaded=True):
        self.marks.append(f"loaded={loaded}")

    def resolve(self):
        return StepTimes(4.0, 1.0, 2, self.data_stall_s)


class NoSampler:
    def start(self):
        pass

    def stop(self):
        return {}

    def close(self):
        pass


@pytest.mark.parametrize("stall", [0.25, None])
def test_the_epoch_reports_device_wait_and_the_stall_apart_from_the_host_data_wait(fake_clock, stall):
    clock = Steps(stall)
    measure = EpochMeasure(clock=clock, sampler=NoSampler(), sync=lambda: None, now=fake_clock.now)
    batches = iter([1, 2])

    def take():
        fake_clock.sleep(1.0)  # the host blocks 1 s in each fetch
        return next(batches, None)

    with measure.epoch(2) as timing:
        while timing.fetch(take) is not None:
            with timing.step():
                pass
        timing.add_device_wait(0.5)
    measured = timing.measured
    assert measured.data_wait_s == pytest.approx(3.0) and measured.device_wait_s == pytest.approx(0.5)
    # on CUDA the device's stall; with no device timeline (the CPU's host clock) the host's wait for the loads
    assert measured.data_stall_s == pytest.approx(stall if stall is not None else measured.data_wait_s)
    fields = measured.record_fields()
    assert {"device_wait_s", "data_stall_s"} <= set(fields)
    assert clock.marks == ["load", "loaded=True", "step", "load", "loaded=True", "step", "load", "loaded=False"]


def test_an_epoch_record_written_before_the_device_figures_still_loads(tmp_path):
    old = {
        "epoch": 1, "wall_s": 2.0, "data_wait_s": 0.5, "compute_s": 1.0, "gpu_idle_s": 0.5, "eval_s": 0.1,
        "loads": 4, "steps": 4, "fresh_samples": 128, "sample_steps": 128, "train_loss": 2.3, "test_loss": 2.3,
        "test_acc": 0.1, "clock": "cuda_events", "device": "fake",
    }  # fmt: skip
    (tmp_path / "epochs.jsonl").write_text(json.dumps(old) + "\n")
    (record,) = read_records(tmp_path)
    assert record == EpochRecord(**old) and record.data_stall_s is None and record.device_wait_s == 0.0


class FakeStream:
    def __init__(self, name):
        self.name, self.waited = name, []

    def wait_event(self, event):
        self.waited.append(event)


@pytest.fixture
def fake_cuda_streams(monkeypatch):
    """torch.cuda's streams as seen per thread: `stream(s)` makes s current in the calling thread only."""
    training = FakeStream("training")
    state = {"set_device": [], "made": [], "recorded": [], "record_stream": [], "local": threading.local()}

    def current_stream(device=None):
        return getattr(state["local"], "stream", training)

    @contextlib.contextmanager
    def stream(s):
        previous = current_stream()
        state["local"].stream = s
        try:
            yield
        finally:
            state["local"].stream = previous

    def make_stream(device=None):
        state["made"].append((FakeStream("loading"), device, threading.current_thread().name))
        return state["made"][-1][0]

    class Event:
        def record(self, s=None):
            state["recorded"].append((self, s))

    monkeypatch.setattr(
        torch.cuda, "set_device", lambda d: state["set_device"].append((d, threading.current_thread().name))
    )
    monkeypatch.setattr(torch.cuda, "Stream", make_stream)
    monkeypatch.setattr(torch.cuda, "stream", stream)
    monkeypatch.setattr(torch.cuda, "current_stream", current_stream)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(adaptive, "cuda_tensors", lambda batch: iter(batch))  # every tensor here counts as CUDA
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda t, s: state["record_stream"].append((t, s)))
    return training, state


def test_auto_loads_on_its_own_stream_on_the_runs_device_and_the_training_stream_waits_for_it(fake_cuda_streams):
    training, state = fake_cuda_streams
    device = torch.device("cuda", 1)
    loaded_on = []

    def batches():
        for i in range(2):
            loaded_on.append(torch.cuda.current_stream(device))  # where the pipeline's gather and copies go
            yield torch.full((2,), float(i)), torch.tensor([i])

    prefetcher = Prefetcher(batches(), device=device)
    got = list(prefetcher)
    prefetcher.close()
    ((loading, made_on, thread),) = state["made"]
    assert state["set_device"] == [(device, "persist-prefetch")]  # bound in the prefetch thread, before it loads
    assert made_on == device and thread == "persist-prefetch"
    assert loaded_on == [loading, loading] and loading is not training
    # one event per load, recorded on the loading stream after it; the training stream waits on each, in order
    # (and one after the fetch that found the end, which nothing waits on)
    assert [s for _, s in state["recorded"]] == [loading] * 3
    assert training.waited == [e for e, _ in state["recorded"][:2]]
    # every tensor of a batch is marked as used on the training stream
    marked = [(id(t), s) for t, s in state["record_stream"]]
    assert marked == [(id(t), training) for batch in got for t in batch]
    assert [float(x[0]) for x, _ in got] == [0.0, 1.0]


def test_on_a_cpu_the_prefetcher_touches_no_cuda(fake_cuda_streams):
    _, state = fake_cuda_streams
    assert list(Prefetcher(iter([1, 2]), device=torch.device("cpu"))) == [1, 2]
    assert state["set_device"] == state["made"] == state["recorded"] == []
