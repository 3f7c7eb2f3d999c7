"""The command line: a run writes its folder; every bad input is one line, exit 2, and loses nothing."""

import json
import subprocess
import sys

import pytest

from conftest import write_cifar_folder
from persist.cli.main import main
from persist.measure.machine import math_settings

SMALL = [
    "--dataset",
    "synthetic",
    "--train-size",
    "128",
    "--test-size",
    "32",
    "--width",
    "0.125",
    "-m",
    "32",
    "--device",
    "cpu",
    "--quiet",
]


def test_train_writes_manifest_and_records(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "-K", "2", "--lr-schedule", "linear", "--epochs", "2", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["persistency"] == 2 and manifest["config"]["lr_schedule"] == "linear"
    assert manifest["clock"] == "host" and manifest["device"] == "cpu" and manifest["status"] == "finished"
    assert manifest["versions"]["torch"] and manifest["pipeline"]["pipeline"] == "preloaded"
    assert manifest["math"] == math_settings() and "cudnn_benchmark" in manifest["math"]  # TF32 and autotuning
    lines = (out / "epochs.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert "epoch   2/2" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["-K", "0"], "persistency=0 is not allowed: use an integer >= 1"),
        (["-m", "0"], "batch_size=0 is not allowed"),
        (["-m", "1000"], "batch_size=1000 is not allowed: the training set has 128 samples"),
        (["--pipeline", "ffcv"], "pipeline='ffcv' is not allowed: choose one of preloaded, torchvision, dali"),
        (["--dataset", "mnist"], "dataset='mnist' is not allowed"),
        (["--device", "cuda:7"], "device='cuda:7' does not exist"),
        (["--lr", "-1"], "lr=-1.0 is not allowed"),
        (["--epochs", "0"], "epochs=0 is not allowed"),
        (["--num-workers", "2"], "num_workers=2 applies only to --pipeline torchvision"),
        (["--profile", "huge"], "profile='huge' is not allowed"),
        (["-K", "two"], "persistency='two' is not allowed: use an integer K >= 1, auto, or auto:N"),
        (["-K", "auto:1"], "persistency=auto:1 is not allowed: auto needs a cap of 2 or more"),
        (["--lr", "1e6"], "train loss became nan in epoch 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, flags, message):
    assert _exit_code(["train", *SMALL, *flags, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_foreign_run_folder_is_refused_and_kept(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["train", *SMALL, "-K", "5", "--out", str(out)]) == 2
    assert "holds a different run's records: persistency=1 (now 5)" in capsys.readouterr().err
    assert main(["train", *SMALL, "--out", str(out)]) == 2
    assert "already holds 1 finished epoch(s) of this run: pass --resume" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_missing_and_corrupt_cifar_are_one_line(tmp_path, capsys):
    args = ["train", "--dataset", "cifar10", "--data-root", str(tmp_path), "--device", "cpu", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "no CIFAR-10 at" in capsys.readouterr().err
    folder, _ = write_cifar_folder(tmp_path)
    (folder / "data_batch_2").write_bytes(b"garbage")
    assert main([*args, "--out", str(tmp_path / "b")]) == 2
    assert "data_batch_2 is corrupt" in capsys.readouterr().err


def test_trains_on_a_cifar_folder(tmp_path):
    write_cifar_folder(tmp_path, n_per_batch=20)
    args = [
        "train",
        "--dataset",
        "cifar10",
        "--data-root",
        str(tmp_path),
        "-m",
        "25",
        "--width",
        "0.125",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(args) == 0
    assert json.loads((tmp_path / "run" / "epochs.jsonl").read_text())["loads"] == 4


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "persist", "train", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--persistency" in result.stdout


def _exit_code(argv):
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def test_budget_flag_units_and_bad_values(tmp_path, capsys):
    from persist.cli.main import build_parser, config_from_args

    def config(*flags):
        return config_from_args(build_parser().parse_args(["train", "--out", "x", *flags]))

    assert config("--budget", "120s").budget_s == 120.0 and config("--budget", "120s").epochs == 1_000_000
    assert config("--budget", "2e6sample-steps").budget_sample_steps == 2_000_000
    assert config("--budget", "10epochs").epochs == 10 and config("--budget", "10epochs").budget_s is None
    assert config("--budget", "60s", "--epochs", "4").epochs == 4
    for bad in ("10", "10x", "0s", "1.5epochs", "nans"):
        assert _exit_code(["train", *SMALL, "--budget", bad, "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err
        assert f"{bad!r} is not a budget: use training seconds (120s)" in err and err.count("\n") == 1
    assert _exit_code(["train", *SMALL, "--budget", "3epochs", "--epochs", "3", "--out", str(tmp_path / "r")]) == 2
    assert "say the same thing: give one" in capsys.readouterr().err


def test_the_manifest_records_what_deterministic_did(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--deterministic", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["deterministic"] is True
    assert manifest["determinism"] == {
        "requested": True,
        "applied": False,
        "why": "cpu kernels are deterministic already",
    }


def test_bare_persist_prints_help_and_version_is_known(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: persist") and "train" in out and "compare" in out and "verify" in out
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("persist ")
