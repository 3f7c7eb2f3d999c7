"""An emulated run's records say so: the manifest's profile and step time, clock emulated, no loss, no evaluation;
persist report shows its loading and judges nothing else; persist compare never holds it against a real run."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, replace

import pandas
import pytest

from persist.cli.main import main
from persist.config import RunConfig
from persist.records import read_manifest, read_records

TINY = ["--dataset", "synthetic", "--device", "cpu", "--train-size", "256", "--test-size", "64", "--width", "0.125"]


@pytest.fixture(scope="module")
def emulated_sweep(tmp_path_factory):
    """An emulated sweep of the cpu preset on 256 synthetic images: K in {1, 2}, one seed, two epochs."""
    import persist.runs.sweep as sweep

    mp = pytest.MonkeyPatch()
    grid = sweep.PRESETS["cpu"]
    mp.setitem(sweep.PRESETS, "cpu", replace(grid, base=replace(grid.base, train_size=256, test_size=64)))
    out = tmp_path_factory.mktemp("emulated-sweep")
    args = ["sweep", "--preset", "cpu", "--out", str(out), "--pipelines", "preloaded,torchvision"]
    args += ["--batch-sizes", "64", "--persistencies", "1,2", "--schedules", "constant", "--seeds", "0"]
    args += ["--epochs", "2", "--compute", "emulated:2ms@64", "--dataset", "synthetic", "--device", "cpu", "--quiet"]
    try:
        assert main(args) == 0
    finally:
        mp.undo()
    return out


def test_the_manifest_and_records_say_the_compute_was_emulated(tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                *TINY,
                "-m",
                "32",
                "-K",
                "2",
                "--epochs",
                "2",
                "--compute",
                "emulated:4ms@64",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    manifest = read_manifest(out)
    assert manifest["config"]["compute"] == "emulated:4ms@64" and manifest["clock"] == "emulated"
    emulated = manifest["compute"]["emulated"]
    assert emulated["step_s_used"] == pytest.approx(0.002) and emulated["source"] == "given on the command line: 4ms@64"
    records = read_records(out)
    assert [r.clock for r in records] == ["emulated", "emulated"]
    assert all(math.isnan(r.train_loss) and math.isnan(r.test_acc) and r.eval_s == 0 for r in records)
    assert not (out / "evals.jsonl").exists() or (out / "evals.jsonl").read_text() == ""  # evaluation skipped


def test_the_sweep_takes_compute_and_times_every_pipeline_in_full(emulated_sweep):
    folders = sorted(emulated_sweep.iterdir())
    assert len(folders) == 4
    for folder in folders:
        assert read_manifest(folder)["config"]["compute"] == "emulated:2ms@64"
        assert len(read_records(folder)) == 2  # no timing-only cut: nothing to compose


def test_report_shows_loading_and_refuses_to_judge_convergence(emulated_sweep, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", *map(str, sorted(emulated_sweep.iterdir())), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Convergence is not judged" in printed and "AU %" in printed
    table = pandas.read_csv(out / "loading.csv")
    assert len(table) == 4 and set(table["k_label"].astype(str)) == {"1", "2"}
    assert (table["step_ms"] == 2.0).all() and table["au"].between(0, 100).all()
    assert (table[table["k_label"].astype(str) == "2"]["uses_per_load"] == 2.0).all()
    assert not (out / "decomposition.csv").exists()
    assert "AU >= 90%" in (out / "report.md").read_text()


def test_report_refuses_to_mix_emulated_and_real_runs(emulated_sweep, tmp_path, capsys):
    real = tmp_path / "real"
    assert main(["train", *TINY, "-m", "64", "--epochs", "1", "--out", str(real), "--quiet"]) == 0
    capsys.readouterr()
    runs = [str(real), *map(str, sorted(emulated_sweep.iterdir()))]
    assert main(["report", *runs, "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mix emulated compute" in err and "report them apart" in err


def test_a_bad_compute_flag_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["train", *TINY, "--compute", "emulated:nowhere", "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "neither a compute profile nor a persist run folder" in err


def _bench_file(path, compute: str) -> str:
    config = asdict(RunConfig(compute=compute))
    bench = {"fullname": "a", "name": "a", "stats": {"data": [1.0, 1.01, 0.99]}}
    payload = {
        "machine_info": {"persist": {"device_id": "cpu x2", "profile": "smoke"}},
        "benchmarks": [{**bench, "extra_info": {"kind": "train_epoch", "config": config}}],
    }
    path.write_text(json.dumps(payload))
    return str(path)


def test_compare_never_matches_an_emulated_cell_against_a_real_one(tmp_path, capsys):
    real, emulated = _bench_file(tmp_path / "real.json", "real"), _bench_file(tmp_path / "em.json", "emulated:1ms@32")
    assert main(["compare", real, emulated]) == 2
    err = capsys.readouterr().err
    assert "not comparable" in err and "compute='real' (candidate 'emulated:1ms@32')" in err
    assert main(["compare", emulated, _bench_file(tmp_path / "em2.json", "emulated:1ms@32")]) == 0


def test_compare_without_a_config_keys_on_the_recorded_compute(tmp_path, capsys):
    from persist.benchjson.compare import work_difference

    payload = {"machine_info": {"persist": {"profile": "smoke"}}, "benchmarks": []}
    real = {"fullname": "a", "extra_info": {"kind": "train_epoch", "pipeline": "preloaded"}}
    emulated = {
        "fullname": "a",
        "extra_info": {"kind": "train_epoch", "pipeline": "preloaded", "compute": "emulated:x"},
    }
    assert "compute='real' (candidate 'emulated:x')" in work_difference(real, emulated, payload, payload)


class _Options:
    """What bench/options.py's setup_of reads from pytest's config."""

    def __init__(self, **given):
        self.values = {
            "--persist-device": "cpu",
            "--persist-profile": "smoke",
            "--persist-train-size": None,
            "--persist-dataset": "synthetic",
            "--persist-data-root": None,
            "--persist-storage": "raw",
            "--persist-storage-dir": None,
            "--persist-augment": "none",
            "--persist-rounds": 1,
            "--persist-strict": False,
            "--persist-compute": "real",
            **given,
        }

    def getoption(self, name):
        return self.values[name]


def test_the_bench_takes_compute_for_its_training_cells(monkeypatch):
    from conftest import BENCH

    monkeypatch.syspath_prepend(str(BENCH))
    import options

    setup = options.setup_of(_Options(**{"--persist-compute": "emulated:h100-resnet50"}))
    assert setup.compute == "emulated:h100-resnet50" and setup.base.compute == "real"  # the model cells stay real
    with pytest.raises(pytest.UsageError, match="--persist-compute: compute='fake' is not allowed"):
        options.setup_of(_Options(**{"--persist-compute": "fake"}))
