"""A whole training run on disk: manifest, one record per finished epoch, a checkpoint, and resume.

Order per epoch: train -> evaluate -> checkpoint (atomic) -> append the record (flushed, fsynced). A kill loses at
most the epoch in progress; see records.py for how resume heals a kill between the last two writes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import platform
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch

from persist.config import RunConfig
from persist.errors import DivergedError
from persist.measure.machine import device_name, math_settings, versions
from persist.records import (
    CHECKPOINT,
    EpochRecord,
    EvalRecord,
    RunDirError,
    append_record,
    keep_evals_through,
    prepare_run_dir,
    read_manifest,
    temporary_of,
    write_atomic,
    write_json_atomic,
)
from persist.registry import plugins
from persist.runs.lock import RunLock
from persist.training.device import check_runs_here
from persist.training.dist import DistContext
from persist.training.models import parameter_count
from persist.training.trainer import Trainer


def _now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_manifest(out: Path, trainer: Trainer, status: str, writer: dict | None = None) -> None:
    """`writer`: the process holding the folder's lock (runs/lock.py), and the stale lock it took over, if any."""
    previous = read_manifest(out) or {}
    write_json_atomic(
        out / "manifest.json",
        {
            "config": trainer.config.as_dict(),
            "versions": versions(),
            "device": device_name(trainer.device),
            "clock": trainer.clock.name,
            "determinism": trainer.determinism,
            "math": math_settings(),  # TF32, cudnn.benchmark: as set when the manifest is written
            "pipeline": trainer.pipeline.describe(),
            "compute": trainer.describe_compute(),  # precision, channels-last, compile and its compile_s
            **_image_folder(trainer),
            "storage": {  # which folder the encoded data came from, and the hash of the index that was checked
                "kind": trainer.data.storage,
                "folder": trainer.data.storage_folder,
                "index_sha256": trainer.data.storage_index_sha256,
            },
            "model_parameters": parameter_count(trainer.model),
            "plugins": plugins(trainer.config.as_dict()),
            "counts_per_epoch": trainer.counts,
            "distributed": trainer.dist.describe(),
            "host": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "argv": sys.argv},
            "created_utc": previous.get("created_utc", _now_utc()),
            "updated_utc": _now_utc(),
            "status": status,
            "writer": writer or previous.get("writer"),
        },
    )


def _image_folder(trainer: Trainer) -> dict:
    """An image folder's sizes, preprocessing and --skip-bad-files' list, under "image_folder"; nothing otherwise."""
    if trainer.data.image_size is None:
        return {}
    from persist.data.imagefolder import describe_folder

    return {"image_folder": describe_folder(trainer.data)}


def save_state_atomic(state: dict, path: Path) -> None:
    """torch.save, atomically and flushed to disk (records.write_atomic). A temporary file that an earlier kill left
    behind is overwritten, and nothing ever reads one: resuming reads `path` only."""
    write_atomic(path, lambda f: torch.save(state, f))


def save_checkpoint(out: Path, trainer: Trainer, record: EpochRecord) -> None:
    state = {"epoch": record.epoch, "record": record.as_dict(), **trainer.state_dict()}
    save_state_atomic(state, out / CHECKPOINT)


def heal(out: Path, records: list[EpochRecord]) -> list[EpochRecord]:
    """The finished epochs, with the record line of a kill between checkpoint and record supplied again."""
    path = out / CHECKPOINT
    if not path.exists():
        raise RunDirError(f"{out} has {len(records)} finished epoch(s) but no {CHECKPOINT}: cannot resume")
    state = read_checkpoint(path)
    if not isinstance(state, dict) or not isinstance(state.get("epoch"), int) or "record" not in state:
        raise RunDirError(f"{path} is not a persist checkpoint (no epoch and record): choose another --out")
    temporary_of(path).unlink(missing_ok=True)  # a kill inside save_state_atomic: the checkpoint before it stands
    if state["epoch"] == len(records) + 1:  # killed after the checkpoint, before the record line
        records = [*records, EpochRecord(**state["record"])]
        append_record(out, records[-1])
    if state["epoch"] != len(records):
        raise RunDirError(f"{path} is at epoch {state['epoch']} but the records end at {len(records)}: cannot resume")
    return records


def load_checkpoint(out: Path, trainer: Trainer) -> None:
    path = out / CHECKPOINT
    state = read_checkpoint(path, trainer.device)
    missing = [key for key in ("model", "optimizer") if key not in state]
    if missing:
        raise RunDirError(f"{path} has no {' or '.join(missing)}: not a persist checkpoint; choose another --out")
    try:
        trainer.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as error:  # another model or width: its tensors do not fit
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RunDirError(f"{path} does not fit this run's model ({first}): choose another --out") from error


def read_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict:
    """The checkpoint's state, or one line saying it is damaged (a truncated copy, a full disk)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, AttributeError) as error:
        raise RunDirError(
            f"{path} is damaged ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}): "
            "cannot resume from it; start the run again in another --out"
        ) from error


def make_folder(out: Path) -> None:
    """Create the run folder, or say in one line why it cannot be one (a file, a name too long, no permission)."""
    try:
        if out.exists() and not out.is_dir():
            raise RunDirError(f"--out {out} is an existing file, not a folder: choose another --out")
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunDirError(f"--out {out} cannot be written ({error.strerror or error}): choose another --out") from None


def _no_space(error: BaseException) -> OSError | None:
    """The ENOSPC behind `error`, if any: torch.save reports a full disk as a RuntimeError raised from it."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return error
        error = error.__cause__ or error.__context__
    return None


