"""Decomposition from records alone: factors, time to target, CIs, defaults and the checks on mixed input."""

import math

import pandas
import pytest

from persist.analysis.decomposition import decomposition, per_run
from persist.config import RunConfig
from persist.errors import PersistError
from persist.stats import mean_ci


def _epochs(pipeline, m, k, seed, accs, wall_s, compute_s, schedule="constant", loads=10, epochs=None):
    config = RunConfig(
        pipeline=pipeline, batch_size=m, persistency=k, lr_schedule=schedule, seed=seed, epochs=epochs or len(accs)
    ).as_dict()
    return [
        {
            **config,
            "run": f"{pipeline}-m{m}-K{k}-{schedule}-s{seed}",
            "epoch": e + 1,
            "wall_s": wall_s,
            "compute_s": compute_s,
            "loads": loads,
            "steps": loads * k,
            "fresh_samples": loads * m,
            "test_acc": acc,
            "test_loss": 1 - acc,
            "device": "cpu",
            "clock": "host",
        }
        for e, acc in enumerate(accs)
    ]


def _frame(*runs):
    return pandas.DataFrame([row for run in runs for row in run])


def test_factors_split_the_speedup():
    # K=1: 10 steps/epoch at 1.0 s -> 0.1 s/step; reaches 0.5 at epoch 4 (40 steps, 4 s)
    # K=5: 50 steps/epoch at 2.5 s -> 0.05 s/step (loading shared); reaches 0.5 at epoch 1 (50 steps, 2.5 s)
    epochs = _frame(
        _epochs("torchvision", 256, 1, 0, [0.2, 0.3, 0.4, 0.5], 1.0, 0.5),
        _epochs("torchvision", 256, 5, 0, [0.5, 0.6, 0.6, 0.6], 2.5, 2.0),
    )
    table, targets = decomposition(epochs, target=0.5)
    k5 = table[table["persistency"] == 5].iloc[0]
    assert targets == {("torchvision", 256): 0.5} and k5["target"] == 0.5
    assert k5["time_per_step_s"] == pytest.approx(0.05) and k5["compute_per_step_s"] == pytest.approx(0.04)
    assert k5["overhead_per_load_s"] == pytest.approx(0.05)  # (2.5 - 2.0) s over 10 loads
    assert k5["loading_factor"] == pytest.approx(2.0) and k5["convergence_factor"] == pytest.approx(40 / 50)
    assert k5["speedup"] == pytest.approx(4.0 / 2.5)  # = seconds_to_target(1) / seconds_to_target(5)
    assert k5["steps_to_target"] == 50 and k5["epochs_to_target"] == 1 and k5["fresh_samples_to_target"] == 2560


def test_default_target_is_95_percent_of_the_k1_reference_per_pipeline_and_m():
    epochs = _frame(
        _epochs("preloaded", 32, 1, 0, [0.3, 0.5], 1, 1),
        _epochs("preloaded", 32, 1, 1, [0.4, 0.7], 1, 1),  # K=1 reference: mean of best = 0.6
        _epochs("preloaded", 32, 2, 0, [0.6, 0.65], 2, 2),
        _epochs("torchvision", 32, 1, 0, [0.2, 0.4], 1, 1),
        _epochs("torchvision", 32, 2, 0, [0.3, 0.35], 1, 1),
        _epochs("preloaded", 64, 2, 0, [0.25], 1, 1),  # no K=1 run: the best every run reached
    )
    table, targets = decomposition(epochs)
    assert targets == pytest.approx({("preloaded", 32): 0.57, ("torchvision", 32): 0.38, ("preloaded", 64): 0.25})
    tv = table[(table["pipeline"] == "torchvision") & (table["persistency"] == 2)].iloc[0]
    assert math.isnan(tv["steps_to_target"]) and tv["reached"] == 0  # K=2 never got to 0.38


def test_the_table_gives_n_and_every_seed_and_says_not_reached():
    from persist.analysis.report import cell_text, markdown_table

    runs = [_epochs("preloaded", 32, 1, s, [0.2, 0.5], 1.0, 1.0) for s in (0, 1, 2)]
    runs += [_epochs("preloaded", 32, 2, s, [acc, 0.6], 2.0, 2.0) for s, acc in ((0, 0.5), (1, 0.1), (2, 0.5))]
    runs += [_epochs("preloaded", 32, 5, s, [0.1, 0.2], 5.0, 5.0) for s in (0, 1, 2)]
    table, _ = decomposition(_frame(*runs), target=0.5)
    k2, k5 = (table[table["persistency"] == k].iloc[0] for k in (2, 5))
    assert k2["convergence_factor_values"] == pytest.approx([1.0, 0.5, 1.0])  # K=1: 20 steps; K=2: 20, 40, 20
    assert "(n=3: 1.00, 0.50, 1.00)" in cell_text(k2, "convergence_factor", "{:.2f}", per_seed=True)
    assert cell_text(k5, "steps_to_target", "{:.0f}") == "not reached"
    assert "not reached" in markdown_table(table)


