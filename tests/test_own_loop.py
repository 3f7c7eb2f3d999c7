"""persist inside a user's own loop: Meter's records, reuse against the trainer, replay, and the example end to end."""

from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import persist
from persist.config import RunConfig
from persist.errors import ConfigError, PersistError
from persist.measure import HostClock
from persist.records import load_runs, read_evals, read_manifest, read_meter_lines, read_records
from persist.registry import LR_SCHEDULES
from persist.training.trainer import Trainer

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "own_loop.py"


class FakeLoader:
    """Four batches of two samples; each fetch moves the fake clock by `wait_s`."""

    def __init__(self, clock, wait_s: float, batches: int = 4):
        self.clock, self.wait_s, self.batches = clock, wait_s, batches

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        for i in range(self.batches):
            self.clock.sleep(self.wait_s)
            yield torch.full((2,), float(i)), torch.tensor([i, i])


def fake_meter(tmp_path, fake_clock, name="run", **kwargs):
    return persist.Meter(
        tmp_path / name, device="cpu", clock=HostClock(now=fake_clock.now), now=fake_clock.now, **kwargs
    )


def test_meter_records_an_epoch_like_the_trainer(tmp_path, fake_clock):
    """4 loads of 0.25 s, K=2 steps of 0.5 s each: wall 5 s, data wait 1 s, compute 4 s; an evaluation after the
    epoch gives its test figures and a row of evals.jsonl; K and the schedule come from persist.reuse."""
    meter = fake_meter(tmp_path, fake_clock, config={"model": "mine", "notes": "kept as given"})
    meter.evaluate(test_acc=0.1, test_loss=2.3)  # before training: the curve's origin
    with meter.epoch(1):
        for (_x, y), use in persist.reuse(meter.timed(FakeLoader(fake_clock, 0.25)), k=2, schedule="linear"):
            assert use.lr_factor == use.k
            with meter.step(samples=len(y)) as step:
                fake_clock.sleep(0.5)
                step.loss(torch.tensor(float(use.k)))  # the batch's mean loss: 1 on the first use, 2 on the second
    fake_clock.sleep(0.75)  # the user's evaluation
    meter.evaluate(test_acc=0.5, test_loss=1.5)
    meter.close()
    (record,) = read_records(tmp_path / "run")
    assert (record.wall_s, record.data_wait_s, record.compute_s) == pytest.approx((5.0, 1.0, 4.0))
    assert record.gpu_idle_s == pytest.approx(1.0 - 0.25)  # the gaps between steps hold the fetches but the first
    assert (record.loads, record.steps, record.fresh_samples, record.sample_steps) == (4, 8, 8, 16)
    assert record.train_loss == pytest.approx(1.5) and record.clock == "host" and record.device == "cpu"
    assert (record.test_acc, record.test_loss, record.eval_s) == pytest.approx((0.5, 1.5, 0.75))
    origin, after = read_evals(tmp_path / "run")
    assert (origin.epoch, origin.steps_seen, after.epoch, after.steps_seen) == (0, 0, 1, 8)
    assert after.train_s == pytest.approx(5.0) and after.fresh_samples_seen == 8
    manifest = read_manifest(tmp_path / "run")
    assert manifest["status"] == "finished" and manifest["user_config"]["notes"] == "kept as given"
    config = manifest["config"]
    assert (config["pipeline"], config["persistency"], config["lr_schedule"], config["batch_size"]) == (
        "own-loop",
        2,
        "linear",
        2,
    )
    assert config["model"] == "mine" and config["train_size"] == 8 and config["epochs"] == 1
    assert read_meter_lines(tmp_path / "run")[0]["first_wait_s"] == pytest.approx(0.25)
    frame = load_runs([tmp_path / "run"])  # the analysis reads it like any run
    assert frame.loc[0, "persistency"] == 2 and frame.loc[0, "wall_s"] == pytest.approx(5.0)


def test_an_evaluation_inside_an_epoch_is_left_out_of_its_time(tmp_path, fake_clock):
    meter = fake_meter(tmp_path, fake_clock)
    with meter.epoch(1):
        for _x, _y in meter.timed(FakeLoader(fake_clock, 0.0, batches=2)):
            with meter.step(samples=2):
                fake_clock.sleep(1.0)
            fake_clock.sleep(3.0)  # evaluating
            meter.evaluate(test_acc=0.4)
    meter.close()
    (record,) = read_records(tmp_path / "run")
    assert record.wall_s == pytest.approx(2.0) and record.gpu_idle_s == pytest.approx(0.0)
    assert math.isnan(record.test_acc)  # no evaluation after the epoch
    rows = read_evals(tmp_path / "run")
    assert [r.steps_seen for r in rows] == [1, 2] and [r.eval_s for r in rows] == pytest.approx([3.0, 3.0])
    assert [r.train_s for r in rows] == pytest.approx([1.0, 2.0])


