"""The command line (argparse lives here and, for the run flags of `persist train` and `persist sweep`, in
run_options, which makes them from RunConfig's field metadata). Every user error is
one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from persist.cli.run_options import add_run_options, add_sweep_options, config_from_args, sweep_overrides
from persist.cli.setup import add_setup_commands
from persist.cli.whatif import add_whatif_command
from persist.config import PROFILES
from persist.errors import PersistError

DESCRIPTION = (
    "Training-throughput benchmarks for minibatch persistency (Fischetti et al.): train the paper's reduced AlexNet "
    "reusing each minibatch K times, sweep grids of runs, report the speedup as loading x convergence, and gate CI "
    "on epoch-time regressions. The benchmark suite itself runs as: pytest bench --benchmark-json out.json"
)
EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage dump) and exit code 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _add_train(commands) -> None:
    p = commands.add_parser("train", help="train the paper's model with minibatch persistency")
    p.add_argument("--out", type=Path, required=True, help="run folder: manifest.json, epochs.jsonl, checkpoint.pt")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last finished epoch")
    p.add_argument("--profile", help=f"start from a named size profile ({', '.join(PROFILES)}); flags override it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--collective-timeout-s",
        type=float,
        default=300.0,
        help="under torchrun: give up on a collective after this long (a dead or hung rank)",
    )
    add_run_options(p)
    p.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from persist.cli.progress import EpochProgress
    from persist.runs.run import train_run
    from persist.training.dist import from_environment

    config = config_from_args(args)
    dist = from_environment(config.device, args.collective_timeout_s)  # torchrun: one process per rank
    finished = False
    try:
        if config.storage == "jpeg" and config.storage_dir is None:  # written once, by rank 0, before any rank reads
            from persist.cli.progress import CountProgress
            from persist.data.datasets import prepare_storage

            with CountProgress("writing the dataset as JPEG files", quiet=args.quiet or not dist.is_main) as bar:
                folder, written = dist.on_main(lambda: prepare_storage(config, bar))
            if written and dist.is_main:
                print(
                    f"persist train: wrote the dataset as JPEG files to {folder} (reused by later runs)",
                    file=sys.stderr,
                )
            dist.barrier()
        with EpochProgress(config, quiet=args.quiet or not dist.is_main) as progress:
            train_run(
                config,
                args.out,
                resume=args.resume,
                dist=dist,
                on_epoch=progress.epoch_done,
                on_load=progress.load_done,
                on_stage=progress.stage,
                on_start=progress.start,
            )
        finished = True
    finally:
        dist.close(clean=finished)
    return 0


def _summary(args: argparse.Namespace) -> int:
    from persist.benchjson.summary import print_summary_file

    print_summary_file(args.json)
    return 0


def _compare(args: argparse.Namespace) -> int:
    import json

    from persist.benchjson.compare import compare_files, render_comparisons
    from persist.tables import table_console

    results = compare_files(args.baseline, args.candidate, threshold=args.threshold / 100, force=args.force)
    regressions = [r for r in results if r.verdict == "regression"]
    unlike = sum(r.verdict == "not comparable" for r in results)  # never counted as regressions
    if args.json:
        print(
            json.dumps(
                {
                    "threshold_pct": args.threshold,
                    "regressions": len(regressions),
                    "not_comparable": unlike,
                    "results": [r.as_dict() for r in results],
                },
                indent=2,
            )
        )
    else:
        table_console().print(render_comparisons(results, args.threshold))  # piped, names stay whole
        print(
            f"{len(regressions)} regression(s) in {len(results)} benchmark(s)"
            + (f"; {unlike} not comparable (different run configs), not counted" if unlike else "")
        )
    return 1 if regressions else 0


def _sweep(args: argparse.Namespace) -> int:
    from rich.console import Console

    from persist.runs.sweep import grid_from_args, run_name, run_sweep

    console = Console()
    grid = grid_from_args(args.preset, timing_epochs=args.timing_epochs, full=args.full, **sweep_overrides(args))
    names = [run_name(config) for config in grid.configs()]
    if grid.base.dataset == "imagefolder" and len(grid.pipelines) > 1 and not args.full:
        console.print("every pipeline trains in full: an image folder's crops differ from pipeline to pipeline")

    def on_run(name, config, state):
        console.print(f"[{names.index(name) + 1}/{len(names)}] {name}: {state}", highlight=False)

    def on_epoch(r):
        console.print(f"    epoch {r.epoch}: test_acc {r.test_acc:.4f}  wall {r.wall_s:.2f}s", highlight=False)

    run_sweep(grid, args.out, on_run=on_run, on_epoch=None if args.quiet else on_epoch)
    console.print(f"{len(names)} runs in {args.out}; next: persist report {args.out}/* --out {args.out}/report")
    return 0


def _report(args: argparse.Namespace) -> int:
    from persist.analysis.report import write_report

    if args.target is not None and not 0 < args.target <= 1:
        raise PersistError(f"target={args.target} is not allowed: use an accuracy in (0, 1]")
    folders = [p for p in args.runs if p.is_dir() and (p / "manifest.json").exists()]
    others = [p for p in args.runs if p not in folders and p.resolve() != args.out.resolve()]
    others = [p for p in others if p.name != ".persist.lock"]  # a killed sweep's stale lock, among SWEEP/*
    if others:
        raise PersistError(f"{others[0]} is not a persist run folder (no manifest.json)")
    if not folders:
        raise PersistError("no run folders given: pass the folders that persist train or persist sweep wrote")
    writable_folder(args.out)  # before the analysis: a bad --out is one line, not a traceback after it
    report = write_report(folders, args.out, target=args.target)
    print(f"wrote {report} and its figures and tables in {args.out}")
    return 0


def writable_folder(out: Path) -> None:
    """Make `out` (with its parents) and check that a file can be written in it."""
    import tempfile

    if out.exists() and not out.is_dir():
        raise PersistError(f"--out {out} is a file, not a folder: name a folder (it is made if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise PersistError(
            f"--out {out} cannot be written ({error.strerror or error}): name a folder you can write to"
        ) from error


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("persist")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> Parser:
    parser = Parser(prog="persist", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"persist {version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_train(commands)
    s = commands.add_parser("summary", help="the bench summary table from a saved --benchmark-json file")
    s.add_argument("json", type=Path)
    s.set_defaults(handler=_summary)
    c = commands.add_parser("compare", help="regression gate: compare two pytest-benchmark JSON files")
    c.add_argument("baseline", type=Path, help="a JSON file, or a folder of <device-id>.json baselines")
    c.add_argument("candidate", type=Path)
    c.add_argument("--threshold", type=float, default=10.0, help="percent slowdown that counts (default 10)")
    c.add_argument("--json", action="store_true", help="machine-readable output")
    c.add_argument("--force", action="store_true", help="compare even when the devices differ")
    c.set_defaults(handler=_compare)
    w = commands.add_parser("sweep", help="run a resumable grid of training runs into one folder")
    w.add_argument("--preset", default="cpu", help="cpu (minutes on a CPU) | paper (the paper's grid, for a GPU)")
    w.add_argument(
        "--out", type=Path, required=True, help="the sweep's folder: one run folder per cell; a rerun resumes"
    )
    w.add_argument(
        "--timing-epochs",
        type=int,
        help="epochs per cell on every pipeline but the first, which alone trains the convergence curves (default 2)",
    )
    w.add_argument("--full", action="store_true", help="train every pipeline's cells in full (no composition)")
    add_sweep_options(w)
    w.add_argument("--quiet", action="store_true", help="one line per run, none per epoch")
    w.set_defaults(handler=_sweep)
    r = commands.add_parser("report", help="figures, decomposition table and report from run folders")
    r.add_argument("runs", type=Path, nargs="+", help="run folders (e.g. SWEEP/*)")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument(
        "--target",
        type=float,
        help="test accuracy to time (default, per pipeline and m: 95%% of the best its K=1 runs reached, the mean "
        "over seeds; with no K=1 run, the best every run reached)",
    )
    r.set_defaults(handler=_report)
    add_setup_commands(commands)
    add_whatif_command(commands)
    return parser


def _terminate(signum, frame):
    # torchrun sends SIGTERM to the surviving ranks when one dies: stop like Ctrl-C, so the run folder says so
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # a bare `persist`: what it can do, not just "a command is required"
        parser.print_help()
        return EXIT_USAGE
    args = parser.parse_args(argv)
    speaks = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 prints errors: one line, not N
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.handler(args)
    except PersistError as error:
        if speaks:
            print(f"persist {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if speaks:
            print(f"persist {args.command}: interrupted; what had finished is on disk", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
