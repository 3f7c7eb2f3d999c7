"""The summary table: computed from pytest-benchmark's JSON form, the same live and from a saved file."""

import json

import pytest
from rich.console import Console

from persist.benchjson.summary import print_summary_file, summary_rows
from persist.cli.main import main
from persist.errors import PersistError


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
    # a file written before the three verdicts: no `verdict`, and an interval that straddles the bound
    assert "[0.930, 0.990]" in out and ">= 0.98" in out and "inconclusive" in out


def test_the_checks_table_shows_each_verdict_with_its_pairs_half_width_and_cap():
    from persist.benchjson.checks import check_rows, render_checks
    from persist.stats import ratio_check

    def bench(name, ratios, **how):
        check = ratio_check(name, ratios, low_bound=0.98, **how)
        return {"name": name, "extra_info": {"kind": "vs_reference", "checks": [check.as_dict()]}}

    base = [0.99, 1.00, 1.01, 1.02, 1.03, 1.04, 1.05, 1.06, 1.07, 1.08]  # interval [1.00, 1.07]
    benchmarks = [
        bench("good", base, tolerance=0.02, stopped="narrow", cap_s=30.0, spent_s=4.0),
        bench("slow", [r - 0.2 for r in base], tolerance=0.02, stopped="narrow", cap_s=30.0, spent_s=5.0),
        bench("wide", [r - 0.05 for r in base], tolerance=0.02, stopped="cap", cap_s=30.0, spent_s=31.0),
    ]
    rows = check_rows(benchmarks)
    assert [r["verdict"] for r in rows] == ["pass", "fail", "inconclusive"]
    assert rows[2]["half_width"] == pytest.approx(0.035) and rows[2]["pairs"] == 10
    console = Console(width=250, record=True)
    console.print(render_checks(rows))
    text = console.export_text()
    assert "pass" in text and "fail" in text and "inconclusive" in text
    assert "0.035 / 0.02" in text and "cap (31 of 30 s)" in text and "narrow (4 of 30 s)" in text


def test_every_k_is_predicted_from_its_k1_cell():
    """K=1: 10 loads, 10 steps, a 1.0 s epoch with 0.4 s data wait -> 0.04 s wait per load, 0.06 s per step.
    torchvision with 0 workers loads synchronously: K=5 = 10 x 0.04 + 50 x 0.06 = 3.4 s; measured 2.72 s -> +25%."""
    k1 = _cell("torchvision", 256, 1, 1.0, 0.4, 0.5, 0.1)
    k5 = _cell("torchvision", 256, 5, 2.72, 0.4, 2.0, 0.1)
    k1["extra_info"].update(loads=10, steps=10)
    k5["extra_info"].update(loads=10, steps=50)
    one, five = summary_rows([k1, k5])
    assert one["predicted_epoch_s"] == pytest.approx(1.0) and one["prediction_error_pct"] == pytest.approx(0)
    assert five["predicted_epoch_s"] == pytest.approx(3.4) and five["prediction_error_pct"] == pytest.approx(25)


def test_a_prefetching_pipeline_hides_its_loads_behind_k_steps():
    """DALI prefetches: the K=1 wait of 0.04 s per load is what one 0.06 s step could not hide, so a load takes
    0.10 s; at K=2 it overlaps 0.12 s of steps and stalls nothing: 20 steps x 0.06 = 1.2 s (the synchronous model
    would say 1.6 s). torchvision with workers prefetches too."""
    k1 = _cell("dali", 256, 1, 1.0, 0.4, 0.5, 0.1)
    k2 = _cell("dali", 256, 2, 1.2, 0.0, 1.1, 0.1)
    for cell, steps in ((k1, 10), (k2, 20)):
        cell["extra_info"].update(loads=10, steps=steps)
    one, two = summary_rows([k1, k2])
    assert one["loader"] == "async" and one["predicted_epoch_s"] == pytest.approx(1.0)
    assert two["predicted_epoch_s"] == pytest.approx(1.2) and two["prediction_error_pct"] == pytest.approx(0)
    workers = _cell("torchvision", 256, 1, 1.0, 0.4, 0.5, 0.1)
    workers["extra_info"]["pipeline_options"] = {"num_workers": 2}
    assert summary_rows([workers])[0]["loader"] == "async"


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


def test_a_cuda_cell_is_predicted_from_the_devices_data_stall():
    """Preloaded on CUDA, device-bound: the host waited 0.4 s, blocked in launches behind CUDA's full queue, but the
    device idled only 0.1 s for data (0.01 s per load), so a step costs 0.09 s: K=5 = 10 x 0.01 + 50 x 0.09 = 4.6 s
    (from the host's wait it would be 3.4 s). A cell without the device figure keeps the host's."""
    k1 = _cell("preloaded", 256, 1, 1.0, 0.4, 0.9, 0.1)
    k5 = _cell("preloaded", 256, 5, 4.6, 0.4, 4.5, 0.1)
    for cell, steps in ((k1, 10), (k5, 50)):
        cell["extra_info"].update(loads=10, steps=steps, clock="cuda_events", data_stall_s=0.1)
    assert summary_rows([k1, k5])[1]["predicted_epoch_s"] == pytest.approx(4.6)
    del k1["extra_info"]["data_stall_s"]
    assert summary_rows([k1, k5])[1]["predicted_epoch_s"] == pytest.approx(3.4)
