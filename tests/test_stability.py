"""persist stability: every cell trains N steps, a NaN is a finding with its step, and a rerun resumes."""

import json
import math

from persist.cli.main import main
from persist.config import RunConfig
from persist.errors import PersistError
from persist.runs.stability import cell_line, markdown, probe, read_rows, summarize
from persist.training.trainer import Trainer

SMALL = ["--train-size", "256", "--test-size", "32", "--width", "0.125", "--device", "cpu"]


def test_probe_counts_steps_across_loads_and_epochs(tiny_data, tiny_config):
    from dataclasses import replace

    config = replace(tiny_config, batch_size=64, persistency=3)  # 4 loads x 3 steps = 12 steps per epoch
    row = probe(Trainer(config, tiny_data), steps=20)
    assert row["steps_done"] == 20 and len(row["losses"]) == 20 and row["finite"]
    assert row["window_steps"] == 12 and row["loss_first"] == sum(row["losses"][:12]) / 12  # 10 -> whole loads of 3


def test_a_diverging_cell_stops_at_its_first_non_finite_loss(tiny_data, tiny_config):
    from dataclasses import replace

    row = probe(Trainer(replace(tiny_config, lr=1e6), tiny_data), steps=50)
    assert not row["finite"] and not row["falling"]
    assert row["diverged_step"] == row["steps_done"] < 50 and not math.isfinite(row["losses"][-1])
    assert "NaN at step" in markdown([row])


def test_a_falling_loss_compares_the_first_and_last_tenth_in_whole_loads():
    from persist.runs.stability import window

    config = RunConfig()
    assert summarize(config, [2.3] * 10 + [1.0] * 10, 1.0, 20)["falling"]
    assert not summarize(config, [2.3] * 20, 1.0, 20)["falling"]
    assert [window(100, 1), window(100, 5), window(1000, 5), window(125, 2)] == [10, 10, 100, 12]
    # K=5 over 1000 steps: a batch's 5 uses fall, the next batch starts high again; 10 steps would be 2 batches
    sawtooth = [2.3 - 0.05 * (i % 5) - 0.0001 * i for i in range(1000)]
    assert summarize(RunConfig(persistency=5), sawtooth, 1.0, 1000)["falling"]


def test_cli_writes_the_table_and_a_rerun_skips_finished_cells(tmp_path, capsys):
    out = tmp_path / "stab"
    args = ["stability", *SMALL, "--steps", "12", "--batch-sizes", "32", "--persistencies", "1,2", "--out", str(out)]
    code = main(args)
    rows = read_rows(out)
    assert code == int(any(not (r["finite"] and r["falling"]) for r in rows))  # 1 exactly when some cell is unstable
    assert [(r["batch_size"], r["persistency"]) for r in rows] == [(32, 1), (32, 2)]
    assert all(r["normalization"] == "unit" and r["config"]["width"] == 0.125 for r in rows)
    assert "| unit | 32 | 2 | mu | 0 | 12 |" in (out / "stability.md").read_text()
    assert list((out / "cells").iterdir()) == []  # a finished cell's progress file is gone: its row holds it all
    before = (out / "stability.jsonl").read_text()
    assert main(args) == code
    assert (out / "stability.jsonl").read_text() == before  # nothing trained again
    assert len(before.splitlines()) == 2 and json.loads(before.splitlines()[0])["steps_planned"] == 12


def test_cli_exit_code_is_1_exactly_when_some_cell_is_unstable(tmp_path, monkeypatch):
    import persist.runs.stability as stability

    real_judge = stability.judge

    def falling_only_for(persistencies):
        def judge(losses, persistency, steps_planned):
            return {**real_judge(losses, persistency, steps_planned), "falling": persistency in persistencies}

        return judge

    args = ["stability", *SMALL, "--steps", "10", "--batch-sizes", "32", "--persistencies", "1,2"]
    monkeypatch.setattr(stability, "judge", falling_only_for({1, 2}))
    assert main([*args, "--out", str(tmp_path / "stable")]) == 0
    monkeypatch.setattr(stability, "judge", falling_only_for({1}))
    assert main([*args, "--out", str(tmp_path / "one-unstable")]) == 1
    assert [r["falling"] for r in read_rows(tmp_path / "one-unstable")] == [True, False]


