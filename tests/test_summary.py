"""The summary table: computed from pytest-benchmark's JSON form, the same live and from a saved file."""

import json

import pytest
from rich.console import Console

from persist.benchjson.summary import print_summary_file, summary_rows
from persist.cli.main import main
from persist.config import PersistError


def _cell(pipeline, m, k, median_s, data_wait_s, compute_s, idle_s, util=None):
    return {
        "name": f"bench_epoch[{pipeline}-m{m}-K{k}]",
        "stats": {"median": median_s, "iqr": 0.01, "rounds": 3, "data": [median_s] * 3},
        "extra_info": {
            "kind": "train_epoch",
            "pipeline": pipeline,
            "batch_size": m,
            "persistency": k,
            "device": "cpu",
            "clock": "host",
            "fresh_samples": 1000,
            "data_wait_s": data_wait_s,
            "compute_s": compute_s,
            "gpu_idle_s": idle_s,
            "nvml": {"available": util is not None, "util_mean_pct": util},
        },
    }


def test_rows_are_computed_from_the_json_form():
    benchmarks = [
        _cell("torchvision", 256, 5, 2.0, 0.5, 1.4, 0.6, util=80.0),
        _cell("preloaded", 256, 1, 0.5, 0.0, 0.5, 0.0),
        {"name": "bench_model_only[m256]", "stats": {"median": 1.0}, "extra_info": {"kind": "model_only"}},
    ]
    rows = summary_rows(benchmarks)
    assert [(r["pipeline"], r["persistency"]) for r in rows] == [("preloaded", 1), ("torchvision", 5)]
    tv = rows[1]
    assert tv["fresh_img_per_s"] == 500 and tv["data_wait_pct"] == 25 and tv["compute_pct"] == 70
    assert tv["gpu_idle_pct"] == 30 and tv["util_pct"] == 80
    assert rows[0]["epoch_vs_k1"] == 1.0 and tv["epoch_vs_k1"] is None  # no K=1 cell for torchvision here


def test_persist_summary_prints_the_table_from_a_saved_file(tmp_path, capsys):
    path = tmp_path / "out.json"
    path.write_text(json.dumps({"benchmarks": [_cell("dali", 32, 2, 1.0, 0.1, 0.8, 0.2)], "machine_info": {}}))
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "dali" in out and "1,000" in out and "n/a" in out


