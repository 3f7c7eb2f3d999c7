"""`persist train`'s run options: one flag per RunConfig field, grouped as `--help` shows them, and the way back
from parsed flags to a RunConfig (a profile's sizes first, then every flag the user gave)."""

from __future__ import annotations

import argparse
from dataclasses import fields

from persist.config import (
    AUTO_CAP,
    PROFILES,
    ConfigError,
    PersistError,
    RunConfig,
    budget_fields,
    parse_budget,
    parse_persistency,
)
from persist.registry import DATASETS, LR_SCHEDULES, MODELS, NORMALIZATIONS, PIPELINES


def ints_arg(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from error


def words_arg(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def persistency_arg(text: str) -> dict:
    try:
        return parse_persistency(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def budget_arg(text: str) -> dict:
    try:
        return parse_budget(text)
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def add_run_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("run")
    g.add_argument("--dataset", help=f"{DATASETS.described()}")
    g.add_argument(
        "--data-root",
        help="folder holding cifar-10-batches-py (default ./data); with --dataset imagefolder, the folder holding "
        "train/<class>/ and val/<class>/",
    )
    g.add_argument("--download", action="store_true", default=None, help="fetch CIFAR-10 if missing (needs network)")
    g.add_argument("--pipeline", help=f"{PIPELINES.described()}; default preloaded")
    g.add_argument(
        "--model",
        help=f"{MODELS.described()}. torchvision models get random weights and the dataset's class count; a "
        "plug-in is factory(num_classes=, image_shape=(C, H, W)) -> torch.nn.Module",
    )
    g.add_argument("--batch-size", "-m", type=int, help="minibatch size m (default 256)")
    g.add_argument(
        "--persistency",
        "-K",
        type=persistency_arg,
        help="SGD steps per loaded minibatch K (default 1), or auto / auto:N: step again on the batch in hand only "
        f"while the next one is late, at most N times (default {AUTO_CAP})",
    )
    g.add_argument("--lr", type=float, help="learning rate mu (default 0.001)")
    g.add_argument("--momentum", type=float, help="momentum gamma (default 0.5)")
    g.add_argument(
        "--lr-schedule",
        help=f"{LR_SCHEDULES.described()}; default constant; a plug-in is function(mu, k) -> lr",
    )
    g.add_argument("--epochs", type=int, help="passes over the distinct training data (default 1)")
    g.add_argument(
        "--budget",
        type=budget_arg,
        help="train until a budget is spent: 120s (training seconds), 2e6sample-steps (steps x m) or 10epochs",
    )
    g.add_argument("--seed", type=int, help="weights and batch order (default 0)")
    g.add_argument("--device", help="auto (default) | cpu | cuda | cuda:N")
    g.add_argument("--width", type=float, help="paper-alexnet's channel multiplier (1.0 = paper); no other model")
    g.add_argument("--train-size", type=int, help="use the first N training samples")
    g.add_argument("--test-size", type=int, help="use the first N test samples")
    g.add_argument("--loss-reduction", help="sum (paper) | mean")
    g.add_argument(
        "--normalization",
        help=f"input scale: {NORMALIZATIONS.described()}",
    )
    g.add_argument(
        "--storage", help="raw (default): arrays in memory | jpeg: files under --data-root, decoded per load"
    )
    g.add_argument("--jpeg-quality", type=int, help="quality of --storage jpeg's files, 1..100 (default 90)")
    g.add_argument(
        "--storage-dir",
        help="read a folder that persist prepare --out wrote (implies --storage jpeg; default: one under --data-root)",
    )
    g.add_argument("--augment", help="none (default, the paper's) | crop-flip: pad 4, random 32x32 crop, flip")
    g.add_argument(
        "--reuse", help="same (default): the loaded batch K times | reaugment: a fresh crop-flip for each of the K uses"
    )
    g.add_argument("--delay-ms", type=float, help="extra delay per load, simulating slow storage")
    g.add_argument(
        "--deterministic",
        action="store_true",
        default=None,
        help="CUDA: deterministic cuDNN and cuBLAS algorithms, so runs through different pipelines are identical",
    )
    g.add_argument(
        "--precision",
        help="fp32 (default) | tf32 (CUDA tensor cores) | bf16 | fp16 (autocast; fp16 with a gradient scaler)",
    )
    g.add_argument("--channels-last", action="store_true", default=None, help="NHWC memory order for model and inputs")
    g.add_argument(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the model; compiled once before the first epoch and timed on its own (compile_s)",
    )
    g.add_argument(
        "--image-size",
        type=int,
        help="--dataset imagefolder: train on random-resized crops of S x S, evaluate on S/0.875 resized, "
        "center-cropped to S (default 224)",
    )
    g.add_argument(
        "--skip-bad-files",
        action="store_true",
        default=None,
        help="--dataset imagefolder: leave files that cannot be decoded out (the manifest lists them) instead of "
        "refusing the folder",
    )
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument(
        "--eval-every",
        type=int,
        help="evaluate every N fresh training samples (default: a quarter of the training set); rows in evals.jsonl",
    )
    t = parser.add_argument_group("torchvision pipeline")
    t.add_argument("--num-workers", type=int)
    t.add_argument("--pin-memory", action=argparse.BooleanOptionalAction, default=None)
    t.add_argument("--persistent-workers", action=argparse.BooleanOptionalAction, default=None)
    t.add_argument("--prefetch-factor", type=int)
    p = parser.add_argument_group("preloaded pipeline")
    p.add_argument(
        "--preload-size",
        type=int,
        help="--dataset imagefolder: each image stored P x P on the device (default round(S/0.875): 256 for S=224)",
    )
    d = parser.add_argument_group("DALI pipeline")
    d.add_argument("--dali-threads", type=int)
    d.add_argument("--dali-prefetch-depth", type=int)
    d.add_argument("--dali-py-workers", type=int, help="parallel external source workers")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Profile sizes first, then every flag the user gave; RunConfig validates the result."""
    values = dict(PROFILES[args.profile]) if args.profile in PROFILES else {}
    if args.profile is not None and args.profile not in PROFILES:
        raise PersistError(f"profile={args.profile!r} is not allowed: choose one of {', '.join(PROFILES)}")
    for f in fields(RunConfig):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    values.update(getattr(args, "persistency", None) or {})  # K, or auto with its cap
    if values.get("model", "paper-alexnet") != "paper-alexnet" and args.width is None:
        values.pop("width", None)  # a profile's width is paper-alexnet's; another model has none
    values.update(budget_fields(args.budget, args.epochs))
    if values.get("storage_dir") is not None:
        values.setdefault("storage", "jpeg")  # --storage-dir is encoded storage; an explicit --storage raw is refused
    return RunConfig(**values)
