"""What a run leaves on disk, and how to read it back.

OUT/manifest.json   config (asdict), versions, device, clock; rewritten atomically
OUT/epochs.jsonl    one EpochRecord per finished epoch, appended, flushed and fsynced; never rewritten
OUT/evals.jsonl     one EvalRecord per evaluation on the fresh-sample cadence (--eval-every), appended likewise
OUT/checkpoint.pt   model + optimizer after the last finished epoch, with that epoch's record; replaced atomically

A kill at any moment loses at most the epoch in progress: the checkpoint is written before the record line, and on
resume a checkpoint one epoch ahead of the records supplies the missing line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from persist.config import RunConfig
from persist.errors import ConfigError, RunDirError

if TYPE_CHECKING:  # pandas is imported lazily: the trainer never needs it
    import pandas

MANIFEST, EPOCHS, EVALS, CHECKPOINT = "manifest.json", "epochs.jsonl", "evals.jsonl", "checkpoint.pt"


# Fields added after runs were already on disk, with the value those runs used (not today's default): a manifest
# that lacks one describes a run made before it existed.
LEGACY_VALUES = {
    "normalization": "standardize",
    "augment": "none",
    "reuse": "same",
    "storage": "raw",
    "jpeg_quality": 90,
    "model": "paper-alexnet",
    "precision": "fp32",
    "channels_last": False,
    "cudnn_benchmark": False,
    "compile": False,
    "image_size": None,
    "skip_bad_files": False,
    "preload_size": None,
    "adaptive": False,
    "compute": "real",
}


def from_dict(values: dict) -> RunConfig:
    """Rebuild a RunConfig from a manifest, refusing unknown keys rather than dropping them."""
    values = {**LEGACY_VALUES, **values}
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown config field(s) {', '.join(unknown)}: this manifest is from another persist version"
        )
    return RunConfig(**values)


@dataclass(frozen=True)
class EpochRecord:
    epoch: int  # 1-based
    wall_s: float  # host clock, epoch start to end, device synchronized at both ends (training only)
    data_wait_s: float  # host time blocked fetching the next batch
    compute_s: float  # sum over steps, forward start -> optimizer step end (clock below)
    gpu_idle_s: float  # sum of gaps between consecutive steps (clock below); on CUDA includes loading kernels/copies
    eval_s: float  # test-set evaluation, timed apart from training
    loads: int
    steps: int
    fresh_samples: int
    sample_steps: int
    train_loss: float  # mean per-example loss over every step of the epoch
    test_loss: float  # mean per-example loss on the test set after the epoch
    test_acc: float
    clock: str  # cuda_events | host
    device: str
    nvml: dict = field(default_factory=dict)
    dist: dict = field(default_factory=dict)  # several ranks: world size, backend, per-rank max/mean, all-reduce
    budget_met: bool = False  # training stopped inside this epoch because the run's budget was spent
    uses_per_load: dict = field(default_factory=dict)  # --persistency auto: {"k": loads that got k uses}
    device_wait_s: float = 0.0  # host time waiting for the device to finish a queued step (--persistency auto)
    data_stall_s: float | None = None  # device idle before the first step after each load; CPU: = data_wait_s

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class EvalRecord:
    """One evaluation on the cadence of fresh samples (--eval-every), so every K is seen at the same data consumed.
    The counts and train_s are cumulative from the start of the run; train_s excludes every evaluation."""

    epoch: int  # the epoch it happened in (0: before training)
    fresh_samples_seen: int
    sample_steps_seen: int
    steps_seen: int
    train_s: float
    test_loss: float
    test_acc: float
    eval_s: float

    def as_dict(self) -> dict:
        return asdict(self)


def temporary_of(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """`write` fills a temporary file, flushed to disk, which then replaces `path`: a kill (or a power cut) leaves
    the old file or the new one, never half of one. A stale temporary from a kill is overwritten ("wb"). Every file
    persist rewrites (manifest, checkpoint, a stability cell's progress) goes through here."""
    tmp = temporary_of(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them the file
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk, say: the old file stands, and no half-written temporary stays
        raise


def write_json_atomic(path: Path, payload: dict) -> None:
    write_atomic(path, lambda f: f.write((json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()))


def read_manifest(out: Path) -> dict | None:
    """The folder's manifest, None where it has none; one line (RunDirError) where it is not a persist manifest."""
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = f"{type(error).__name__}: {error}" if isinstance(error, UnicodeDecodeError) else error
        raise RunDirError(f"{path} is unreadable ({reason}): not a persist run folder") from error
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict):
        shape = type(manifest).__name__ if not isinstance(manifest, dict) else "an object with no config"
        raise RunDirError(f"{path} holds {shape}, not a persist manifest: not a persist run folder")
    return manifest


def read_records(out: Path, repair: bool = False) -> list[EpochRecord]:
    """Finished epochs. Every record is one write ending in a newline, so text after the last newline is a line torn
    by a kill: it is skipped, and cut off the file when `repair` (its epoch is still in the checkpoint)."""
    path = out / EPOCHS
    if not path.exists():
        return []
    text = path.read_text()
    *complete, torn = text.split("\n")
    records = []
    for number, line in enumerate(complete, start=1):
        try:
            records.append(EpochRecord(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as error:
            raise RunDirError(f"{path} line {number} is corrupt ({error}): not written by persist") from error
    if repair and torn:
        with open(path, "r+") as f:
            f.truncate(len(text.encode()) - len(torn.encode()))
    return records


def append_record(out: Path, record: EpochRecord | EvalRecord) -> None:
    with open(out / (EVALS if isinstance(record, EvalRecord) else EPOCHS), "a") as f:
        f.write(json.dumps(record.as_dict()) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_evals(out: Path) -> list[EvalRecord]:
    path = out / EVALS
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text().split("\n")[:-1], start=1):  # text after the last newline: torn
        try:
            rows.append(EvalRecord(**json.loads(line)))
        except (json.JSONDecodeError, TypeError) as error:
            raise RunDirError(f"{path} line {number} is corrupt ({error}): not written by persist") from error
    return rows


def keep_evals_through(out: Path, epoch: int) -> list[EvalRecord]:
    """On resume: drop evaluation rows of the epoch that a kill interrupted (it runs again), keep the rest."""
    rows = read_evals(out)
    kept = [r for r in rows if r.epoch <= epoch]
    if (out / EVALS).exists() and (len(kept) != len(rows) or not (out / EVALS).read_text().endswith("\n")):
        tmp = out / (EVALS + ".tmp")
        tmp.write_text("".join(json.dumps(r.as_dict()) + "\n" for r in kept))
        os.replace(tmp, out / EVALS)
    return kept


def prepare_run_dir(out: Path, config: RunConfig, resume: bool) -> list[EpochRecord]:
    """Check that `out` can take this run; return the epochs already finished (empty for a new run)."""
    manifest = read_manifest(out)
    records = read_records(out, repair=resume) if manifest else []
    if manifest is None:
        if (out / EPOCHS).exists():
            raise RunDirError(f"{out} holds {EPOCHS} but no {MANIFEST}: choose another --out")
        return []
    previous = from_dict(manifest["config"])
    differ = previous.differences(config, ignore=("epochs", "budget_s", "budget_sample_steps"))  # may be extended
    if differ:
        shown = ", ".join(f"{n}={getattr(previous, n)!r} (now {getattr(config, n)!r})" for n in differ)
        raise RunDirError(f"{out} holds a different run's records: {shown}; choose another --out")
    if records and not resume:
        raise RunDirError(
            f"{out} already holds {len(records)} finished epoch(s) of this run: pass --resume to continue"
        )
    return records if resume else []


def load_evals(paths) -> pandas.DataFrame:
    """One row per evaluation (evals.jsonl) per run, with `run` and the run's config columns; empty when no run has
    evaluations (runs from before --eval-every)."""
    import pandas

    rows = []
    for path in map(Path, paths):
        manifest = read_manifest(path) or {}
        for record in read_evals(path):
            rows.append({"run": str(path), **LEGACY_VALUES, **manifest.get("config", {}), **record.as_dict()})
    return pandas.DataFrame(rows)


def load_runs(paths) -> pandas.DataFrame:
    """One row per finished epoch per run, with the run's config columns alongside (`run` names the folder)."""
    import pandas

    rows = []
    for path in map(Path, paths):
        manifest = read_manifest(path)
        if manifest is None:
            raise RunDirError(f"{path} is not a persist run folder: no {MANIFEST}")
        config, status = {**LEGACY_VALUES, **manifest["config"]}, manifest.get("status", "unknown")
        # whether this pipeline's batches equal every other pipeline's (an image folder's are resampled per pipeline)
        pixels = (manifest.get("pipeline") or {}).get("pixels", "bit-identical")
        for record in read_records(path):
            row = {"run": str(path), "status": status, **config, **record.as_dict(), "pixels": pixels}
            row.pop("nvml")
            row.update({f"dist_{k}": v for k, v in row.pop("dist").items()})
            rows.append(row)
    return pandas.DataFrame(rows)


def load_unfinished(paths) -> pandas.DataFrame:
    """One row per run with no finished epoch (config columns, `run` and `status`): a run that diverged in its first
    epoch leaves nothing in load_runs, yet it is a result."""
    import pandas

    rows = []
    for path in map(Path, paths):
        manifest = read_manifest(path)
        if manifest is not None and not read_records(path):
            rows.append(
                {"run": str(path), "status": manifest.get("status", "unknown"), **LEGACY_VALUES, **manifest["config"]}
            )
    return pandas.DataFrame(rows)


# meter.jsonl, the one file a Meter run adds to the run folder: per epoch, what EpochRecord has no field for (the
# first fetch's wait, worker start-up included; the loader kind).
METER_LOG = "meter.jsonl"


def append_meter_line(out: Path, row: dict) -> None:
    with open(Path(out) / METER_LOG, "a") as f:
        f.write(json.dumps(row) + "\n")


def read_meter_lines(out: Path) -> list[dict]:
    """Every complete line (text after the last newline is a line torn by a kill: skipped)."""
    path = Path(out) / METER_LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().split("\n")[:-1] if line]