def test_a_replayed_loader_names_the_run_replay_and_a_missing_evaluation_still_writes_the_epoch(tmp_path, fake_clock):
    loader = persist.replay(FakeLoader(fake_clock, 0.25, batches=6), batches=2)
    assert len(loader) == 6 and [int(x[0]) for x, _ in loader] == [0, 1, 0, 1, 0, 1]
    meter = fake_meter(tmp_path, fake_clock, name="replayed")
    for epoch in (1, 2):
        with meter.epoch(epoch):
            for _x, _y in meter.timed(loader):
                with meter.step(samples=2):
                    fake_clock.sleep(0.5)
    meter.close()
    records = read_records(tmp_path / "replayed")
    assert [r.epoch for r in records] == [1, 2] and all(r.data_wait_s == 0 for r in records)
    manifest = read_manifest(tmp_path / "replayed")
    assert manifest["config"]["pipeline"] == "replay" and manifest["meter"]["loader"] == "replay"
    assert manifest["config"]["persistency"] == 1 and manifest["config"]["lr_schedule"] == "constant"


def test_meter_misuse_is_one_clear_error(tmp_path, fake_clock):
    meter = fake_meter(tmp_path, fake_clock)
    with pytest.raises(PersistError, match=r"outside `with meter\.epoch"), meter.step(samples=1):
        pass
    with pytest.raises(ConfigError, match="number epochs from 1"), meter.epoch(0):
        pass
    with meter.epoch(1), pytest.raises(PersistError, match="do not nest"), meter.epoch(2):
        pass
    meter.close()
    with pytest.raises(PersistError, match="already holds a run"):
        fake_meter(tmp_path, fake_clock)
    with pytest.raises(ConfigError, match="JSON"):
        persist.Meter(tmp_path / "other", device="cpu", config={"bad": object()})
    with pytest.raises(ConfigError, match="loader="):
        persist.Meter(tmp_path / "other", device="cpu", loader="threads")
    with pytest.raises(ConfigError, match="k=0"):
        persist.reuse([1], k=0)
    with pytest.raises(ConfigError, match="batches=0"):
        persist.replay([1], batches=0)


def test_a_failure_inside_an_epoch_is_on_record(tmp_path, fake_clock):
    meter = fake_meter(tmp_path, fake_clock)
    with pytest.raises(RuntimeError), meter.epoch(1):
        raise RuntimeError("out of memory")
    meter.close()
    assert read_manifest(tmp_path / "run")["status"].startswith("stopped in epoch 1: RuntimeError: out of memory")


@pytest.mark.parametrize("schedule", sorted(LR_SCHEDULES.entries))
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_reuse_gives_the_trainers_uses_and_lr_factors(tiny_data, tiny_config, schedule, k):
    config = RunConfig(**{**tiny_config.as_dict(), "persistency": k, "lr_schedule": schedule, "lr": 0.003})
    trainer = Trainer(config, tiny_data)
    try:
        expected = [(u.k, u.lr / config.lr) for u in trainer.uses]
    finally:
        trainer.close()
    got = list(persist.reuse(["a", "b"], k=k, schedule=schedule))
    assert [batch for batch, _ in got] == ["a"] * k + ["b"] * k
    assert [use.k for _, use in got] == [k_ for k_, _ in expected] * 2
    assert [use.lr_factor for _, use in got] == pytest.approx([f for _, f in expected] * 2)
    assert [u.lr_factor for u in persist.uses(k, schedule)] == pytest.approx([f for _, f in expected])


def test_reuse_takes_a_registered_plug_in(monkeypatch):
    monkeypatch.setattr(LR_SCHEDULES, "entries", dict(LR_SCHEDULES.entries))
    persist.register_lr_schedule("halving", lambda mu, k: mu / 2 ** (k - 1))
    assert [use.lr_factor for _, use in persist.reuse([0], k=3, schedule="halving")] == [1, 0.5, 0.25]


