"""meter.jsonl, the one file a Meter run adds to persist's run folder: per epoch, what EpochRecord has no field for
(the first fetch's wait, worker start-up included; the loader kind). Torch-free, so the analysis can read it."""

from __future__ import annotations

import json
from pathlib import Path

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
