"""--precision, --channels-last and --compile: what runs on a CPU, what is refused, and what the manifest records."""

import json
from dataclasses import replace

import pytest
import torch

from persist.cli.main import main
from persist.config import RunConfig
from persist.errors import ConfigError
from persist.training.optim import PaperSGD
from persist.training.precision import Precision
from persist.training.trainer import Trainer

SMALL = ["--train-size", "128", "--test-size", "32", "--width", "0.125", "-m", "32", "--device", "cpu", "--quiet"]


def test_bf16_channels_last_trains_on_the_cpu_and_the_manifest_says_so(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *SMALL, "--precision", "bf16", "--channels-last", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["precision"] == "bf16" and manifest["config"]["channels_last"] is True
    assert manifest["compute"] == {
        "precision": "bf16",
        "channels_last": True,
        "autocast_dtype": "bfloat16",
        "compile": False,
        "compile_s": None,
        "emulated": None,  # real compute (--compute real)
    }
    record = json.loads((out / "epochs.jsonl").read_text().splitlines()[-1])
    assert record["train_loss"] == pytest.approx(2.3, abs=0.2)


def test_tf32_on_a_cpu_and_an_unknown_precision_are_one_line(tmp_path, capsys):
    assert main(["train", *SMALL, "--precision", "tf32", "--out", str(tmp_path / "a")]) == 2
    assert "TF32 is a CUDA tensor-core mode" in capsys.readouterr().err
    assert main(["sweep", "--precision", "tf32", "--device", "cpu", "--out", str(tmp_path / "s")]) == 2
    assert "TF32 is a CUDA tensor-core mode" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "s").exists()  # refused before any folder is made
    with pytest.raises(ConfigError, match="precision='fp8' is not allowed"):
        RunConfig(precision="fp8")


def test_fp16_unscales_before_the_paper_optimizer_steps():
    """Through the gradient scaler the paper's update sees the true gradient: after one step the weights moved
    by lr * grad, not by lr * grad * scale."""
    weight = torch.nn.Parameter(torch.ones(4))
    optimizer = PaperSGD([weight], lr=0.1, momentum=0.0)
    precision = Precision("fp16", torch.device("cpu"))
    precision.backward_and_step((weight * 2.0).sum(), optimizer)  # d/dw = 2
    assert torch.allclose(weight.detach(), torch.full((4,), 0.8))


def test_the_compile_warm_up_changes_no_training_number(tiny_data, tiny_config, monkeypatch):
    """The warm-up step that compiles restores weights and momentum: the first epoch's loss is the uncompiled one's.
    (The compile itself is stubbed out here: torch.compile on a CPU needs a C++ toolchain and a minute.)"""
    monkeypatch.setattr(torch, "compile", lambda module: module)
    config = replace(tiny_config, epochs=1, compile=True)
    compiled = Trainer(config, tiny_data)
    plain = Trainer(replace(config, compile=False), tiny_data)
    assert compiled.compile_s is not None and compiled.compile_s >= 0 and plain.compile_s is None
    for name, value in plain.model.state_dict().items():
        assert torch.equal(value, compiled.model.state_dict()[name]), name
    assert compiled.train_epoch(1)["train_loss"] == pytest.approx(plain.train_epoch(1)["train_loss"], rel=1e-4)
    compiled.close(), plain.close()
