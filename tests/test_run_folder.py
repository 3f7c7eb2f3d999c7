"""One writer per run folder (an advisory lock naming its holder's PID), and the run folder's own bad cases: --out an
existing file, a folder that cannot be written, a damaged checkpoint, fewer epochs than are finished."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from persist.cli.main import main
from persist.errors import RunDirError
from persist.records import EPOCHS, read_manifest, read_records
from persist.runs.lock import LOCK, RunLock
from persist.runs.run import train_run
from persist.training.trainer import Trainer

RUN = ["--dataset", "synthetic", "--train-size", "128", "--test-size", "32", "--width", "0.125", "-m", "32"]
RUN += ["--device", "cpu", "--quiet"]


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid  # exited and reaped: no process has it (until the kernel reuses it)


def test_a_second_writer_meets_the_lock_and_the_first_run_is_untouched(tiny_data, tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out):  # another persist process, as far as the kernel can tell: a separate open file
        assert main(["train", *RUN, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"is in use by another persist run (PID {os.getpid()})" in err
        with pytest.raises(RunDirError, match="in use"):
            train_run(tiny_config, out, trainer=Trainer(tiny_config, tiny_data))
        assert not (out / EPOCHS).exists()
    assert len(train_run(tiny_config, out, trainer=Trainer(tiny_config, tiny_data))) == 2  # free once released
    assert not (out / LOCK).exists()  # a clean exit leaves no lock file behind


def test_a_lock_held_by_another_process_names_its_pid(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    code = "import sys; from persist.runs.lock import RunLock; lock = RunLock(sys.argv[1]).acquire(); print('ready')"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}  # this checkout's persist
    holder = subprocess.Popen(
        [sys.executable, "-c", code + "; sys.stdout.flush(); sys.stdin.read()", str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert main(["train", *RUN, "--out", str(out)]) == 2
        assert f"(PID {holder.pid})" in capsys.readouterr().err
    finally:
        holder.communicate("")
    assert main(["train", *RUN, "--epochs", "1", "--out", str(out)]) == 0  # the holder is gone: its lock went too


def test_a_stale_lock_is_taken_over_and_recorded(tiny_data, tiny_config, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    dead = _dead_pid()
    (out / LOCK).write_text(f"{dead}\n")  # a run killed before it could clear its PID
    train_run(tiny_config, out, trainer=Trainer(tiny_config, tiny_data))
    assert read_manifest(out)["writer"] == {"pid": os.getpid(), "took_over_stale_lock_of_pid": dead}


def test_a_sweep_holds_its_folder(tmp_path, capsys):
    out = tmp_path / "sweep"
    out.mkdir()
    with RunLock(out):
        assert main(["sweep", "--out", str(out), "--batch-sizes", "32", "--persistencies", "1", "--quiet"]) == 2
    assert "is in use by another persist sweep" in capsys.readouterr().err


def test_out_naming_an_existing_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("mine")
    assert main(["train", *RUN, "--out", str(tmp_path / "file")]) == 2
    assert "is an existing file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "mine"
    assert main(["train", *RUN, "--out", str(tmp_path / "file" / "run")]) == 2  # under a file: cannot be created
    assert "cannot be written" in capsys.readouterr().err


def test_a_folder_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch):
    # the tests run as root, who may write anywhere: the refusal is simulated where the lock file is opened
    real_open = os.open

    def refuse(path, *args, **kwargs):
        if str(path).endswith(LOCK):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    assert main(["train", *RUN, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be written (Permission denied)" in err


def test_resume_from_a_truncated_checkpoint_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *RUN, "--epochs", "1", "--out", str(out)]) == 0
    checkpoint = out / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    assert main(["train", *RUN, "--epochs", "2", "--resume", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint.pt is damaged" in err and len(read_records(out)) == 1


def test_resume_with_fewer_epochs_than_finished_is_refused(tiny_data, tiny_config, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *RUN, "--epochs", "3", "--out", str(out)]) == 0
    before = (out / "manifest.json").read_text()
    assert main(["train", *RUN, "--epochs", "2", "--resume", "--out", str(out)]) == 2
    assert "holds 3 finished epochs, more than --epochs 2: pass --epochs 3 or more" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == before and len(read_records(out)) == 3
    assert main(["train", *RUN, "--epochs", "3", "--resume", "--out", str(out)]) == 0  # the same count: done already
