"""The regression gate: a real 25% slowdown is caught, jitter and identical input pass, bad input is exit 2."""

import json
import random

import pytest

from persist.benchjson.compare import compare_one
from persist.cli.main import main
from persist.stats import mann_whitney_p

BASE = [1.00, 1.02, 0.99, 1.01, 1.00]


def _write(path, rounds_by_name, device="NVIDIA H100 80GB HBM3"):
    """pytest-benchmark JSON with per-round data and persist's machine info."""
    benchmarks = [
        {"fullname": name, "name": name, "stats": {"data": data, "median": sorted(data)[len(data) // 2]}}
        for name, data in rounds_by_name.items()
    ]
    machine = {"persist": {"device": device, "device_id": device}}
    path.write_text(json.dumps({"machine_info": machine, "benchmarks": benchmarks}))
    return str(path)


def test_uniform_25_percent_slowdown_of_5_rounds_is_a_regression():
    result = compare_one("cell", BASE, [1.25 * t for t in BASE], threshold=0.10)
    assert result.verdict == "regression" and result.test == "mann-whitney-u" and result.p_value < 0.05
    assert result.ratio == pytest.approx(1.25)


def test_jitter_of_3_percent_passes():
    rng = random.Random(0)
    for _ in range(50):
        jittered = [t * (1 + rng.uniform(-0.03, 0.03)) for t in BASE]
        assert compare_one("cell", BASE, jittered, threshold=0.10).verdict == "same"


def test_identical_input_passes():
    result = compare_one("cell", BASE, list(BASE), threshold=0.10)
    assert result.verdict == "same" and not result.significant and result.ratio == 1


def test_few_rounds_fall_back_to_confidence_intervals():
    slow = compare_one("cell", [1.0, 1.01, 0.99], [1.3, 1.31, 1.29], threshold=0.10)
    assert slow.test == "ci-overlap" and slow.verdict == "regression"
    noisy = compare_one("cell", [1.0, 1.5, 0.7], [1.3, 1.9, 0.9], threshold=0.10)
    assert noisy.verdict == "same"  # 25% slower by median, but the intervals overlap: not significant


def test_mann_whitney_exact_p_values():
    assert mann_whitney_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)
    assert mann_whitney_p([1, 2, 3], [1.5, 2.5, 3.5]) == pytest.approx(0.7)  # U=3 of 9: the middle of the range


def test_cli_exit_codes(tmp_path, capsys):
    base = _write(tmp_path / "base.json", {"a": BASE, "b": BASE})
    slow = _write(tmp_path / "slow.json", {"a": [1.25 * t for t in BASE], "b": BASE})
    assert main(["compare", base, base]) == 0
    assert main(["compare", base, slow]) == 1
    assert "1 regression(s) in 2 benchmark(s)" in capsys.readouterr().out
    assert main(["compare", base, slow, "--threshold", "30"]) == 0
    capsys.readouterr()
    assert main(["compare", base, slow, "--json"]) == 1
    payload = json.loads(capsys.readouterr().out)
    assert payload["regressions"] == 1 and {r["name"]: r["verdict"] for r in payload["results"]}["a"] == "regression"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("garbage", "is not readable JSON"),
        ("disjoint", "have no benchmarks in common"),
        ("other_device", "baseline device 'NVIDIA H100 80GB HBM3' differs from candidate device 'cpu'"),
    ],
)
def test_bad_input_is_exit_2(tmp_path, capsys, setup, message):
    base = _write(tmp_path / "base.json", {"a": BASE})
    other = tmp_path / "other.json"
    if setup == "garbage":
        other.write_text("{")
    elif setup == "disjoint":
        _write(other, {"z": BASE})
    else:
        _write(other, {"a": BASE}, device="cpu")
    assert main(["compare", base, str(other)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    if setup == "other_device":
        assert main(["compare", base, str(other), "--force"]) == 0


def test_a_baseline_folder_picks_the_candidates_device(tmp_path, capsys):
    folder = tmp_path / "baselines"
    folder.mkdir()
    candidate = _write(tmp_path / "cand.json", {"a": BASE}, device="cpu Intel(R) Xeon(R) x2")
    assert main(["compare", str(folder), candidate]) == 2
    assert "expected cpu-Intel-R-Xeon-R-x2.json" in capsys.readouterr().err
    _write(folder / "cpu-Intel-R-Xeon-R-x2.json", {"a": BASE}, device="cpu Intel(R) Xeon(R) x2")
    assert main(["compare", str(folder), candidate]) == 0


def _with_config(path, configs: dict, profile="smoke", rounds=None):
    """Benchmarks that record their run config (extra_info["config"]), all 25% slower when `rounds` says so."""
    from dataclasses import asdict

    from persist.config import RunConfig

    benchmarks = [
        {
            "fullname": name,
            "name": name,
            "stats": {"data": rounds or BASE},
            "extra_info": {"kind": "train_epoch", "config": asdict(RunConfig(**config))},
        }
        for name, config in configs.items()
    ]
    machine = {"persist": {"device_id": "cpu x2", "profile": profile}}
    path.write_text(json.dumps({"machine_info": machine, "benchmarks": benchmarks}))
    return str(path)


def test_unlike_configs_are_not_comparable_and_never_regressions(tmp_path, capsys):
    slow = [1.25 * t for t in BASE]
    base = _with_config(tmp_path / "base.json", {"a": {"storage": "raw"}, "b": {"data_root": "/x", "device": "cpu"}})
    cand = _with_config(
        tmp_path / "cand.json", {"a": {"storage": "jpeg"}, "b": {"data_root": "/y", "device": "auto"}}, rounds=slow
    )
    assert main(["compare", base, cand]) == 1  # b: the same work (data_root, device spelling do not count), slower
    out = capsys.readouterr().out
    assert "not comparable: storage='raw' (candidate 'jpeg')" in out
    assert "1 regression(s) in 2 benchmark(s); 1 not comparable" in out
    assert main(["compare", base, cand, "--json"]) == 1
    verdicts = {r["name"]: (r["verdict"], r["reason"]) for r in json.loads(capsys.readouterr().out)["results"]}
    assert verdicts == {"a": ("not comparable", "storage='raw' (candidate 'jpeg')"), "b": ("regression", "")}


def test_a_smoke_run_against_a_paper_run_is_refused_not_gated(tmp_path, capsys):
    base = _with_config(tmp_path / "base.json", {"a": {"width": 0.125}, "b": {"width": 0.125}})
    cand = _with_config(
        tmp_path / "cand.json", {"a": {"width": 1.0}, "b": {"width": 1.0}}, "paper", [2 * t for t in BASE]
    )
    assert main(["compare", base, cand, "--force"]) == 2  # --force is for the device alone
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not comparable" in err and "width=0.125 (candidate 1.0)" in err


def test_benchmarks_without_a_config_compare_on_their_recorded_parameters(tmp_path, capsys):
    base, cand = tmp_path / "base.json", tmp_path / "cand.json"
    _write(base, {"clock": BASE, "delay": BASE})
    _write(cand, {"clock": BASE, "delay": BASE})
    for path, profile in ((base, "smoke"), (cand, "paper")):
        payload = json.loads(path.read_text())
        payload["machine_info"]["persist"]["profile"] = profile
        payload["benchmarks"][1]["extra_info"] = {"kind": "planted_delay", "delay_ms": 5.0, "data_wait_ratio": 1.0}
        path.write_text(json.dumps(payload))
    assert main(["compare", str(base), str(cand)]) == 2
    assert "profile='smoke' (candidate 'paper')" in capsys.readouterr().err
