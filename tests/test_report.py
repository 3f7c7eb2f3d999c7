"""persist sweep -> persist report, end to end on tiny runs: folders, figures, tables, and bad input."""

import pandas
import pytest

from persist.cli.main import main
from persist.records import load_runs

TINY = ["--dataset", "synthetic", "--device", "cpu", "--quiet"]


def _sweep_args(out) -> list[str]:
    """A 6-run sweep: one pipeline, one m, K in {1, 2}, both schedules, two seeds, two epochs."""
    grid = ["--pipelines", "preloaded", "--batch-sizes", "64", "--persistencies", "1,2", "--seeds", "2x"]
    return ["sweep", "--preset", "cpu", "--out", str(out), *grid, "--epochs", "2", *TINY]


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, monkeypatch_module):
    out = tmp_path_factory.mktemp("sweep")
    args = _sweep_args(out)
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    """The cpu preset's sizes, shrunk further so the module's sweep takes seconds."""
    from dataclasses import replace

    import persist.runs.sweep as sweep

    mp = pytest.MonkeyPatch()
    grid = sweep.PRESETS["cpu"]
    small = replace(grid.base, dataset="synthetic", train_size=256, test_size=64)
    mp.setitem(sweep.PRESETS, "cpu", replace(grid, base=small))
    yield mp
    mp.undo()


def test_sweep_writes_one_folder_per_run_and_resumes(sweep_dir, capsys):
    names = sorted(p.name for p in sweep_dir.iterdir())
    # K=1 once per seed; K=2 for both schedules and both seeds
    assert names == [
        "preloaded-m64-K1-constant-s0",
        "preloaded-m64-K1-constant-s1",
        "preloaded-m64-K2-constant-s0",
        "preloaded-m64-K2-constant-s1",
        "preloaded-m64-K2-linear-s0",
        "preloaded-m64-K2-linear-s1",
    ]
    frame = load_runs(sorted(sweep_dir.iterdir()))
    assert len(frame) == 12 and set(frame["lr_schedule"]) == {"constant", "linear"}
    capsys.readouterr()
    args = _sweep_args(sweep_dir)
    assert main(args) == 0
    assert capsys.readouterr().out.count("finished already") == 6


def test_report_writes_figures_tables_and_markdown(sweep_dir, tmp_path, capsys):
    out = tmp_path / "report"
    runs = [str(p) for p in sorted(sweep_dir.iterdir())]
    assert main(["report", *runs, "--out", str(out)]) == 0
    files = {p.name for p in out.iterdir()}
    assert {
        "report.md",
        "decomposition.csv",
        "decomposition.md",
        "fig-preloaded-m64.png",
        "fig-adaptive-preloaded-m64.png",
    } <= files
    report = (out / "report.md").read_text()
    assert "## Did persistency pay off?" in report and "- preloaded, m=64: " in report  # one verdict per pipeline, m
    assert "interpolated linearly between the evaluations" in report  # the runs wrote evals.jsonl
    assert "default, per pipeline and m: 95% of the best test accuracy of its K=1 reference" in report
    printed = capsys.readouterr().out
    assert "Decomposition to test accuracy" in printed
    assert "…" not in printed  # captured output is not a terminal: a pipe's width must keep every name whole
    header = (out / "decomposition.md").read_text().splitlines()[0]
    assert "loading x" in header and "convergence x" in header and "speedup x" in header


def test_report_bad_input_is_one_line(sweep_dir, tmp_path, capsys):
    runs = [str(p) for p in sorted(sweep_dir.iterdir())]
    assert main(["report", *runs, "--out", str(tmp_path / "r"), "--target", "0.999"]) == 2
    assert "is reached by no run" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty), "--out", str(tmp_path / "r")]) == 2
    assert "is not a persist run folder" in capsys.readouterr().err


def test_a_sweep_budget_gives_every_k_the_same_work(tmp_path, monkeypatch_module, capsys):
    from persist.records import read_records

    out = tmp_path / "budgeted"
    grid = ["--pipelines", "preloaded", "--batch-sizes", "64", "--persistencies", "1,2", "--seeds", "1x"]
    args = ["sweep", "--preset", "cpu", "--out", str(out), *grid, "--budget", "640sample-steps", *TINY]
    assert main(args) == 0
    for run in ("preloaded-m64-K1-constant-s0", "preloaded-m64-K2-constant-s0", "preloaded-m64-K2-linear-s0"):
        assert sum(r.sample_steps for r in read_records(out / run)) == 640, run
    before = {p.name: (p / "epochs.jsonl").read_text() for p in out.iterdir()}
    assert main(args) == 0  # a rerun: every budget is spent, nothing trains again
    assert {p.name: (p / "epochs.jsonl").read_text() for p in out.iterdir()} == before


def test_reuse_variants_get_their_own_figures_and_one_side_by_side(tmp_path):
    from test_analysis import _epochs, _frame

    from persist.analysis.figures import paper_figures, reuse_figures

    rows = _frame(
        _epochs("preloaded", 32, 1, 0, [0.2, 0.4], 1.0, 0.9),
        _epochs("preloaded", 32, 2, 0, [0.3, 0.5], 2.0, 1.8),
    )
    reaugment = _frame(_epochs("preloaded", 32, 2, 0, [0.35, 0.55], 2.1, 1.9)).assign(
        reuse="reaugment", augment="crop-flip", run="preloaded-m32-K2-constant-reaugment-s0"
    )
    epochs = pandas.concat([rows, reaugment], ignore_index=True)
    names = {
        p.name for p in paper_figures(epochs, "preloaded", tmp_path) + reuse_figures(epochs, "preloaded", tmp_path)
    }
    assert names == {"fig-preloaded-m32.png", "fig-preloaded-m32-reaugment.png", "fig-reuse-preloaded-m32.png"}
    assert all((tmp_path / name).stat().st_size > 10_000 for name in names)
    assert reuse_figures(rows, "preloaded", tmp_path) == []  # one variant: nothing to compare
