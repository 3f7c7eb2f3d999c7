"""Encoded data is what its index says, or nothing trains on it; a file that cannot be decoded is named in one line on
every pipeline; --storage-dir reads a prepared folder and the manifest records which one."""

import hashlib
import json
import shutil
from dataclasses import replace

import pytest
import torch
from torchvision.io import encode_jpeg

from conftest import HAS_DALI
from persist.cli.main import main
from persist.config import RunConfig
from persist.data.datasets import synthetic
from persist.data.integrity import INDEX, sealed, verify
from persist.data.pipelines import make_pipeline
from persist.data.storage import decode_files, load_encoded, prepare
from persist.errors import DecodeError, StorageError
from persist.records import read_manifest

CPU = torch.device("cpu")
SIZES = ["--dataset", "synthetic", "--train-size", "64", "--test-size", "16"]
RUN = [*SIZES, "--width", "0.125", "-m", "32", "--epochs", "1", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def master(tmp_path_factory):
    folder, _ = prepare(synthetic(64, 16), tmp_path_factory.mktemp("jpeg") / "set", 90)
    return folder


@pytest.fixture
def stored(master, tmp_path):
    """A fresh copy of a prepared folder, for a test to damage."""
    return shutil.copytree(master, tmp_path / "set")


def _index(folder):
    return json.loads((folder / INDEX).read_text())


def _write_index(folder, index, reseal=True):
    (folder / INDEX).write_text(json.dumps(sealed(index) if reseal else index))


def _replace_file(folder, i, content: bytes, reseal=True):
    """Overwrite training file i; with `reseal`, record its new size and hash, as if the folder had been written so
    (only the decoder can then tell)."""
    index = _index(folder)
    relative = index["train"][i][0]
    (folder / relative).write_bytes(content)
    index["train"][i][2:] = [len(content), hashlib.sha256(content).hexdigest()]
    if reseal:
        _write_index(folder, index)
    return str(folder / relative)


def test_an_intact_folder_passes_both_checks(stored):
    assert verify(stored)["index_sha256"] == verify(stored, full=True)["index_sha256"]


def test_an_edited_label_is_refused_with_how_to_rebuild(stored, capsys):
    index = _index(stored)
    index["train"][5][1] = (index["train"][5][1] + 1) % 10
    _write_index(stored, index, reseal=False)
    with pytest.raises(StorageError, match=r"index\.json was changed after it was written .* rebuild it: rm -r"):
        load_encoded(stored)
    assert main(["train", *RUN, "--storage-dir", str(stored), "--out", str(stored.parent / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "persist prepare --dataset synthetic --train-size 64" in err
    assert not (stored.parent / "run" / "epochs.jsonl").exists()


def test_labels_shifted_with_a_resealed_index_do_not_match_the_folder_layout(stored):
    index = _index(stored)
    for row in index["train"]:
        row[1] = (row[1] + 1) % 10
    _write_index(stored, index)
    first = index["train"][0][0]
    with pytest.raises(StorageError, match=rf"{first}: label \d in index\.json does not match the folder layout"):
        load_encoded(stored)


def test_a_file_copied_over_another_is_caught_by_its_size_or_by_the_full_check(master, stored, capsys):
    rows = _index(stored)["train"]
    a, b = next((a, b) for a in rows for b in rows if a[1] != b[1] and a[2] != b[2])  # two classes, two sizes
    shutil.copyfile(stored / a[0], stored / b[0])
    with pytest.raises(StorageError, match=rf"{b[0]} has {a[2]} bytes, index\.json says {b[2]}"):
        load_encoded(stored)
    shutil.copyfile(master / b[0], stored / b[0])
    target = stored / rows[3][0]  # the same size, other bytes: only the full check sees it
    content = bytearray(target.read_bytes())
    content[len(content) // 2] ^= 0xFF
    target.write_bytes(bytes(content))
    assert verify(stored, full=False)
    with pytest.raises(StorageError, match=rf"{rows[3][0]}: its bytes differ from index\.json"):
        verify(stored, full=True)
    assert main(["verify", str(stored)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "rebuild it" in err


def test_verify_command_says_intact(stored, capsys):
    assert main(["verify", str(stored)]) == 0
    assert "intact, 80 files match index.json" in capsys.readouterr().out


def test_an_old_index_without_sizes_is_refused_and_prepare_does_not_reuse_a_damaged_folder(stored, capsys):
    index = _index(stored)
    old = {k: v for k, v in index.items() if k not in ("index_sha256", "image_shape")}
    old.update(format_version=1, train=[r[:2] for r in index["train"]], test=[r[:2] for r in index["test"]])
    _write_index(stored, old, reseal=False)
    with pytest.raises(StorageError, match=r"from an older persist \(no file sizes or hashes\): rebuild it"):
        load_encoded(stored)
    assert main(["prepare", *SIZES, "--quiet", "--out", str(stored)]) == 2
    assert "older persist" in capsys.readouterr().err


def test_prepare_does_not_reuse_a_folder_with_a_damaged_file(stored, capsys):
    relative = _index(stored)["test"][2][0]
    (stored / relative).write_bytes(b"\xff\xd8")
    assert main(["prepare", *SIZES, "--quiet", "--out", str(stored)]) == 2
    assert f"{relative} has 2 bytes" in capsys.readouterr().err


def _grey():
    return encode_jpeg(torch.full((1, 32, 32), 128, dtype=torch.uint8), 90).numpy().tobytes()


def _small():
    return encode_jpeg(torch.full((3, 16, 16), 128, dtype=torch.uint8), 90).numpy().tobytes()


BROKEN = {
    "truncated": lambda good: good[:10],
    "random bytes": lambda good: bytes(
        torch.randint(0, 256, (500,), generator=torch.Generator().manual_seed(0)).tolist()
    ),
    "another size": lambda good: _small(),
    "greyscale": lambda good: _grey(),
}


@pytest.mark.parametrize("kind", BROKEN)
def test_an_undecodable_file_is_named_in_the_one_time_decode(stored, kind):
    good = (stored / _index(stored)["train"][7][0]).read_bytes()
    path = _replace_file(stored, 7, BROKEN[kind](good))
    with pytest.raises(DecodeError, match=rf"^{path} (cannot be decoded as a JPEG|decodes to [13]x(16x16|32x32))"):
        load_encoded(stored)
    files = [str(stored / r[0]) for r in _index(stored)["train"]]
    with pytest.raises(DecodeError, match=path):
        decode_files(files, (3, 32, 32))  # what the preloaded pipeline runs


PER_SAMPLE = [("torchvision", {}), ("torchvision", {"num_workers": 2})]
PER_SAMPLE += [pytest.param("dali", {"dali_threads": 1}, marks=pytest.mark.dali)] if HAS_DALI else []


@pytest.mark.parametrize(("pipeline", "options"), PER_SAMPLE)
@pytest.mark.parametrize("kind", BROKEN)
def test_an_undecodable_file_is_named_in_the_per_sample_decode(stored, pipeline, options, kind):
    data = load_encoded(stored)  # intact when the run starts; the file breaks afterwards
    good = (stored / _index(stored)["train"][11][0]).read_bytes()
    path = _replace_file(stored, 11, BROKEN[kind](good), reseal=False)
    config = replace(RunConfig(batch_size=16, device="cpu"), pipeline=pipeline, **options)
    source = make_pipeline(config, data, CPU)
    try:
        with pytest.raises(DecodeError) as caught:
            for _ in source.epoch(1):
                pass
    finally:
        source.close()
    assert str(caught.value).startswith(path) and "\n" not in str(caught.value)


def test_train_names_an_undecodable_file_in_one_line(stored, tmp_path, capsys):
    good = (stored / _index(stored)["train"][0][0]).read_bytes()
    path = _replace_file(stored, 0, BROKEN["greyscale"](good))
    for pipeline in ("preloaded", "torchvision"):
        out = tmp_path / pipeline
        assert main(["train", *RUN, "--pipeline", pipeline, "--storage-dir", str(stored), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and path in err and "decodes to 1x32x32" in err


def test_storage_dir_reads_a_prepared_folder_and_the_manifest_records_it(master, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # nothing may be written under ./data
    run = tmp_path / "run"
    assert main(["train", *RUN, "--storage", "jpeg", "--storage-dir", str(master), "--out", str(run)]) == 0
    storage = read_manifest(run)["storage"]
    assert storage == {
        "kind": "jpeg q90",
        "folder": str(master.resolve()),
        "index_sha256": _index(master)["index_sha256"],
    }
    assert read_manifest(run)["config"]["storage_dir"] == str(master)
    assert not (tmp_path / "data").exists()
    assert main(["train", *RUN, "--train-size", "32", "--storage-dir", str(master), "--out", str(tmp_path / "b")]) == 2
    assert "holds synthetic, 64 + 16 images at JPEG q90, not train_size=32" in capsys.readouterr().err
    assert main(["train", *RUN, "--storage", "raw", "--storage-dir", str(master), "--out", str(tmp_path / "c")]) == 2
    assert "needs storage='jpeg'" in capsys.readouterr().err


def test_sweep_takes_storage_dir_into_every_cell():
    from persist.runs.sweep import grid_from_args

    grid = grid_from_args("cpu", storage="jpeg", storage_dir="prepared", batch_sizes=[32])
    assert {(c.storage, c.storage_dir) for c in grid.configs()} == {("jpeg", "prepared")}


def test_the_trainer_passes_a_worker_decode_error_on_as_one_line(stored):
    from persist.training.trainer import Trainer

    config = RunConfig(batch_size=16, width=0.125, device="cpu", pipeline="torchvision", num_workers=1, storage="jpeg")
    trainer = Trainer(config, load_encoded(stored))
    path = _replace_file(stored, 11, b"\xff\xd8\xff", reseal=False)
    try:
        with pytest.raises(DecodeError) as caught:
            trainer.train_epoch(1)
    finally:
        trainer.close()
    assert str(caught.value).startswith(f"{path} cannot be decoded as a JPEG") and "\n" not in str(caught.value)
