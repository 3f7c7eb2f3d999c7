"""Damaged run folders and a full disk: one line and exit 2, nothing finished lost, no temporary file left."""

import errno
import json

import pytest
import torch

import persist
from persist.cli.main import main
from persist.errors import RunDirError
from persist.records import read_manifest, read_records

RUN = ["--dataset", "synthetic", "--train-size", "128", "--test-size", "32", "--width", "0.125", "-m", "32"]
RUN += ["--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished epoch, copied by each test that damages it."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", *RUN, "--epochs", "1", "--out", str(out)]) == 0
    return out


def _copy(run, tmp_path):
    import shutil

    return shutil.copytree(run, tmp_path / "run")


def _one_line(capsys, *words):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert all(word in err for word in words), err


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"[1, 2]", ("holds list, not a persist manifest",)),
        (b'{"status": "finished"}', ("holds an object with no config",)),
        (b'{"config": "\xff\xfe"}', ("is unreadable (UnicodeDecodeError",)),
    ],
)
def test_a_manifest_of_the_wrong_shape_is_one_line_for_resume_and_load_runs(
    finished_run, tmp_path, capsys, content, words
):
    out = _copy(finished_run, tmp_path)
    (out / "manifest.json").write_bytes(content)
    assert main(["train", *RUN, "--epochs", "2", "--resume", "--out", str(out)]) == 2
    _one_line(capsys, "manifest.json", *words)
    with pytest.raises(RunDirError, match="not a persist run folder"):
        persist.load_runs([out])
    assert (out / "manifest.json").read_bytes() == content  # nothing of it was rewritten


def test_a_checkpoint_of_another_width_is_one_line(finished_run, tmp_path, capsys):
    out = _copy(finished_run, tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    other = tmp_path / "wide"
    assert main(["train", *[a if a != "0.125" else "0.25" for a in RUN], "--epochs", "1", "--out", str(other)]) == 0
    (out / "checkpoint.pt").write_bytes((other / "checkpoint.pt").read_bytes())
    assert main(["train", *RUN, "--epochs", "2", "--resume", "--out", str(out)]) == 2
    _one_line(capsys, "checkpoint.pt does not fit this run's model")
    assert len(read_records(out)) == 1 and read_manifest(out)["config"]["width"] == manifest["config"]["width"]


def test_a_checkpoint_without_its_optimizer_is_one_line(finished_run, tmp_path, capsys):
    out = _copy(finished_run, tmp_path)
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    del state["optimizer"]
    torch.save(state, out / "checkpoint.pt")
    assert main(["train", *RUN, "--epochs", "2", "--resume", "--out", str(out)]) == 2
    _one_line(capsys, "checkpoint.pt has no optimizer")


def test_a_full_disk_stops_in_one_line_leaves_no_temporary_and_resumes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    saved = []
    original_save = torch.save

    def save(state, f, *args, **kwargs):  # the second checkpoint finds the disk full, part-way through
        if isinstance(state, dict) and state.get("epoch") == 2:
            f.write(b"partial")
            try:  # as torch.save reports it: a RuntimeError from its zip writer, raised while handling the OSError
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from None
        saved.append(state.get("epoch") if isinstance(state, dict) else None)
        return original_save(state, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    assert main(["train", *RUN, "--epochs", "3", "--out", str(out)]) == 2
    _one_line(capsys, str(out), "no space left on device", "1 finished epoch(s) are intact", "--resume")
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []
    assert [r.epoch for r in read_records(out)] == [1] and read_manifest(out)["status"].startswith("stopped in epoch 2")
    monkeypatch.undo()  # space freed
    assert main(["train", *RUN, "--epochs", "3", "--resume", "--out", str(out)]) == 0
    assert [r.epoch for r in read_records(out)] == [1, 2, 3]


def test_an_out_name_too_long_for_the_file_system_is_one_line(tmp_path, capsys):
    out = tmp_path / ("x" * 300)
    assert main(["train", *RUN, "--epochs", "1", "--out", str(out)]) == 2
    _one_line(capsys, "cannot be written (File name too long)")


@pytest.fixture
def tiny_disk(tmp_path):
    """A 200 KB tmpfs (root only; skipped where mounting is not allowed)."""
    import subprocess

    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip() or done.returncode}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_real_full_disk_is_one_line_and_leaves_no_temporary(tiny_disk, capsys):
    out = tiny_disk / "run"
    assert main(["train", *RUN, "--epochs", "2", "--out", str(out)]) == 2
    _one_line(capsys, str(out), "no space left on device")
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


def test_an_image_folder_whose_val_images_are_all_bad_is_one_line(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "images"
    for split, count in (("train", 4), ("val", 2)):
        for label in ("cat", "dog"):
            (root / split / label).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (24 + i, 20), (40 * i, 80, 120)).save(root / split / label / f"{i}.jpg")
    for path in (root / "val").rglob("*.jpg"):
        path.write_bytes(path.read_bytes()[:60])  # cut off in its header
    flags = ["train", "--dataset", "imagefolder", "--data-root", str(root), "--image-size", "16", "-m", "4"]
    flags += ["--width", "0.125", "--device", "cpu", "--quiet", "--skip-bad-files", "--out", str(tmp_path / "run")]
    assert main(flags) == 2
    _one_line(capsys, str(root / "val"), "has no usable image left", "4 skipped")
