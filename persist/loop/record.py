"""What a Meter run leaves on disk: persist's own run folder, so `persist report`, `persist whatif`, load_runs and
the figures read it like a `persist train` run.

OUT/manifest.json  `config`: the columns the analysis groups and checks by (below); `user_config`: the user's dict as
                   given; `meter`: what the meter saw (loader kind, K and schedule from persist.reuse, replay);
                   versions, machine, device, clock, status; rewritten atomically after every epoch
OUT/epochs.jsonl   one EpochRecord per epoch (records.py), written when its evaluation arrives or the next epoch starts
OUT/evals.jsonl    one EvalRecord per meter.evaluate(...)
OUT/meter.jsonl    per epoch, what EpochRecord has no field for: the first fetch's wait (worker start-up included)

How `config` is filled, for each column the analysis reads: the user's config value when it has that key (any
RunConfig field name: batch_size, persistency, lr_schedule, seed, dataset, model, lr, ...), else derived:
    pipeline      "replay" when meter.timed got a persist.replay, else "own-loop"
    batch_size    the largest `samples` of a step;  train_size  the fresh samples of the last epoch
    persistency   K from persist.reuse, else steps / loads of the last epoch (1 with no timed loader)
    lr_schedule   the schedule from persist.reuse when K > 1, else "constant" (K=1 has one use: every schedule
                  is the same); reuse "same";  augment "none";  seed 0
    dataset       "own";  model "own";  device  the meter's device;  epochs  the epochs measured so far
    width, lr, momentum, loss_reduction, test_size: None (unknown unless given)
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path

import torch

from persist.config import RunConfig
from persist.errors import ConfigError, RunDirError
from persist.measure.machine import device_name, machine_info, versions
from persist.records import EPOCHS, read_manifest, write_json_atomic

LOADER_KINDS = ("async", "sync")  # async: the loader prefetches while the model computes; sync: it loads on demand
RUN_CONFIG_FIELDS = frozenset(f.name for f in fields(RunConfig))


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_user_config(config: dict | None) -> dict:
    """The user's description of the run, which must be a dict that JSON can write (it goes into the manifest)."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ConfigError(f"config={config!r} is not allowed: give a dict describing the run (or None)")
    try:
        json.dumps(config)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"config is not JSON-serializable ({error}): use numbers, strings, lists and dicts"
        ) from error
    return dict(config)


def check_new_folder(out: Path) -> None:
    """A meter writes a new run: refuse a folder that already holds one (nothing there is touched)."""
    manifest = read_manifest(out)
    if manifest is not None or (out / EPOCHS).exists():
        raise RunDirError(f"{out} already holds a run: give the meter a new folder")


def loader_kind(iterable, declared: str | None) -> tuple[str, dict]:
    """(kind, details) of the loader meter.timed wraps: "replay" for persist.replay, else what the user declared,
    else "async" for a DataLoader with workers or a DALI iterator, "sync" for a DataLoader without workers, and
    "unknown" otherwise (whatif then assumes sync and says so)."""
    kind = type(iterable)
    details = {"loader_type": f"{kind.__module__}.{kind.__qualname__}"}
    if getattr(iterable, "is_replay", False):
        return "replay", {**details, **iterable.describe()}
    workers = getattr(iterable, "num_workers", None)
    if isinstance(workers, int) and not isinstance(workers, bool):
        details["num_workers"] = workers
    if declared is not None:
        return declared, {**details, "declared": True}
    if "num_workers" in details:
        return ("async" if workers > 0 else "sync"), details
    if kind.__module__.startswith("nvidia.dali"):
        return "async", details
    return "unknown", details


def analysis_config(user: dict, seen: dict, device: torch.device) -> dict:
    """The manifest's `config` for a meter run (the mapping is in this module's docstring)."""
    loads, steps = seen.get("loads") or 0, seen.get("steps") or 0
    derived = {
        "pipeline": "replay" if seen.get("loader") == "replay" else "own-loop",
        "batch_size": seen.get("batch_size"),
        "persistency": seen.get("k") or (max(1, round(steps / loads)) if loads else 1),
        "lr_schedule": (seen.get("schedule") if (seen.get("k") or 1) > 1 else None) or "constant",
        "adaptive": bool(seen.get("adaptive")),  # persist.reuse(k="auto"): persistency is the cap
        "reuse": "same",
        "augment": "none",
        "seed": 0,
        "dataset": "own",
        "model": "own",
        "train_size": seen.get("fresh_samples"),
        "device": str(device),
        "epochs": seen.get("epochs", 0),
        **dict.fromkeys(("width", "lr", "momentum", "loss_reduction", "test_size")),
    }
    return {**derived, **{key: value for key, value in user.items() if key in RUN_CONFIG_FIELDS}}


def write_meter_manifest(out: Path, meter_state: dict, user: dict, device: torch.device, clock: str, status: str):
    previous = read_manifest(out) or {}
    write_json_atomic(
        out / "manifest.json",
        {
            "source": "persist.Meter",
            "config": analysis_config(user, meter_state, device),
            "user_config": user,
            "meter": meter_state,
            "versions": versions(),
            "machine": previous.get("machine") or machine_info(device),
            "device": device_name(device),
            "clock": clock,
            "host": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "argv": sys.argv},
            "created_utc": previous.get("created_utc", now_utc()),
            "updated_utc": now_utc(),
            "status": status,
        },
    )