class SlowDigits(Dataset):
    """A planted time.sleep in __getitem__; every sleep's real length is kept, to compare the meter against."""

    def __init__(self, n: int, sleep_s: float):
        self.n, self.sleep_s, self.slept = n, sleep_s, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        start = time.perf_counter()
        time.sleep(self.sleep_s)
        self.slept.append(time.perf_counter() - start)
        return torch.zeros(4), i % 10


def _run(meter, loader, epoch=1):
    with meter.epoch(epoch):
        for x, y in meter.timed(loader):
            with meter.step(samples=len(y)):
                (x + 1).sum()


def test_a_planted_sleep_in_getitem_is_found_in_data_wait_and_replay_removes_it(tmp_path):
    """0 workers: each load waits for its 4 samples' sleeps; data_wait_s per load is within 5% of what they slept
    (and at least the planted 4 x 10 ms). Replayed, the same loader's wait is under 5% of the planted one."""
    data = SlowDigits(24, 0.010)
    loader = DataLoader(data, batch_size=4, num_workers=0)
    meter = persist.Meter(tmp_path / "real", device="cpu")
    _run(meter, loader)
    meter.close()
    (record,) = read_records(tmp_path / "real")
    slept_per_load, wait_per_load = sum(data.slept) / 6, record.data_wait_s / record.loads
    assert record.loads == 6 and wait_per_load >= 4 * 0.010
    assert wait_per_load == pytest.approx(slept_per_load, rel=0.05)
    assert read_manifest(tmp_path / "real")["meter"]["loader"] == "sync"

    replayed = persist.replay(loader, batches=2)
    meter = persist.Meter(tmp_path / "replay", device="cpu")
    _run(meter, replayed)
    meter.close()
    (record,) = read_records(tmp_path / "replay")
    assert record.loads == 6 and record.data_wait_s < 0.05 * 6 * 4 * 0.010


def _load_example():
    spec = importlib.util.spec_from_file_location("own_loop_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_example_runs_on_digits_and_persist_report_reads_its_folders(tmp_path, capsys):
    pytest.importorskip("sklearn", reason="the example reads scikit-learn's digits")
    from persist.cli.main import main

    example = _load_example()
    small = ["--model", "shufflenet_v2_x0_5", "--train-size", "128", "--batch-size", "32", "--epochs", "2"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: one thread per process steps faster than two
    try:
        for name, extra in (("real-k1", []), ("replay-k1", ["--replay", "2"]), ("real-k2", ["--k", "2"])):
            example.train(example.parse(["--out", str(tmp_path / name), *small, *extra]))
    finally:
        torch.set_num_threads(threads)
    runs = [tmp_path / name for name in ("real-k1", "replay-k1", "real-k2")]
    frame = load_runs(runs)
    assert sorted(set(zip(frame["pipeline"], frame["persistency"], strict=True))) == [
        ("own-loop", 1), ("own-loop", 2), ("replay", 1)
    ]  # fmt: skip
    assert set(frame["dataset"]) == {"digits"} and set(frame["train_size"]) == {128}
    assert main(["whatif", str(runs[0]), "--replay", str(runs[1]), "--persistencies", "1,2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [f["k"] for f in result["forecasts"]] == [1, 2] and result["loader"] == "sync"
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "own-loop" in report and "replay" in report and "dataset `digits`" in report


@pytest.mark.gpu
def test_meter_on_cuda_times_steps_with_events_and_samples_nvml(tmp_path):
    device = torch.device("cuda")
    model = torch.nn.Linear(64, 10).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = [(torch.randn(32, 64), torch.randint(0, 10, (32,))) for _ in range(8)]
    meter = persist.Meter(tmp_path / "gpu", device=device)
    for epoch in (1, 2):
        with meter.epoch(epoch):
            for (x, y), _use in persist.reuse(meter.timed(loader), k=2):
                with meter.step(samples=len(y)) as step:
                    loss = torch.nn.functional.cross_entropy(model(x.to(device)), y.to(device))
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    step.loss(loss)
    meter.close()
    records = read_records(tmp_path / "gpu")
    assert [r.clock for r in records] == ["cuda_events"] * 2 and all(r.steps == 16 for r in records)
    assert all(0 < r.compute_s <= r.wall_s and math.isfinite(r.train_loss) for r in records)
    assert "available" in records[-1].nvml
    assert read_manifest(tmp_path / "gpu")["config"]["device"].startswith("cuda")
