"""The report's figures and headline: K > 1 runs of another lr schedule drawn, empty panels said so, caveats kept."""

import math

import pandas
import pytest

from persist.analysis import figures
from persist.analysis.report import _values, verdicts


def _epochs(schedules: dict[int, str], test_loss: float = math.nan) -> pandas.DataFrame:
    rows = []
    for k, schedule in schedules.items():
        for epoch in (1, 2):
            rows.append(
                {"run": f"k{k}", "pipeline": "own-loop", "batch_size": 64, "persistency": k, "adaptive": False,
                 "lr_schedule": schedule, "reuse": "same", "seed": 0, "epoch": epoch, "wall_s": 1.0,
                 "test_acc": 0.5 + 0.1 * epoch, "test_loss": test_loss}
            )  # fmt: skip
    return pandas.DataFrame(rows)


def test_a_k2_run_with_linear_lr_is_drawn_when_no_constant_k2_ran(tmp_path, monkeypatch):
    drawn, draw = [], figures._draw
    monkeypatch.setattr(
        figures, "_draw", lambda axes, curves, label, style: draw(axes, curves, label, style) or drawn.append(label)
    )
    (path,) = figures.paper_figures(_epochs({1: "linear", 2: "linear"}), "own-loop", tmp_path)
    assert drawn == ["K = 1 (1 seeds)", "K = 2, linear lr (1 seeds)"] and path.exists()


def test_with_a_constant_k2_the_paper_figure_keeps_to_constant_lr(tmp_path, monkeypatch):
    drawn, draw = [], figures._draw
    monkeypatch.setattr(
        figures, "_draw", lambda axes, curves, label, style: draw(axes, curves, label, style) or drawn.append(label)
    )
    epochs = pandas.concat([_epochs({1: "constant", 2: "constant"}), _epochs({3: "linear"})])
    figures.paper_figures(epochs, "own-loop", tmp_path)
    assert drawn == ["K = 1 (1 seeds)", "K = 2 (1 seeds)"]


def test_loss_panels_with_no_recorded_loss_say_so(tmp_path, monkeypatch):
    seen = {}
    save = figures._save

    def keep(fig, axes, path):
        saved = save(fig, axes, path)
        seen["texts"] = [[t.get_text() for t in ax.texts] for ax in axes.flat]
        seen["lines"] = [len(ax.lines) for ax in axes.flat]
        return saved

    monkeypatch.setattr(figures, "_save", keep)
    figures.paper_figures(_epochs({1: "constant", 2: "constant"}), "own-loop", tmp_path)
    assert seen["lines"][:2] == [2, 2] and seen["texts"][2:] == [["no test loss was recorded"]] * 2


def test_the_headline_carries_the_tables_caveat():
    table = pandas.DataFrame(
        [{"pipeline": "preloaded", "batch_size": 32, "target": 0.8, "persistency": 2, "k_label": "2",
          "lr_schedule": "constant", "speedup": 3.19, "steps_to_target": 10, "loading_factor": 1.4,
          "convergence_factor": 2.3, "note": "loading factor 1.40 is not ~1 on preloaded"}]
    )  # fmt: skip
    (sentence,) = verdicts(table)
    assert "3.19x" in sentence and "Caveat, as the table notes: loading factor 1.40 is not ~1" in sentence


def test_a_column_with_mixed_types_is_listed_not_a_traceback():
    assert _values(pandas.DataFrame({"batch_size": [64, "64", 32]}), "batch_size") == "32, 64, 64"
    with pytest.raises(TypeError):
        sorted([64, "64"])  # what the report used to do
