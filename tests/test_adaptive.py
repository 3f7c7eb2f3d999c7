"""--persistency auto: step again on the batch in hand exactly while the next one is late, never beyond the cap."""

import json
import threading
import time
from dataclasses import replace

import pytest

from persist.cli import main
from persist.measure.clock import HostClock
from persist.training import trainer as trainer_module
from persist.training.adaptive import Prefetcher, next_ready, uses_histogram
from persist.training.trainer import Trainer

STEP_S = 1.0


class ScheduledSource:
    """A loader on the fake clock: batch i is ready at (i + 1) * load_s, the end with the last batch."""

    def __init__(self, batches, clock, load_s):
        self.batches, self.clock = list(batches), clock
        self.ready_at = [(i + 1) * load_s for i in range(len(self.batches))]
        self.next, self.closed, self.waited_s = 0, False, 0.0

    def ready(self) -> bool:
        due = self.ready_at[min(self.next, len(self.ready_at) - 1)]
        return self.clock.t >= due

    def __iter__(self):
        return self

    def __next__(self):
        if self.next == len(self.batches):
            raise StopIteration
        self.waited_s += max(0.0, self.ready_at[self.next] - self.clock.t)
        self.clock.t = max(self.clock.t, self.ready_at[self.next])  # wait for it
        self.next += 1
        return self.batches[self.next - 1]

    def close(self):
        self.closed = True


class LaggingDevice:
    """A StepDone for a device that finishes each queued step `lag_s` after the host's call returned; every look
    at it takes `poll_s` of host time."""

    def __init__(self, clock, lag_s, poll_s):
        self.clock, self.lag_s, self.poll_s = clock, lag_s, poll_s
        self.busy_until, self.looked_s = 0.0, 0.0

    def record(self):
        self.busy_until = self.clock.t + self.lag_s

    def __call__(self):
        self.clock.sleep(self.poll_s)
        self.looked_s += self.poll_s
        return self.clock.t >= self.busy_until


def _auto_epoch(tiny_data, tiny_config, fake_clock, monkeypatch, load_s, cap, step_done=None):
    config = replace(tiny_config, persistency=cap, adaptive=True)  # 256 images, m=32: 8 loads
    trainer = Trainer(config, tiny_data, clock=HostClock(now=fake_clock.now), now=fake_clock.now)
    if step_done is not None:
        trainer.step_done = step_done
    sources = []

    def scheduled(batches, **_options):
        sources.append(ScheduledSource(batches, fake_clock, load_s))
        return sources[-1]

    monkeypatch.setattr(trainer_module, "Prefetcher", scheduled)
    decisions, real_step = [], trainer.step

    def step(x, y, loss_sum):  # one step takes STEP_S; note whether the next batch had come when it started
        decisions.append(sources[0].ready())
        fake_clock.sleep(STEP_S)
        return real_step(x, y, loss_sum)

    trainer.step = step
    return trainer.train_epoch(1), decisions, sources[0]


def test_auto_steps_again_exactly_while_the_next_batch_is_late(tiny_data, tiny_config, fake_clock, monkeypatch):
    """Loads every 2.5 steps, cap 4: the batch in hand gets 3 uses, then 2 (the next one comes at 5.0, 7.5, ...),
    the last one 1 (nothing follows it); the only data wait is the first load."""
    stats, _, source = _auto_epoch(tiny_data, tiny_config, fake_clock, monkeypatch, load_s=2.5, cap=4)
    assert stats["uses_per_load"] == {"1": 1, "2": 3, "3": 4}
    assert stats["steps"] == 19 and stats["loads"] == 8 and source.closed
    assert stats["data_wait_s"] == pytest.approx(2.5) and stats["wall_s"] == pytest.approx(21.5)
    assert stats["compute_s"] == pytest.approx(19 * STEP_S) and stats["gpu_idle_s"] == pytest.approx(0)


def test_the_hosts_wait_for_a_busy_device_is_device_wait_not_data_wait(tiny_data, tiny_config, fake_clock, monkeypatch):
    """A device 0.5 s behind the host: asking whether to step again waits for it, and that time is device_wait_s;
    data_wait_s holds only the fetches' own waits for a batch."""
    device = LaggingDevice(fake_clock, lag_s=0.5, poll_s=0.125)
    stats, _, source = _auto_epoch(tiny_data, tiny_config, fake_clock, monkeypatch, 2.5, 4, step_done=device)
    assert device.looked_s > 1.0 and stats["device_wait_s"] == pytest.approx(device.looked_s)
    assert stats["data_wait_s"] == pytest.approx(source.waited_s)
    assert stats["data_stall_s"] == stats["data_wait_s"]  # the host clock: the CPU's stall is the host's wait


def test_auto_never_goes_beyond_its_cap(tiny_data, tiny_config, fake_clock, monkeypatch):
    """Cap 2 under the same loader: every load but the last gets exactly 2 uses, then waits 0.5 for the next."""
    stats, _, _ = _auto_epoch(tiny_data, tiny_config, fake_clock, monkeypatch, load_s=2.5, cap=2)
    assert stats["uses_per_load"] == {"1": 1, "2": 7}
    assert stats["data_wait_s"] == pytest.approx(2.5 + 7 * 0.5)


def test_with_no_delay_auto_takes_every_batch_once(tiny_data, tiny_config, fake_clock, monkeypatch):
    stats, decisions, _ = _auto_epoch(tiny_data, tiny_config, fake_clock, monkeypatch, load_s=0.0, cap=8)
    assert stats["uses_per_load"] == {"1": 8} and stats["steps"] == stats["loads"] == 8  # mean K = 1
    assert not any(decisions[1:]) or all(decisions)  # every step started with the next batch already there


