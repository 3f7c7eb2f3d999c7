"""Encoded storage: persist prepare writes a dataset once as JPEG files, every pipeline reads and decodes them, and on
a CPU all three decoders give the same pixels (the stated bound there is 0)."""

import json

import pytest
import torch
from torchvision.io import decode_jpeg, read_file

from conftest import HAS_DALI
from persist.cli.main import main
from persist.config import RunConfig
from persist.data import load_dataset
from persist.data.datasets import synthetic
from persist.data.pipelines import make_pipeline
from persist.data.storage import INDEX, load_encoded, prepare, storage_folder
from persist.errors import StorageError
from persist.records import read_manifest, read_records

CPU = torch.device("cpu")
CPU_DECODER_BOUND = 0  # the largest pixel difference between pipelines' decoders on a CPU: none (libjpeg-turbo)


@pytest.fixture(scope="module")
def small():
    return synthetic(96, 32)


@pytest.fixture(scope="module")
def stored(small, tmp_path_factory):
    folder, written = prepare(small, tmp_path_factory.mktemp("jpeg") / "set", 90)
    assert written
    return folder


def test_prepare_writes_one_file_per_sample_and_an_index(small, stored):
    index = json.loads((stored / INDEX).read_text())
    assert index["dataset"] == "synthetic" and index["quality"] == 90 and index["format"] == "jpeg"
    assert (index["train_size"], index["test_size"]) == (96, 32) and len(index["train"]) == 96
    for i in (0, 57):
        relative, label, size, _ = index["train"][i]
        assert size == (stored / relative).stat().st_size
        assert relative == f"train/{label}/{i:05d}.jpg" and label == int(small.train_y[i])
        pixels = decode_jpeg(read_file(str(stored / relative)))  # a real JPEG, close to its source
        error = (pixels.permute(1, 2, 0).int() - small.train_x[i].int()).abs().float().mean()
        assert pixels.shape == (3, 32, 32) and error < 20
    assert not stored.with_name(stored.name + ".partial").exists()


def test_a_rerun_reuses_the_same_dataset_and_refuses_another(small, stored, tmp_path):
    stamp = (stored / INDEX).stat().st_mtime_ns
    assert prepare(small, stored, 90) == (stored, False)
    assert (stored / INDEX).stat().st_mtime_ns == stamp  # nothing rewritten
    with pytest.raises(StorageError, match=r"holds another dataset .* quality 90"):
        prepare(small, stored, 75)
    with pytest.raises(StorageError, match="holds another dataset"):
        prepare(synthetic(64, 32), stored, 90)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(StorageError, match=r"not empty and has no index\.json"):
        prepare(small, other, 90)
    assert (other / "notes.txt").read_text() == "mine"  # nothing already there is lost


def test_an_interrupted_prepare_leaves_no_half_dataset(small, tmp_path):
    calls = []

    def interrupt(done, total):
        calls.append(done)
        raise KeyboardInterrupt

    big = synthetic(1200, 10)  # the callback first fires after 1,000 files
    with pytest.raises(KeyboardInterrupt):
        prepare(big, tmp_path / "set", 90, interrupt)
    assert calls == [1000] and not (tmp_path / "set").exists()
    assert not (tmp_path / "set.partial").exists()  # Ctrl-C leaves nothing behind, not even the partial folder
    assert prepare(small, tmp_path / "set", 90)[1]  # a later run starts over cleanly


def test_load_encoded_decodes_the_files_and_keeps_their_paths(small, stored):
    data = load_encoded(stored)
    assert data.train_x.shape == small.train_x.shape and data.storage == "jpeg q90"
    assert torch.equal(data.train_y, small.train_y) and torch.equal(data.test_y, small.test_y)
    assert len(data.train_files) == 96 and data.train_files[3].endswith("00003.jpg")
    assert torch.equal(data.train_x[3].permute(2, 0, 1), decode_jpeg(read_file(data.train_files[3])))
    (stored / "test" / str(int(small.test_y[0])) / "00000.jpg").rename(stored / "moved.jpg")
    try:
        with pytest.raises(StorageError, match=r"00000\.jpg is missing"):
            load_encoded(stored)
    finally:
        (stored / "moved.jpg").rename(stored / "test" / str(int(small.test_y[0])) / "00000.jpg")


@pytest.mark.parametrize("augment", ["none", "crop-flip"])
def test_every_pipeline_decodes_to_the_same_batches(stored, augment):
    data = load_encoded(stored).normalized("standardize")
    config = RunConfig(batch_size=32, seed=3, device="cpu", normalization="standardize", augment=augment)
    variants = [("preloaded", {}), ("torchvision", {}), ("torchvision", {"num_workers": 2})]
    variants += [("dali", {"dali_threads": 2})] if HAS_DALI else []
    epochs = {}
    for name, extra in variants:
        from dataclasses import replace

        pipeline = make_pipeline(replace(config, pipeline=name, **extra), data, CPU)
        epochs[(name, str(extra))] = [x for x, _ in pipeline.epoch(2)]
        described = pipeline.describe()
        pipeline.close()
        if name == "preloaded":
            assert described["decode_setup_s"] > 0 and described["decoder"] == "libjpeg-turbo (torchvision)"
    reference = epochs[("preloaded", "{}")]
    for key, batches in epochs.items():
        assert len(batches) == 3
        gap = max((a - b).abs().max().item() for a, b in zip(batches, reference, strict=True))
        assert gap <= CPU_DECODER_BOUND, key


def test_train_with_jpeg_storage_prepares_on_first_use(tmp_path, capsys):
    args = ["train", "--dataset", "synthetic", "--train-size", "128", "--test-size", "32", "--width", "0.125"]
    args += ["-m", "32", "-K", "2", "--epochs", "1", "--storage", "jpeg", "--data-root", str(tmp_path / "data")]
    assert main([*args, "--device", "cpu", "--quiet", "--out", str(tmp_path / "run")]) == 0
    assert "wrote the dataset as JPEG files to " + str(tmp_path / "data" / "persist-jpeg") in capsys.readouterr().err
    config = RunConfig(dataset="synthetic", train_size=128, test_size=32, data_root=str(tmp_path / "data"))
    folder = storage_folder(config.data_root, load_dataset(config), 90)
    assert (folder / INDEX).is_file()
    manifest = read_manifest(tmp_path / "run")
    assert manifest["config"]["storage"] == "jpeg" and "decode_setup_s" in manifest["pipeline"]
    assert len(read_records(tmp_path / "run")) == 1
    assert main([*args, "--jpeg-quality", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "jpeg_quality=0 is not allowed: use an integer from 1 to 100" in capsys.readouterr().err


def test_prepare_command_is_one_line_on_bad_input(tmp_path, capsys):
    out = tmp_path / "set"
    ok = ["prepare", "--dataset", "synthetic", "--train-size", "64", "--test-size", "16", "--quiet", "--out", str(out)]
    assert main(ok) == 0 and "wrote" in capsys.readouterr().out
    assert main(ok) == 0 and "found (same dataset, reused)" in capsys.readouterr().out
    assert main([*ok[:-2], "--quality", "50", "--out", str(out)]) == 2
    assert "holds another dataset" in capsys.readouterr().err
    assert main(["prepare", "--format", "png", "--out", str(tmp_path / "p")]) == 2
    assert "format='png' is not allowed: choose jpeg" in capsys.readouterr().err
