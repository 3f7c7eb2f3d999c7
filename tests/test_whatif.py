"""The forecast model (persist/forecast.py) and `persist whatif` on Meter runs."""

from __future__ import annotations

import json

import pytest
import torch

import persist
from persist.cli.main import main
from persist.forecast import Measured, forecast, loader_of_pipeline
from persist.measure import HostClock


def test_a_synchronous_loader_pays_every_load_in_full():
    """K=1: 10 loads of 0.04 s wait, a 1.0 s epoch -> 0.06 s per step; K=3 = 10 x 0.04 + 30 x 0.06 = 2.2 s."""
    k1 = Measured(wall_s=1.0, data_wait_s=0.4, compute_s=0.5, loads=10, steps=10, loader="sync")
    assert forecast(k1, 1).epoch_s == pytest.approx(1.0)
    three = forecast(k1, 3)
    assert three.epoch_s == pytest.approx(2.2) and three.stall_per_load_s == pytest.approx(0.04)
    assert three.loading_factor == pytest.approx(0.1 / (2.2 / 30)) and three.au == pytest.approx(1.5 / 2.2)


def test_a_prefetching_loader_stalls_only_by_what_k_steps_do_not_hide():
    """K=1 waits 0.09 s per load behind a 0.06 s step: the load takes 0.15 s; K=2 hides 0.12 s of it (0.03 s
    stall), K=3 all of it. The first fetch (worker start-up) is a fixed 0.5 s per epoch, not a load."""
    k1 = Measured(wall_s=1.91, data_wait_s=1.31, compute_s=0.5, loads=10, steps=10, loader="async", first_wait_s=0.5)
    assert k1.load_per_batch_s == pytest.approx(0.15) and "inferred" in k1.load_source
    assert forecast(k1, 1).epoch_s == pytest.approx(1.91)
    assert forecast(k1, 2).stall_per_load_s == pytest.approx(0.03)
    assert forecast(k1, 2).epoch_s == pytest.approx(0.5 + 9 * 0.03 + 20 * 0.06)
    assert forecast(k1, 3).epoch_s == pytest.approx(0.5 + 30 * 0.06)
    measured_alone = Measured(1.91, 1.31, 0.5, 10, 10, "async", first_wait_s=0.5, load_s=0.2)
    assert forecast(measured_alone, 2).stall_per_load_s == pytest.approx(0.2 - 0.12)


def test_which_of_persists_pipelines_prefetch():
    assert loader_of_pipeline("dali", {}) == "async" and loader_of_pipeline("preloaded", {}) == "sync"
    assert loader_of_pipeline("torchvision", {"num_workers": 0}) == "sync"
    assert loader_of_pipeline("torchvision", {"num_workers": 4}) == "async"


class Loader:
    def __init__(self, clock, wait_s, batches=10):
        self.clock, self.wait_s, self.batches = clock, wait_s, batches

    def __iter__(self):
        for i in range(self.batches):
            self.clock.sleep(self.wait_s)
            yield torch.zeros(2), torch.tensor([i, i])


def _meter_run(path, fake_clock, k=1, wait_s=0.04, step_s=0.06, loader="sync", source=None, epochs=2):
    meter = persist.Meter(path, device="cpu", clock=HostClock(now=fake_clock.now), now=fake_clock.now, loader=loader)
    for epoch in range(1, epochs + 1):
        with meter.epoch(epoch):
            for (_x, y), _use in persist.reuse(meter.timed(source or Loader(fake_clock, wait_s)), k=k):
                with meter.step(samples=len(y)):
                    fake_clock.sleep(step_s)
    meter.close()
    return path


