"""`persist whatif RUN_DIR [--replay DIR] [--persistencies 1,2,4] [--loader async|sync] [--json]`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from persist.cli.run_options import ints_arg
from persist.errors import PersistError


def add_whatif_command(commands) -> None:
    w = commands.add_parser(
        "whatif",
        help="forecast each K's epoch time, loading factor and AU from a K=1 run (a Meter run or persist train)",
    )
    w.add_argument("run", type=Path, help="the K=1 run folder")
    w.add_argument("--replay", type=Path, help="a run of the same loop under persist.replay: the ideal-loading ceiling")
    w.add_argument("--persistencies", type=ints_arg, default=[1, 2, 4], help="comma-separated K values (default 1,2,4)")
    w.add_argument(
        "--loader",
        choices=("async", "sync"),
        help="override how the run's loader works: async prefetches while the model computes, sync loads on demand "
        "(default: what the run recorded)",
    )
    w.add_argument("--json", action="store_true", help="machine-readable output")
    w.set_defaults(handler=_whatif)


def _whatif(args: argparse.Namespace) -> int:
    from persist.analysis.whatif import print_whatif, whatif

    bad = [k for k in args.persistencies if k < 1]
    if bad:
        raise PersistError(f"--persistencies {bad[0]} is not allowed: use K values >= 1")
    for folder in [args.run] + ([args.replay] if args.replay else []):
        if not (folder / "manifest.json").exists():
            raise PersistError(f"{folder} is not a persist run folder (no manifest.json)")
    result = whatif(args.run, args.persistencies, replay=args.replay, loader=args.loader)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_whatif(result)
    return 0