def test_cli_bad_values_are_one_line(tmp_path, capsys):
    for flags, message in [
        (["--steps", "5"], "steps=5 is not allowed: use 10 or more"),
        (["--normalizations", "zscore"], "normalization='zscore' is not allowed"),
        (["--batch-sizes", "64"], "no paper cell has these --batch-sizes"),
        (["--batch-sizes", "32", "--schedules", "linear"], "no paper cell has these --batch-sizes, --persistencies"),
    ]:
        assert main(["stability", *SMALL, *flags, "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_cli_runs_each_cell_once_per_seed(tmp_path):
    out = tmp_path / "seeds"
    args = ["stability", *SMALL, "--steps", "10", "--batch-sizes", "32", "--persistencies", "2", "--out", str(out)]
    main([*args, "--seeds", "0,1"])
    rows = read_rows(out)
    assert [r["config"]["seed"] for r in rows] == [0, 1] and rows[0]["losses"] != rows[1]["losses"]
    assert "| unit | 32 | 2 | mu | 1 | 10 |" in (out / "stability.md").read_text()


def test_small_m_gets_as_many_samples_as_large_m():
    from persist.runs.stability import steps_for

    assert [steps_for(m, 100, 51_200) for m in (32, 256, 512)] == [1600, 200, 100]
    assert steps_for(32, 100, 0) == 100


def test_a_killed_cell_resumes_from_its_progress_file_to_the_same_losses(tiny_data, tiny_config, tmp_path):
    from dataclasses import replace

    import pytest

    config = replace(tiny_config, batch_size=64, persistency=3, lr_schedule="linear")  # 12 steps per epoch
    whole = probe(Trainer(config, tiny_data), steps=20)["losses"]

    killed, progress, saves = Trainer(config, tiny_data), tmp_path / "cell.pt", []
    step, calls = killed.step, []

    def dies_at_step_14(*args):
        calls.append(1)
        if len(calls) == 14:
            raise KeyboardInterrupt  # a kill in the middle of the fifth load
        return step(*args)

    killed.step = dies_at_step_14
    with pytest.raises(KeyboardInterrupt):
        probe(killed, 20, progress, save_every_s=0, on_save=lambda n, losses: saves.append(n))
    assert saves == [3, 6, 9, 12] and progress.exists()  # after each whole load, across the epoch's end

    resumed = probe(Trainer(config, tiny_data), 20, progress, save_every_s=0)
    assert resumed["losses"] == whole  # same model, momentum, data order and lr of each use
    with pytest.raises(PersistError, match="another cell"):
        probe(Trainer(replace(config, persistency=2), tiny_data), 20, progress)


def test_health_tells_a_dead_network_from_a_live_one(tiny_data, tiny_config):
    import torch

    from persist.runs.stability import health

    trainer = Trainer(tiny_config, tiny_data)
    x, _ = next(iter(trainer.pipeline.epoch(1)))
    live = health(trainer.model, x)
    assert len(live["live_units"]) == 6 and min(live["live_units"]) > 0.3 and live["logit_sd"] > 0
    with torch.no_grad():
        trainer.model[0].bias.fill_(-1e3)  # every first-layer ReLU off for every input: the output forgets the input
    dead = health(trainer.model, x)
    assert dead["live_units"][0] == 0 and dead["logit_sd"] == 0


def test_a_row_records_health_before_the_first_step_and_after_the_last(tiny_data, tiny_config):
    row = probe(Trainer(tiny_config, tiny_data), steps=12)
    assert row["health_start"]["logit_sd"] > 0 and len(row["health_end"]["live_units"]) == 6
    assert "least-live layer" in cell_line(row)
    assert markdown([row]).splitlines()[-1].count("->") == 2


def test_a_diverged_row_reads_nan_health_not_a_dead_network(tiny_data, tiny_config):
    from dataclasses import replace

    row = probe(Trainer(replace(tiny_config, lr=1e6), tiny_data), steps=50)
    assert markdown([row]).splitlines()[-1].endswith("-> NaN |") and "least-live" not in cell_line(row)