def test_whatif_forecasts_a_meter_run_beside_its_replay_ceiling(tmp_path, fake_clock, capsys):
    real = _meter_run(tmp_path / "real", fake_clock)
    replayed = persist.replay(Loader(fake_clock, 0.04), batches=2)
    replay = _meter_run(tmp_path / "replay", fake_clock, loader=None, source=replayed)
    assert main(["whatif", str(real), "--replay", str(replay), "--persistencies", "1,2,4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["loader"] == "sync" and result["epochs_used"] == [2]  # epoch 1 is the warm-up
    one, two, four = result["forecasts"]
    assert one["epoch_s"] == pytest.approx(1.0) and two["epoch_s"] == pytest.approx(0.4 + 20 * 0.06)
    assert four["stall_per_load_s"] == pytest.approx(0.04)
    assert result["ceiling_per_step_s"] == pytest.approx(0.06) and two["ceiling_epoch_s"] == pytest.approx(1.2)
    assert one["ceiling_loading_factor"] == pytest.approx(0.1 / 0.06)
    # the table, piped: every name whole
    assert main(["whatif", str(real), "--replay", str(replay)]) == 0
    out = capsys.readouterr().out
    assert "ceiling loading x" in out and "stall/load ms" in out and str(replay) in out


def test_whatif_refuses_a_k2_run_and_a_folder_that_is_no_run(tmp_path, fake_clock, capsys):
    k2 = _meter_run(tmp_path / "k2", fake_clock, k=2)
    assert main(["whatif", str(k2)]) == 2
    assert "whatif forecasts from a K=1 run" in capsys.readouterr().err
    assert main(["whatif", str(tmp_path)]) == 2
    assert "not a persist run folder" in capsys.readouterr().err
    assert main(["whatif", str(k2), "--persistencies", "0"]) == 2


def test_a_forecast_of_a_prefetching_meter_run_matches_a_fake_k2_run(tmp_path, fake_clock, capsys):
    """An async loader modelled by the fake clock: production 0.1 s per batch overlapping the steps of 0.06 s."""

    class Prefetching:
        def __init__(self, clock, load_s):
            self.clock, self.load_s = clock, load_s

        def __iter__(self):
            ready = self.clock.t + self.load_s
            for i in range(10):
                self.clock.t = max(self.clock.t, ready)  # wait for the batch if it is not ready yet
                ready = self.clock.t + self.load_s  # the next one is produced while the model computes
                yield torch.zeros(2), torch.tensor([i, i])

    k1 = _meter_run(tmp_path / "k1", fake_clock, loader="async", source=Prefetching(fake_clock, 0.1))
    k2 = _meter_run(tmp_path / "k2", fake_clock, k=2, loader="async", source=Prefetching(fake_clock, 0.1))
    assert main(["whatif", str(k1), "--persistencies", "2", "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)["forecasts"][0]["epoch_s"]
    measured = persist.load_runs([k2])["wall_s"].iloc[-1]
    assert predicted == pytest.approx(measured)


def test_whatif_reads_a_persist_train_run(tmp_path, tiny_config, capsys):
    """A folder as `persist train` leaves it: the manifest names the pipeline and its options (0 workers: sync)."""
    from dataclasses import replace

    from persist.records import EpochRecord, append_record, write_json_atomic

    config = replace(tiny_config, pipeline="torchvision", num_workers=0)
    run = tmp_path / "k1"
    run.mkdir()
    manifest = {"config": config.as_dict(), "pipeline": {"pipeline": "torchvision", "num_workers": 0}}
    write_json_atomic(run / "manifest.json", {**manifest, "status": "finished"})
    for epoch, wall in ((1, 3.0), (2, 1.0)):
        append_record(run, EpochRecord(epoch, wall, 0.4, 0.5, 0.5, 0.1, 10, 10, 320, 320, 2.0, 2.0, 0.2, "host", "cpu"))
    assert main(["whatif", str(run), "--persistencies", "1,3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["loader"] == "sync" and "torchvision" in result["loader_why"] and result["epochs_used"] == [2]
    one, three = result["forecasts"]
    assert one["epoch_s"] == pytest.approx(1.0) and three["epoch_s"] == pytest.approx(0.4 + 30 * 0.06)
    assert main(["whatif", str(run), "--loader", "async", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["loader_why"] == "given with --loader" and result["forecasts"][1]["stall_per_load_s"] == 0


def test_a_loader_that_kept_up_gets_a_bound_not_a_load_time_and_a_slow_replay_is_flagged(tmp_path, fake_clock, capsys):
    real = _meter_run(tmp_path / "real", fake_clock, wait_s=0.0, loader="async")  # compute-bound: no wait at all
    slow_replay = _meter_run(tmp_path / "replay", fake_clock, loader=None, step_s=0.09,
                             source=persist.replay(Loader(fake_clock, 0.0), batches=2))  # fmt: skip
    assert main(["whatif", str(real), "--replay", str(slow_replay), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["load_is_upper_bound"] is True and "kept up" in result["load_source"]
    assert len(result["caveats"]) == 2 and "slower than the real run" in result["caveats"][1]
    assert main(["whatif", str(real), "--replay", str(slow_replay)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the title wraps
    assert "load <= 60.00 ms/batch" in out and out.count("Caveat:") == 2
    assert main(["whatif", str(_meter_run(tmp_path / "sync", fake_clock)), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["load_is_upper_bound"] is False and result["caveats"] == []


def _as_if_on(run, clock: str, data_stall_s: float | None):
    """The run's epochs rewritten as another clock would have recorded them (None: a record from before the field)."""
    path = run / "epochs.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for r in records:
        r["clock"] = clock
        if data_stall_s is None:
            r.pop("data_stall_s", None), r.pop("device_wait_s", None)
        else:
            r["data_stall_s"] = data_stall_s
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize(
    ("clock", "stall", "figure", "k2_epoch_s"),
    [
        # the device idled 0.1 s of the host's 0.4 s data wait: the rest of the wait was the host blocked in
        # launches behind the device's queue, time the device computed, which K does not save
        ("cuda_events", 0.1, "device", 0.1 + 20 * (1.0 - 0.1) / 10),
        ("cuda_events", None, "host", 0.4 + 20 * 0.06),  # a CUDA record from before data_stall_s
        ("host", 0.4, "host", 0.4 + 20 * 0.06),  # a CPU: the host's wait is the stall
    ],
)
def test_on_cuda_whatif_forecasts_from_the_devices_data_stall(
    tmp_path, fake_clock, capsys, clock, stall, figure, k2_epoch_s
):
    run = _meter_run(tmp_path / "run", fake_clock)
    _as_if_on(run, clock, stall)
    assert main(["whatif", str(run), "--persistencies", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["wait_figure"] == figure and result["host_data_wait_s"] == pytest.approx(0.4)
    assert result["forecasts"][0]["epoch_s"] == pytest.approx(k2_epoch_s)
    assert main(["whatif", str(run), "--persistencies", "2"]) == 0
    assert ("device data stall" in capsys.readouterr().out) == (figure == "device")
