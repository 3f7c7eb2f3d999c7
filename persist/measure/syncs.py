"""Counting the host-device syncs of some work, and whether each one is a marked, deliberate one.

torch.cuda.set_sync_debug_mode("warn") turns every synchronizing CUDA call torch knows of (a blocking copy, `.item()`,
`nonzero`, a copy from pageable memory) into a warning. Each warning is caught here with the Python stack at that
moment, and placed at the innermost frame inside `root` (persist's own code, not torch's). A sync is "marked" when
that line, or the comment line right above it, says `# deliberate sync`, as every intended sync in persist does.
Explicit waits (torch.cuda.synchronize, Event.synchronize) are deliberate by construction and are not reported by
torch's debug mode.
"""

from __future__ import annotations

import linecache
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]  # the repository: persist/, bench/, scripts/, tests/
MARK = "deliberate sync"
NO_CUDA = "no CUDA: sync debug mode not available"


def is_marked(filename: str, lineno: int) -> bool:
    """The line says `# deliberate sync`, or the comment line right above it does."""
    above = linecache.getline(filename, lineno - 1).strip() if lineno > 1 else ""
    return MARK in linecache.getline(filename, lineno) or (above.startswith("#") and MARK in above)


def count_syncs(work: Callable[[], object], root: Path = ROOT, debug_mode: bool | None = None) -> dict:
    """Run `work` under the sync debug mode and return how many syncs it made, where, and which are unmarked.
    Without CUDA (`debug_mode` False) the work still runs, and the result says why nothing was counted."""
    debug_mode = torch.cuda.is_available() if debug_mode is None else debug_mode
    if not debug_mode:
        work()
        return {"available": False, "reason": NO_CUDA}
    places: Counter[tuple[str, int]] = Counter()
    show_other = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        if "synchroniz" not in str(message):  # not a sync: shown as it would have been
            return show_other(message, category, filename, lineno, file, line)
        stack = traceback.extract_stack()[:-1]
        ours = [f for f in stack if not f.filename.startswith("<") and Path(f.filename).resolve().is_relative_to(root)]
        where = (ours[-1].filename, ours[-1].lineno) if ours else (filename, lineno)
        places[where] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record  # restored by catch_warnings
        previous = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            work()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    at = [
        {"line": f"{_relative(f, root)}:{n}", "count": c, "marked": is_marked(f, n)}
        for (f, n), c in sorted(places.items())
    ]
    return {
        "available": True,
        "syncs": sum(places.values()),
        "unmarked": sum(p["count"] for p in at if not p["marked"]),
        "at": at,
    }


def _relative(filename: str, root: Path) -> str:
    path = Path(filename).resolve()
    return str(path.relative_to(root)) if path.is_relative_to(root) else filename
