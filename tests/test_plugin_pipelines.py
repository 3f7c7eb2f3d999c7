"""What a plug-in pipeline declares: its normalization (checked against the test split's once, on the first batch,
and a mismatch is a recorded warning) and whether it prefetches (what `persist whatif` forecasts it as); and over an
image folder it reads the run's selected files, from the folder's root."""

import json
import sys
import textwrap

import pytest
from test_plugins import FolderProbe

from persist.cli import main

COMMON = ["--dataset", "digits", "--train-size", "128", "--test-size", "64", "-m", "32", "--epochs", "2"]
COMMON = [*COMMON, "--device", "cpu", "--quiet", "--width", "0.125"]

PLUGIN_SOURCE = '''
import torch

from persist.data.pipelines.preloaded import PreloadedPipeline

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class Unit:
    """The preloaded pipeline as it is: digits under --normalization unit, what the test split uses."""

    name = "unit"
    normalization = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))

    def __init__(self, data, batch_size, seed, device, *, augment=False, rank=0, world_size=1):
        self.inner = PreloadedPipeline(data, batch_size, seed, device, rank=rank, world_size=world_size)

    def __len__(self):
        return len(self.inner)

    def epoch(self, epoch):
        yield from self.inner.epoch(epoch)

    def describe(self):
        return {"pipeline": self.name}

    def close(self):
        self.inner.close()


class Imagenet(Unit):
    """Its batches renormalized with ImageNet's mean and std, as a reader written for ImageNet would."""

    name = "imagenet"
    normalization = IMAGENET

    def epoch(self, epoch):
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in IMAGENET)
        for x, y in self.inner.epoch(epoch):
            yield (x - mean) / std, y


class Undeclared(Imagenet):
    normalization = None


class Prefetching(Unit):
    prefetches = True
'''


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    (tmp_path / "norm_plugins.py").write_text(textwrap.dedent(PLUGIN_SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "norm_plugins", raising=False)


def _train(tmp_path, cls: str) -> dict:
    out = tmp_path / cls
    assert main(["train", *COMMON, "--pipeline", f"norm_plugins:{cls}", "--out", str(out)]) == 0
    return json.loads((out / "manifest.json").read_text())


@pytest.mark.parametrize("cls", ["Imagenet", "Undeclared"])
def test_a_plugin_normalizing_unlike_the_test_split_gets_a_recorded_warning_printed_once(
    tmp_path, plugins, capsys, cls
):
    plugin = _train(tmp_path, cls)["pipeline"]["plugin"]
    stats = [w for w in plugin["warnings"] if "first training batch" in w]
    declared = [w for w in plugin["warnings"] if "declares normalization" in w]
    assert len(stats) == 1 and "normalizes differently" in stats[0]
    assert len(declared) == (1 if cls == "Imagenet" else 0)
    assert plugin["normalization"] == (None if cls == "Undeclared" else [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]])
    printed = capsys.readouterr().err
    assert printed.count("persist: warning: --pipeline") == len(plugin["warnings"])  # once each, over two epochs


def test_a_plugin_normalizing_as_the_test_split_gets_no_warning(tmp_path, plugins, capsys):
    plugin = _train(tmp_path, "Unit")["pipeline"]["plugin"]
    assert plugin == {"prefetches": False, "normalization": [[0.0] * 3, [1.0] * 3], "warnings": []}
    assert "warning" not in capsys.readouterr().err


def test_whatif_takes_a_plugin_that_declares_prefetches_as_async_and_others_as_sync(tmp_path, plugins):
    from persist.analysis.whatif import loader_of_run

    prefetching, plain = _train(tmp_path, "Prefetching"), _train(tmp_path, "Unit")
    assert prefetching["pipeline"]["plugin"]["prefetches"] is True
    assert loader_of_run(prefetching) == (
        "async",
        "the plug-in pipeline norm_plugins:Prefetching declares prefetches = True",
    )
    assert loader_of_run(plain)[0] == "sync"


class FolderReader(FolderProbe):
    """A plug-in with its own reader: it takes the folder's root and the run's files, nothing more."""

    name = "folder-reader"
    seen: dict | None = None

    def __init__(self, data, batch_size, seed, device, *, augment=False, rank=0, world_size=1):
        from persist.data.pipelines.sources import source_of

        source = source_of(data)
        FolderReader.seen = {"root": source.root, "files": source.files}


def test_a_plugin_over_an_image_folder_sees_the_root_and_exactly_the_runs_selected_files(tmp_path, monkeypatch):
    import torch
    from test_folder import write_mixed_folder

    from persist.config import RunConfig
    from persist.data import load_dataset
    from persist.data.imagefolder import describe_folder, files_sha256
    from persist.data.pipelines import make_pipeline
    from persist.registry import PIPELINES, register_pipeline

    monkeypatch.setattr(PIPELINES, "entries", dict(PIPELINES.entries))
    monkeypatch.setattr(PIPELINES, "helps", dict(PIPELINES.helps))
    register_pipeline("folder-reader", FolderReader)
    folder = write_mixed_folder(tmp_path / "images")
    config = RunConfig(dataset="imagefolder", data_root=str(folder), image_size=16, batch_size=4, device="cpu")
    config = RunConfig(**{**config.as_dict(), "pipeline": "folder-reader", "train_size": 6})
    data = load_dataset(config)
    make_pipeline(config, data, torch.device("cpu"))
    seen, recorded = FolderReader.seen, describe_folder(data)
    everything = sorted(str(p.resolve()) for p in (folder / "train").rglob("*") if p.is_file())
    assert seen["root"] == str(folder.resolve()) == recorded["root"]
    assert len(seen["files"]) == 6 < len(everything) and set(seen["files"]) <= set(everything)
    assert seen["files"] == data.train_files and files_sha256(seen["files"]) == recorded["train_files_sha256"]
