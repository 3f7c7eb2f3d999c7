"""The commands that come before a long run: `persist prepare` writes a dataset as files, `persist stability`
checks that a regime trains. argparse lives in persist/cli/; every user error is one line and exit code 2."""

from __future__ import annotations

import argparse
from pathlib import Path

from persist.cli.run_options import ints_arg, seeds_arg, words_arg
from persist.config import RunConfig
from persist.errors import PersistError
from persist.registry import DATASETS, MODELS, NORMALIZATIONS, PIPELINES


def add_setup_commands(commands) -> None:
    f = commands.add_parser(
        "prepare",
        help="write a dataset once as encoded files (for --storage jpeg), or an ImageNet-like synthetic folder",
    )
    f.add_argument(
        "--dataset",
        default="synthetic",
        help=f"{DATASETS.choices()} (default synthetic), or synthetic-folder: JPEGs of varied size in the ImageFolder "
        "layout (DIR/train/<class>/, DIR/val/<class>/) for --dataset imagefolder; needs --out",
    )
    f.add_argument("--images", type=int, default=1000, help="synthetic-folder: training images (default 1000)")
    f.add_argument("--val-images", type=int, help="synthetic-folder: validation images (default: a fifth of --images)")
    f.add_argument("--classes", type=int, default=10, help="synthetic-folder: classes (default 10)")
    f.add_argument("--min-size", type=int, default=400, help="synthetic-folder: smallest longer side, px (400)")
    f.add_argument("--max-size", type=int, default=500, help="synthetic-folder: largest longer side, px (500)")
    f.add_argument("--format", default="jpeg", help="jpeg (the one format so far)")
    f.add_argument("--quality", type=int, default=90, help="JPEG quality 1..100 (default 90)")
    f.add_argument("--train-size", type=int, help="the first N training samples (default: all)")
    f.add_argument("--test-size", type=int, help="the first N test samples (default: all)")
    f.add_argument("--data-root", help="folder of the raw data and of prepared ones (default ./data)")
    f.add_argument("--download", action="store_true", help="fetch CIFAR-10 if missing (needs network)")
    f.add_argument(
        "--out",
        type=Path,
        help="where to write (default: the folder --storage jpeg reads, DATA_ROOT/persist-jpeg/<dataset-sizes-hash-q>)",
    )
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    f.set_defaults(handler=_prepare)
    v = commands.add_parser(
        "verify",
        help="the full check of a prepared folder: every file's SHA-256 against index.json (runs check sizes only)",
    )
    v.add_argument("folder", type=Path, help="a folder that persist prepare wrote")
    v.set_defaults(handler=_verify)
    b = commands.add_parser(
        "stability", help="train every paper cell for N steps: does the regime stay finite with a falling loss?"
    )
    b.add_argument(
        "--out",
        type=Path,
        required=True,
        help="folder for stability.jsonl and stability.md; a rerun resumes, inside a cell too",
    )
    b.add_argument("--steps", type=int, default=100, help="SGD steps per cell, at least (default 100)")
    b.add_argument(
        "--sample-steps",
        type=int,
        default=0,
        help="and at least this many steps x m per cell, so that small m trains as far as large m (default 0)",
    )
    b.add_argument("--normalizations", type=words_arg, help=f"comma-separated, of: {NORMALIZATIONS.choices()}")
    b.add_argument("--batch-sizes", type=ints_arg, help="a subset of the paper's m: 32,256,512")
    b.add_argument("--persistencies", type=ints_arg, help="a subset of the paper's K: 1,2,5")
    b.add_argument("--schedules", type=words_arg, help="a subset of the paper's lr schedules: constant,linear")
    b.add_argument("--dataset", default="synthetic", help=DATASETS.choices())
    b.add_argument("--data-root")
    b.add_argument("--train-size", type=int, default=4096, help="training images (default 4096)")
    b.add_argument("--test-size", type=int, default=256)
    b.add_argument("--width", type=float, default=1.0, help="model width (default 1.0, the paper's)")
    b.add_argument("--pipeline", default="preloaded", help=PIPELINES.choices())
    b.add_argument("--model", default="paper-alexnet", help=MODELS.choices())
    b.add_argument("--device", default="auto")
    b.add_argument(
        "--seeds",
        type=seeds_arg,
        default=[0],
        help="each cell once per seed: a list (0,1,2) or a count Nx, seeds 0..N-1 (3x: 0,1,2); default 0",
    )
    b.set_defaults(handler=_stability)


def check_folder_path(out: Path) -> None:
    """`out` names a folder, or nothing yet, below a folder: not a file (nothing is written before this is known)."""
    for path in (out, *out.parents):
        if path.is_dir():
            return
        if path.exists() and path == out:
            raise PersistError(f"--out {out} is a file, not a folder: name a folder (it is made if missing)")
        if path.exists():
            raise PersistError(f"--out {out} cannot be written ({path} is a file): name a folder")