def test_next_ready_waits_only_while_the_device_is_busy():
    """On CUDA the host asks again until the queued step is done; a missing batch then means "step again"."""
    clock, looks = {"t": 0.0}, []

    def step_done():
        looks.append(clock["t"])
        return len(looks) > 3  # the device finishes the step on the 4th look

    def pause():
        clock["t"] += 0.25

    ready, waited = next_ready(lambda: False, step_done, now=lambda: clock["t"], pause=pause)
    assert (ready, waited, looks) == (False, 0.75, [0.0, 0.25, 0.5, 0.75])
    assert next_ready(lambda: True, lambda: False)[0]


def test_the_prefetcher_queues_ahead_hands_errors_over_and_stops():
    gate = threading.Event()

    def batches():
        yield 1
        gate.wait(5)
        yield 2
        raise RuntimeError("loader died")

    prefetch = Prefetcher(batches(), depth=2)
    assert next(prefetch) == 1
    assert not prefetch.ready()  # the loader is stuck before batch 2
    gate.set()
    assert next(prefetch) == 2
    with pytest.raises(RuntimeError, match="loader died"):
        next(prefetch)
    endless = Prefetcher(iter(range(10**9)), depth=2)
    next(endless)
    endless.close()  # a budget ends the epoch early: the thread stops
    assert not endless._thread.is_alive()
    assert uses_histogram([2, 1, 2, 10]) == {"1": 1, "2": 2, "10": 1}


def test_a_paused_prefetcher_starts_no_load_until_resumed():
    """The trainer pauses it around a mid-epoch evaluation, when its clocks are stopped."""
    produced = []

    def batches():
        for i in range(6):
            produced.append(i)
            yield i

    prefetch = Prefetcher(batches(), depth=2)
    deadline = time.monotonic() + 5
    while len(produced) < 3 and time.monotonic() < deadline:  # 0 and 1 queued, 2 waiting for room
        time.sleep(0.01)
    with prefetch.paused():
        assert [next(prefetch), next(prefetch), next(prefetch)] == [0, 1, 2]
        time.sleep(0.3)  # room in the queue, and time to fill it
        assert produced == [0, 1, 2] and not prefetch.ready()
    assert list(prefetch) == [3, 4, 5]
    paused_forever = Prefetcher(batches(), depth=1)
    with paused_forever.paused():
        paused_forever.close()  # closing a paused prefetcher does not hang
    assert not paused_forever._thread.is_alive()


def test_an_auto_epoch_loads_nothing_while_it_evaluates(tiny_data, tiny_config):
    """Mid-epoch evaluations stop the training clocks; a load started there would be load time off the clock."""
    config = replace(tiny_config, persistency=4, adaptive=True, eval_every=64)  # 8 loads, an evaluation every 2
    trainer = Trainer(config, tiny_data)
    load_starts, evaluations = [], []
    epoch = trainer.pipeline.epoch

    def logged_epoch(number):
        for batch in epoch(number):
            load_starts.append(time.perf_counter())
            time.sleep(0.05)  # a slow load: steps consume the queue faster than it fills
            yield batch

    trainer.pipeline.epoch = logged_epoch
    real_evaluate = trainer.evaluate

    def slow_evaluate():
        start = time.perf_counter()
        time.sleep(0.2)  # room for 3 loads, were they allowed
        evaluations.append((start, time.perf_counter()))
        return real_evaluate()

    trainer.evaluate = slow_evaluate
    trainer.train_epoch(1, on_eval=lambda record: None)
    assert len(evaluations) == 3 and len(load_starts) == 8
    inside = [t for t in load_starts for start, end in evaluations if start + 0.03 < t < end]
    assert inside == []  # the load under way when a pause begins finishes; no other starts


def test_persist_train_auto_records_the_uses_per_load(tmp_path):
    out = tmp_path / "auto"
    args = ["train", "--train-size", "128", "--test-size", "32", "--width", "0.125", "-m", "32", "--device", "cpu"]
    assert main([*args, "-K", "auto:3", "--delay-ms", "5", "--quiet", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["adaptive"] and manifest["config"]["persistency"] == 3
    record = json.loads((out / "epochs.jsonl").read_text())
    histogram = {int(k): v for k, v in record["uses_per_load"].items()}
    assert sum(histogram.values()) == record["loads"] == 4 and max(histogram) <= 3
    assert sum(k * v for k, v in histogram.items()) == record["steps"]


def test_persist_reuse_auto_yields_a_batch_again_only_while_the_next_is_late():
    import time

    import persist

    gate = threading.Event()

    def loader():
        yield "a"
        gate.wait(5)  # the loader is stuck until the loop has used "a" as often as the cap allows
        yield "b"
        yield "c"

    seen = []
    for batch, use in persist.reuse(loader(), k="auto", cap=3):
        seen.append((batch, use.k))
        if (batch, use.k) == ("a", 3):
            gate.set()
        if (batch, use.k) == ("b", 1):
            time.sleep(0.2)  # by now "c" waits in the queue: "b" is not used again
    assert seen == [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1)]
    with pytest.raises(persist.ConfigError, match="cap=1 is not allowed"):
        persist.reuse([], k="auto", cap=1)


def test_the_prefetch_thread_runs_its_torch_ops_on_one_core_and_leaves_the_training_threads_alone():
    import torch

    before = torch.get_num_threads()
    seen = []

    def batches():
        seen.append(torch.get_num_threads())  # inside the prefetch thread
        yield 1

    assert list(Prefetcher(batches())) == [1]
    assert seen == [1] and torch.get_num_threads() == before