def test_preloaded_loading_factor_far_from_one_is_flagged():
    epochs = _frame(_epochs("preloaded", 32, 1, 0, [0.5], 1.0, 1.0), _epochs("preloaded", 32, 2, 0, [0.5], 1.0, 1.0))
    table, _ = decomposition(epochs, target=0.5)
    assert "is not ~1 on preloaded" in table[table["persistency"] == 2].iloc[0]["note"]
    # on an image folder preloaded resamples every batch: its loads are real work, and the factor says so unflagged
    resampled = epochs.assign(pixels="resampled per pipeline: close to the other pipelines' pixels, not bit-identical")
    table, _ = decomposition(resampled, target=0.5)
    assert "is not ~1 on preloaded" not in table[table["persistency"] == 2].iloc[0]["note"]


def test_confidence_intervals_over_seeds():
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-4)  # t(0.975, 2) = 4.3027
    assert math.isnan(mean_ci([5.0])[1])
    # K=2 seeds differ in epoch time (2.0, 2.4, 2.9 s over 20 steps) and in when they reach 0.5 (epoch 1, 2, 2)
    walls, curves = (2.0, 2.4, 2.9), ([0.5, 0.6], [0.4, 0.5], [0.3, 0.5])
    runs = [_epochs("preloaded", 32, 1, s, [0.5, 0.6], 1.0, 1.0) for s in (0, 1, 2)]
    runs += [_epochs("preloaded", 32, 2, s, curves[s], walls[s], 1.0) for s in (0, 1, 2)]
    table, _ = decomposition(_frame(*runs), target=0.5)
    assert (table["seeds"] == 3).all()
    k2 = table[table["persistency"] == 2].iloc[0]
    for column in ("time_per_step_s", "steps_to_target", "speedup", "convergence_factor"):
        values = k2[column + "_values"]
        assert len(values) == 3 and len(set(values)) > 1  # the seeds differ, so the interval is not 0
        mean, half = mean_ci(values)
        assert k2[column] == pytest.approx(mean) and k2[column + "_ci"] == pytest.approx(half) and half > 0
    assert k2["time_per_step_s_values"] == pytest.approx([w / 20 for w in walls])
    assert k2["steps_to_target_values"] == [20, 40, 40]
    k1 = table[table["persistency"] == 1].iloc[0]
    assert k1["time_per_step_s_ci"] == 0.0  # identical seeds: a zero-width interval


def test_partial_runs_are_reported_as_partial():
    epochs = _frame(
        _epochs("preloaded", 32, 1, 0, [0.5, 0.6], 1, 1, epochs=10), _epochs("preloaded", 32, 2, 0, [0.6], 2, 2)
    )
    runs = per_run(epochs, {("preloaded", 32): 0.5})
    assert runs.set_index("persistency").loc[1, "partial"]
    table, _ = decomposition(epochs, target=0.5)
    assert "partial run" in table[table["persistency"] == 1].iloc[0]["note"]


def test_unreachable_target_and_mixed_datasets_are_errors():
    a = _epochs("preloaded", 32, 1, 0, [0.3], 1, 1)
    with pytest.raises(PersistError, match=r"target accuracy 0.9000 is reached by no run \(best is 0.3000\)"):
        decomposition(_frame(a), target=0.9)
    b = [{**row, "dataset": "cifar10", "run": "other"} for row in _epochs("preloaded", 32, 2, 0, [0.3], 1, 1)]
    with pytest.raises(PersistError, match="runs with different dataset cannot share a figure or table"):
        decomposition(_frame(a, b))
    with pytest.raises(PersistError, match="no finished epochs"):
        decomposition(pandas.DataFrame())


def test_diverged_runs_are_noted_and_do_not_set_the_default_target():
    healthy = _epochs("preloaded", 32, 1, 0, [0.3, 0.6], 1, 1)
    diverged = [
        {**row, "status": "diverged in epoch 2: ..."} for row in _epochs("preloaded", 32, 5, 0, [0.1], 5, 5, epochs=2)
    ]
    frame = _frame([{**row, "status": "finished"} for row in healthy], diverged)
    table, targets = decomposition(frame)
    assert targets == pytest.approx({("preloaded", 32): 0.57})  # 95% of the healthy K=1 run's 0.6
    assert "1 seed(s) diverged" in table[table["persistency"] == 5].iloc[0]["note"]


def test_a_run_that_its_budget_ended_is_not_partial():
    spent = [{**row, "status": "finished (budget spent)"} for row in _epochs("preloaded", 32, 1, 0, [0.2, 0.5], 1, 1)]
    running = [{**row, "status": "running"} for row in _epochs("preloaded", 32, 1, 1, [0.2, 0.5], 1, 1)]
    for rows in (spent, running):
        for row in rows:
            row["epochs"] = 1_000_000  # a budget alone: the epoch count is uncapped
    runs = per_run(_frame(spent, running), {("preloaded", 32): 0.5}).set_index("seed")
    assert not runs.loc[0, "partial"] and runs.loc[1, "partial"]
