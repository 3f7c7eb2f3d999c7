import contextlib
from functools import partial

import pytest
import torch

from persist.measure.clock import HostClock, NullClock, StepTimes, make_clock, sum_intervals


def test_host_clock_sums_steps_and_gaps():
    # steps at [1,3], [4,8], [10,11]: busy 2+4+1 = 7, idle (3->4) + (8->10) = 3
    clock = HostClock(now=partial(next, iter([1.0, 3.0, 4.0, 8.0, 10.0, 11.0])))
    clock.begin_epoch(steps=3)
    for _ in range(3):
        clock.step_start()
        clock.step_end()
    assert clock.resolve() == StepTimes(compute_s=7.0, gpu_idle_s=3.0, steps=3)


def test_begin_epoch_forgets_the_previous_epoch():
    clock = HostClock(now=partial(next, iter([0.0, 1.0, 5.0, 5.5])))
    clock.begin_epoch(1)
    clock.step_start(), clock.step_end()
    clock.begin_epoch(1)
    clock.step_start(), clock.step_end()
    assert clock.resolve() == StepTimes(0.5, 0.0, 1)


def test_unbalanced_steps_are_an_error():
    with pytest.raises(RuntimeError, match="2 step starts but 1 step ends"):
        sum_intervals([0.0, 1.0], [0.5], lambda a, b: b - a)


def test_null_clock_times_nothing():
    clock = NullClock()
    clock.begin_epoch(3)
    clock.step_start()
    clock.step_end()
    assert clock.resolve().steps == 0


def _fake_cuda(monkeypatch) -> dict:
    """torch.cuda.Event as CUDA has it: the event itself is made on its first record(), on the current device. The
    returned state lists every event made, as (phase, device), and holds the phase and time the test sets."""
    state = {"made": [], "phase": "setup", "device": None, "time": 0.0}

    class Event:
        def __init__(self, enable_timing: bool = False):
            self.created, self.at = False, None

        def record(self, stream=None) -> None:
            if not self.created:
                self.created = True
                state["made"].append((state["phase"], state["device"]))
            state.setdefault("streams", []).append(stream)
            state["time"] += 1.0
            self.at = state["time"]

        def synchronize(self) -> None:
            pass

        def elapsed_time(self, end) -> float:
            return (end.at - self.at) * 1000  # ms, as CUDA reports it

    @contextlib.contextmanager
    def device(index):
        previous, state["device"] = state["device"], index
        yield
        state["device"] = previous

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: ("stream", device))
    monkeypatch.setattr(torch.cuda, "device", device)
    return state


def test_cuda_event_clock_makes_its_events_on_its_device_before_the_timed_steps(monkeypatch):
    cuda = _fake_cuda(monkeypatch)
    clock = make_clock(torch.device("cuda", 1))
    for _ in range(2):  # two epochs: the second reuses the first one's events
        cuda["phase"] = "begin_epoch"
        clock.begin_epoch(steps=3)
        cuda["phase"] = "steps"
        for _ in range(3):
            clock.step_start()
            clock.step_end()
        times = clock.resolve()
        assert times.steps == 3 and times.compute_s == pytest.approx(3.0) and times.gpu_idle_s == pytest.approx(2.0)
    # made once (2 per step, 1 per load, one load per step at most, and the last fetch), none inside the timed loop
    assert cuda["made"] == [("begin_epoch", torch.device("cuda", 1))] * (6 + 4)
    assert set(cuda["streams"]) == {("stream", torch.device("cuda", 1))}  # the run device's stream, every time