@pytest.mark.parametrize(
    ("content", "message"), [("{not json", "is not readable JSON"), ('{"version": 1}', "has no 'benchmarks' list")]
)
def test_a_file_that_is_not_benchmark_json_is_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert main(["summary", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    with pytest.raises(PersistError):
        print_summary_file(path, Console(file=None))


def test_a_diverged_cell_is_marked_and_the_ratio_checks_are_shown(capsys):
    from persist.benchjson.summary import print_summary

    diverged = _cell("dali", 256, 5, 2.0, 0.1, 1.8, 0.1)
    diverged["extra_info"].update({"diverged": True, "diverged_epoch": 4})
    check = {
        "name": "dali img/s / hand-written loop's",
        "ratio": 0.951,
        "ci_low": 0.93,
        "ci_high": 0.99,
        "pairs": 9,
        "low_bound": 0.98,
        "high_bound": None,
        "failed": False,
    }
    reference = {"name": "bench_against_hand_written[dali]", "stats": {}, "extra_info": {"checks": [check]}}
    rows = print_summary([diverged, reference], Console(file=None, width=250))
    assert rows[0]["diverged_epoch"] == 4
    out = capsys.readouterr().out
    assert "diverged in epoch 4" in out
    assert "[0.930, 0.990]" in out and ">= 0.98" in out and "ok" in out


def test_every_k_is_predicted_from_its_k1_cell():
    """K=1: 10 loads, 10 steps, 1.0 s epoch of which 0.5 s compute -> 0.05 s per load, 0.05 s per step.
    K=5 predicted: 10 loads x 0.05 + 50 steps x 0.05 = 3.0 s; measured 2.4 s -> the forecast is 25% high."""
    k1 = _cell("torchvision", 256, 1, 1.0, 0.4, 0.5, 0.1)
    k5 = _cell("torchvision", 256, 5, 2.4, 0.4, 2.0, 0.1)
    k1["extra_info"].update(loads=10, steps=10)
    k5["extra_info"].update(loads=10, steps=50)
    one, five = summary_rows([k1, k5])
    assert one["predicted_epoch_s"] == pytest.approx(1.0) and one["prediction_error_pct"] == pytest.approx(0)
    assert five["predicted_epoch_s"] == pytest.approx(3.0) and five["prediction_error_pct"] == pytest.approx(25)


def test_the_loading_table_gives_each_pipelines_img_per_s_and_the_one_time_decode():
    from persist.benchjson.summary import loading_rows, render_loading

    def only(pipeline, m, img_per_s, **extra):
        info = {"kind": "pipeline_only", "pipeline": pipeline, "batch_size": m, "img_per_s": img_per_s}
        return {"name": f"bench_pipeline_only[{pipeline}-m{m}]", "extra_info": {**info, **extra}}

    benchmarks = [
        only("torchvision", 256, 4000.0, storage="jpeg", decoder="libjpeg-turbo", files_decoded=8192),
        only("preloaded", 256, 300_000.0, storage="jpeg", decoder="nvJPEG", decode_setup_s=0.5, files_decoded=8192),
        only("preloaded", 32, 250_000.0),  # raw storage, from a file written before storage existed
    ]
    rows = loading_rows(benchmarks)
    assert [(r["pipeline"], r["batch_size"], r["storage"]) for r in rows] == [
        ("preloaded", 32, "raw"),
        ("preloaded", 256, "jpeg"),
        ("torchvision", 256, "jpeg"),
    ]
    assert rows[1]["setup_decode_img_per_s"] == pytest.approx(8192 / 0.5)
    assert rows[0]["setup_decode_img_per_s"] is None and rows[2]["setup_decode_img_per_s"] is None
    console = Console(width=200, record=True)
    console.print(render_loading(rows))
    text = console.export_text()
    assert "16,384" in text and "nvJPEG" in text and "4,000" in text


def test_the_imagenet_workload_gets_its_own_table_and_every_cell_its_au(tmp_path, capsys):
    """AU = compute / wall per cell, judged against MLPerf Storage's 90%; an imagenet cell's K=1 is its own."""
    paper = _cell("preloaded", 32, 1, 1.0, 0.0, 0.95, 0.05)
    imagenet_k1 = _cell("preloaded", 32, 1, 2.0, 1.0, 1.0, 1.0)
    imagenet_k2 = _cell("preloaded", 32, 2, 3.0, 1.0, 2.0, 1.0)
    for cell in (imagenet_k1, imagenet_k2):
        cell["extra_info"].update(workload="imagenet", image_size=32, model="torchvision:resnet18")
    rows = summary_rows([paper, imagenet_k1, imagenet_k2])
    assert [(r["workload"], r["persistency"]) for r in rows] == [("imagenet", 1), ("imagenet", 2), ("paper", 1)]
    assert rows[1]["epoch_vs_k1"] == 1.5  # against the imagenet K=1 cell, not the paper's at the same m
    assert rows[2]["compute_pct"] == pytest.approx(95) and rows[0]["compute_pct"] == 50
    path = tmp_path / "out.json"
    path.write_text(json.dumps({"benchmarks": [paper, imagenet_k1, imagenet_k2], "machine_info": {}}))
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "imagenet workload (torchvision:resnet18 fp32 at 32 px)" in out
    assert "AU >= 90%" in out and "MLPerf Storage" in out
    assert out.count(" yes ") == 1 and out.count(" no ") == 2