def _prepare(args: argparse.Namespace) -> int:
    from persist.cli.progress import CountProgress
    from persist.data.datasets import raw_dataset
    from persist.data.storage import prepare, prepare_default

    if args.format != "jpeg":
        raise PersistError(f"format={args.format!r} is not allowed: choose jpeg")
    if args.out is not None:
        check_folder_path(args.out)
    if args.dataset == "synthetic-folder":
        return _prepare_folder(args)
    config = RunConfig(
        dataset=args.dataset,
        data_root=args.data_root,
        download=args.download,
        train_size=args.train_size,
        test_size=args.test_size,
        storage="jpeg",
        jpeg_quality=args.quality,
    )  # validates every value before anything is written
    data = raw_dataset(config)
    with CountProgress(f"writing {data.name} as JPEG q{args.quality}", quiet=args.quiet) as progress:
        if args.out is None:
            folder, written = prepare_default(data, args.data_root, args.quality, progress)
        else:
            folder, written = prepare(data, args.out, args.quality, progress)
    state = "wrote" if written else "found (same dataset, reused)"
    print(f"{state} {folder}: {len(data.train_y)} training and {len(data.test_y)} test images, JPEG q{args.quality}")
    return 0


def _prepare_folder(args: argparse.Namespace) -> int:
    from persist.cli.progress import CountProgress
    from persist.data.synthetic_folder import FolderSpec, mean_file_bytes, write_synthetic_folder

    if args.out is None:
        raise PersistError("--dataset synthetic-folder needs --out DIR: the folder to write")
    val_images = args.val_images if args.val_images is not None else max(1, args.images // 5)
    spec = FolderSpec(args.images, val_images, args.classes, args.min_size, args.max_size, args.quality)
    with CountProgress("writing a synthetic image folder", quiet=args.quiet) as progress:
        folder, written = write_synthetic_folder(args.out, spec, progress)
    state = "wrote" if written else "found (same parameters, reused)"
    print(
        f"{state} {folder}: {spec.train_images} training and {spec.val_images} validation JPEGs in {spec.classes} "
        f"classes, longer side {spec.min_size}-{spec.max_size} px, {mean_file_bytes(folder) / 1000:.0f} KB each on "
        "average; train with --dataset imagefolder --data-root " + str(folder)
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from persist.data.integrity import verify

    index = verify(args.folder, full=True)
    files = len(index["train"]) + len(index["test"])
    print(
        f"{args.folder}: intact, {files} files match index.json (size and SHA-256); index {index['index_sha256'][:16]}"
    )
    return 0


def _stability(args: argparse.Namespace) -> int:
    from rich.console import Console

    from persist.runs.stability import cell_line, markdown, paper_cells, run_stability

    console = Console()
    if args.steps < 10:
        raise PersistError(f"steps={args.steps} is not allowed: use 10 or more (the loss is compared over 10 steps)")
    cells = paper_cells(args.batch_sizes, args.persistencies, args.schedules)
    base = RunConfig(
        dataset=args.dataset,
        data_root=args.data_root,
        train_size=args.train_size,
        test_size=args.test_size,
        width=args.width,
        pipeline=args.pipeline,
        model=args.model,
        device=args.device,
        seed=args.seeds[0],
    )
    normalizations = args.normalizations or [base.normalization]
    for n in normalizations:
        RunConfig(normalization=n)  # one line naming a bad value, before any training

    def on_cell(row: dict) -> None:
        console.print(cell_line(row), highlight=False)

    def on_save(config: RunConfig, steps_done: int, losses: list[float]) -> None:
        last = losses[-config.persistency :]  # the last load's K uses
        console.print(
            f"  {config.normalization} m={config.batch_size} K={config.persistency} {config.lr_schedule}: "
            f"{steps_done} steps saved, last load's loss {last[0]:.3f} -> {last[-1]:.3f}",
            highlight=False,
        )

    if args.sample_steps < 0:
        raise PersistError(f"sample_steps={args.sample_steps} is not allowed: use 0 or more")
    rows = run_stability(
        base,
        cells,
        normalizations,
        args.steps,
        args.out,
        on_cell=on_cell,
        sample_steps=args.sample_steps,
        on_save=on_save,
        seeds=args.seeds,
    )
    (args.out / "stability.md").write_text(markdown(rows))
    unstable = [r for r in rows if not (r["finite"] and r["falling"])]
    console.print(f"{len(rows) - len(unstable)} of {len(rows)} cells stable; table in {args.out / 'stability.md'}")
    return 1 if unstable else 0
