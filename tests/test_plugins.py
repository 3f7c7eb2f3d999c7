"""Registries open to plug-ins: a torchvision model and the user's own model, lr schedule and pipeline train on every
pipeline, the manifest names each plug-in with its module's sha256, and a broken one is one line with exit 2."""

import hashlib
import json
import sys
import textwrap

import pytest

from conftest import HAS_DALI
from persist.cli import main
from persist.config import RunConfig
from persist.errors import ConfigError, PluginError
from persist.registry import MODELS, PIPELINES, register_model

PIPELINE_NAMES = ["preloaded", "torchvision"] + (["dali"] if HAS_DALI else [])
DIGITS = ["--dataset", "digits", "--train-size", "128", "--test-size", "64", "-m", "32", "--epochs", "1"]
COMMON = [*DIGITS, "--device", "cpu", "--quiet"]

PLUGIN_SOURCE = '''
import torch


def tiny_net(num_classes, image_shape):
    channels, height, width = image_shape
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(channels * height * width, num_classes))


def not_a_module(num_classes, image_shape):
    return "a string"


def halving(mu, k):
    return mu / 2**(k - 1)


def negative(mu, k):
    return -mu


class EveryOtherBatch:
    """The user's own pipeline: the preloaded one, but only its even-numbered loads."""

    name = "every-other"

    def __init__(self, data, batch_size, seed, device, *, augment=False, rank=0, world_size=1):
        from persist.data.pipelines.preloaded import PreloadedPipeline

        self.inner = PreloadedPipeline(data, batch_size, seed, device, augment=augment, rank=rank,
                                       world_size=world_size)

    def __len__(self):
        return (len(self.inner) + 1) // 2

    def epoch(self, epoch):
        for i, batch in enumerate(self.inner.epoch(epoch)):
            if i % 2 == 0:
                yield batch

    def describe(self):
        return {"pipeline": self.name}

    def close(self):
        self.inner.close()
'''


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """A module on sys.path (as PYTHONPATH would put it), written by the test."""
    path = tmp_path / "user_plugins.py"
    path.write_text(textwrap.dedent(PLUGIN_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "user_plugins", raising=False)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", PIPELINE_NAMES)
def test_a_torchvision_model_and_a_plugin_model_train_on_every_pipeline(tmp_path, plugin_module, pipeline):
    sha = hashlib.sha256(plugin_module.read_bytes()).hexdigest()
    for model in ("torchvision:resnet18", "user_plugins:tiny_net"):
        out = tmp_path / model.replace(":", "-")
        assert main(["train", *COMMON, "--pipeline", pipeline, "--model", model, "--out", str(out)]) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["config"]["model"] == model and manifest["status"] == "finished"
        assert len((out / "epochs.jsonl").read_text().splitlines()) == 1
        if model.startswith("user_plugins"):
            assert manifest["plugins"]["model"] == {
                "name": model,
                "module": "user_plugins",
                "module_file": str(plugin_module),
                "sha256": sha,
            }
        else:
            assert manifest["plugins"] == {} and manifest["model_parameters"] > 11_000_000  # resnet18


def test_a_plugin_lr_schedule_and_pipeline_are_used_and_recorded(tmp_path, plugin_module):
    from persist.records import read_records

    out = tmp_path / "run"
    args = ["train", *COMMON, "--width", "0.125", "-K", "3", "--lr-schedule", "user_plugins:halving"]
    assert main([*args, "--pipeline", "user_plugins:EveryOtherBatch", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["plugins"]) == {"lr_schedule", "pipeline"} and manifest["pipeline"] == {
        "pipeline": "every-other",
        "plugin": {"prefetches": False, "normalization": None, "warnings": []},  # declares neither
    }
    record = read_records(out)[0]
    assert (record.loads, record.steps) == (2, 6)  # 4 loads of 32 in 128 images, every other one, K=3
    from persist.training.schedules import uses

    assert [u.lr for u in uses(3, "user_plugins:halving", 0.001)] == [0.001, 0.0005, 0.00025]
    assert [u.lr_factor for u in uses(3, "linear", 0.001)] == pytest.approx([1, 2, 3])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model", "no_such_module:net"], "--model no_such_module:net: cannot import 'no_such_module'"),
        (["--model", "user_plugins:missing"], "user_plugins has no 'missing'"),
        (["--model", "user_plugins:not_a_module"], "returned a str, expected a torch.nn.Module"),
        (["--model", "torchvision:resnet9000"], "torchvision has no classification model 'resnet9000'"),
        (["--model", "alexnet"], "model='alexnet' is not allowed: choose one of paper-alexnet, torchvision:NAME"),
        (["--pipeline", "user_plugins:tiny_net"], "it is a function, but --pipeline expects a class that implements"),
        (["--lr-schedule", "user_plugins:negative"], "use 1 got lr=-0.001, but a schedule must return a finite"),
        (["--model", "torchvision:resnet18", "--width", "0.5"], "width=0.5 applies only to --model paper-alexnet"),
    ],
)
def test_a_broken_plugin_is_one_line_and_exit_2(tmp_path, capsys, plugin_module, flags, message):
    assert main(["train", *COMMON, *flags, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_registries_are_the_one_list_of_names(monkeypatch):
    from persist.cli import build_parser

    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for name in (*PIPELINES.names(), *MODELS.names(), "torchvision:NAME"):
        assert name in help_text
    with pytest.raises(ConfigError, match="pipeline='ffcv' is not allowed: choose one of preloaded, torchvision, dali"):
        RunConfig(pipeline="ffcv")
    monkeypatch.setattr(MODELS, "entries", dict(MODELS.entries))  # the registration ends with the test
    register_model("mine", lambda num_classes, image_shape: None)
    assert "mine" in MODELS.names() and RunConfig(model="mine").model == "mine"
    with pytest.raises(PluginError, match="returned a NoneType"):
        from persist.training.trainer import Trainer

        Trainer(RunConfig(model="mine", dataset="digits", train_size=64, test_size=32, device="cpu", batch_size=32))


class FolderProbe:
    """A user's pipeline that keeps what make_pipeline hands it."""

    name = "folder-probe"
    received: dict | None = None

    def __init__(self, data, batch_size, seed, device, *, augment=False, rank=0, world_size=1):
        FolderProbe.received = {"data": data, "args": (batch_size, seed, device)}
        FolderProbe.received["options"] = {"augment": augment, "rank": rank, "world_size": world_size}

    def __len__(self):
        return 0

    def epoch(self, epoch):
        yield from ()

    def describe(self):
        return {"pipeline": self.name}

    def close(self):
        pass


@pytest.mark.parametrize("name", ["folder-probe", "preloaded"])
def test_a_registered_plugin_pipeline_receives_an_image_folder(tmp_path, monkeypatch, name):
    """The registry is the one dispatch: an image folder reaches the user's class (under its own name, or under a
    built-in's) with the protocol's arguments only, and its ImageData says what it holds."""
    import torch
    from test_folder import write_mixed_folder

    from persist.data import load_dataset
    from persist.data.pipelines import make_pipeline
    from persist.registry import register_pipeline

    monkeypatch.setattr(PIPELINES, "entries", dict(PIPELINES.entries))  # the registration ends with the test
    monkeypatch.setattr(PIPELINES, "helps", dict(PIPELINES.helps))
    register_pipeline(name, FolderProbe)
    folder = write_mixed_folder(tmp_path / "images")
    config = RunConfig(dataset="imagefolder", data_root=str(folder), image_size=16, batch_size=4, device="cpu")
    config = RunConfig(**{**config.as_dict(), "pipeline": name})
    data = load_dataset(config)
    pipeline = make_pipeline(config, data, torch.device("cpu"), rank=1, world_size=2)
    assert isinstance(pipeline.inner, FolderProbe)  # wrapped: whatever the user's code raises is one line
    got = FolderProbe.received
    assert got["data"] is data and got["args"] == (4, 0, torch.device("cpu"))
    assert got["options"] == {"augment": False, "rank": 1, "world_size": 2}
    assert got["data"].image_size == 16 and got["data"].train_x.shape == (0, 16, 16, 3)
    assert len(got["data"].train_files) == len(got["data"].train_sizes) == len(got["data"].train_y) == 16
    assert all(height >= 18 and width >= 20 for height, width in got["data"].train_sizes)  # each file's own (H, W)