def disk_full(out: Path, finished: int, error: OSError) -> RunDirError:
    """The one line for a write that found no space: which folder, and that the finished epochs can be resumed."""
    kept = "no epoch had finished"
    if finished:
        kept = f"its {finished} finished epoch(s) are intact: free space and pass --resume"
    return RunDirError(f"{out}: no space left on device ({error.strerror or error}); {kept}")


def _open_folder(out: Path, config: RunConfig, resume: bool, lock: RunLock) -> list[EpochRecord]:
    make_folder(out)
    lock.acquire()  # one writer per folder, from here to the end of the run
    try:
        records = prepare_run_dir(out, config, resume)  # refuse a foreign folder before any expensive set-up
        if records or (resume and (out / CHECKPOINT).exists()):
            records = heal(out, records)
        if len(records) > config.epochs:  # resuming with fewer epochs than are finished would contradict the records
            raise RunDirError(
                f"{out} holds {len(records)} finished epochs, more than --epochs {config.epochs}: pass --epochs "
                f"{len(records)} or more to continue it, or choose another --out"
            )
    except BaseException:
        lock.release()
        raise
    return records


def train_run(
    config: RunConfig,
    out: Path,
    resume: bool = False,
    *,
    trainer: Trainer | None = None,
    dist: DistContext | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    on_load: Callable[[int], None] | None = None,
    on_stage: Callable[..., None] | None = None,
    on_start: Callable[[int, int, str], None] | None = None,
) -> list[EpochRecord]:
    """Train `config.epochs` epochs into `out`, continuing a finished prefix when `resume`; return all records.

    With several ranks every rank calls this; rank 0 alone reads and writes the folder. The terminal's hooks:
    `on_stage(text, done=None, total=None)` says what happens before the first load (data, model, the first
    evaluation), `on_start(loads_per_epoch, first_epoch, device_type)` comes once before training, `on_load(loads)`
    after every load of an epoch and `on_epoch(record)` after every finished epoch."""
    out, dist = Path(out), dist or DistContext()
    if trainer is None:
        check_runs_here(config, dist)  # a device or precision this machine lacks: one line, no folder made
    dist.check_same_config(config)
    lock = RunLock(out)  # under torchrun rank 0 alone takes it: it alone writes the folder
    records = dist.on_main(lambda: _open_folder(out, config, resume, lock))
    try:
        if trainer is None:
            if on_stage is not None:
                on_stage(f"preparing the {config.dataset} data and the {config.model} model")
            trainer = Trainer(config, dist=dist)
        hooks = (on_epoch, on_load, on_stage, on_start)
        return _train(config, out, records, trainer, dist, lock, *hooks)
    finally:
        lock.release()


def _train(config, out, records, trainer, dist, lock, on_epoch, on_load, on_stage, on_start) -> list[EpochRecord]:
    main, writer = dist.is_main, lock.describe()

    def write_eval(row: EvalRecord) -> None:
        if main:
            append_record(out, row)

    try:
        if records:
            load_checkpoint(out, trainer)  # every rank: the folder must be shared (one node, or a shared disk)
            trainer.resume_from(records)
        if main:
            write_manifest(out, trainer, "running", writer)
            # an interrupted epoch's evaluations go (it runs again); with no finished epoch, the origin goes too
            keep_evals_through(out, len(records) if records else -1)
        if not records and trainer.emulated is None:  # the same decision on every rank; emulated: nothing to evaluate
            if on_stage is not None:  # a full test set on a CPU takes minutes: say so, and how far it is
                text = f"evaluating before the first step ({len(trainer.test):,} test images)"
                trainer.on_eval_batch = lambda done, total: on_stage(text, done, total)
            write_eval(trainer.eval_record(0, trainer.evaluate()))  # the curve's origin: before any step
            trainer.on_eval_batch = None
            trainer.dist.barrier()
        if on_start is not None:
            on_start(trainer.counts["loads"], len(records) + 1, trainer.device.type)
        for epoch in range(len(records) + 1, config.epochs + 1):
            if trainer.budget_met():  # a resumed run whose budget was already spent
                break
            record = trainer.run_epoch(epoch, on_load, write_eval)
            if main:
                save_checkpoint(out, trainer, record)
                append_record(out, record)
            records.append(record)
            if on_epoch is not None and main:
                on_epoch(record)
        if main:
            write_manifest(out, trainer, "finished" + (" (budget spent)" if trainer.budget_met() else ""), writer)
        return records
    except BaseException as error:
        if main:
            state = "diverged" if isinstance(error, DivergedError) else "stopped"
            # if the folder cannot take the note (a full disk, say), the error itself is what the user needs
            with contextlib.suppress(OSError):
                write_manifest(out, trainer, f"{state} in epoch {len(records) + 1}: {type(error).__name__}: {error}")
        no_space = _no_space(error)
        if no_space is not None:
            raise disk_full(out, len(records), no_space) from error
        raise
    finally:
        trainer.close()
