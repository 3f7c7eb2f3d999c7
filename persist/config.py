"""Run configuration: one frozen dataclass that validates itself, and the named size profiles.

argparse lives only in persist/cli/; everything below it takes a RunConfig. `asdict(config)` is written into every run's
manifest, so a record can always be traced back to exactly what produced it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from persist.compute import COMPUTE_PROFILES
from persist.errors import ConfigError, PersistError
from persist.registry import DATASETS, LR_SCHEDULES, MODELS, NORMALIZATIONS, PIPELINES, Registry
from persist.validation import (
    AUTO_CAP,
    BUDGET_UNITS,
    UNCAPPED_EPOCHS,
    at_least,
    budget_fields,
    check_folder_options,
    check_pipeline_options,
    check_values,
    one_of,
    parse_budget,
    parse_persistency,
    parse_seeds,
    persistency_label,
    registered,
)

# the value parsers live in persist.validation; they are imported from here too
__all__ = ["AUTO_CAP", "BUDGET_UNITS", "UNCAPPED_EPOCHS", "ConfigError", "PersistError", "RunConfig"]
__all__ += ["budget_fields", "parse_budget", "parse_persistency", "persistency_label"]

LOSS_REDUCTIONS = ("sum", "mean")
AUGMENTS = ("none", "crop-flip")  # persist/data/augment.py
REUSES = ("same", "reaugment")  # same: the paper's persistency; reaugment: a fresh crop-flip for each of the K uses
STORAGES = ("raw", "jpeg")  # persist/data/storage.py
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")  # persist/training/precision.py


def option(default, help: str, **cli) -> object:
    """A RunConfig field and what makes its command-line option (persist/cli/run_options.py and docs/options.md read
    it). `help`: what it does. Optional: `flag` (when not --field-name), `aliases` (-m), `choices` (a tuple, or a
    Registry, whose names are read only when help is built; RunConfig checks both), `at_least` (the lowest integer;
    RunConfig checks it), `allowed` (the values in words, otherwise), `none_means` (what the default None does),
    `metavar`, `parse` (text -> value, or -> a dict of fields; default: the field's type), `pipeline` (the one
    pipeline it applies to), `sweep` (persist sweep takes it too), `axis` (persist sweep's flag for a comma-separated
    list of values: a grid axis) with `axis_help` and `axis_parse` (text -> the list, when not comma-separated words or
    integers), `cli=False` (set through another flag only)."""
    return field(default=default, metadata={"help": help, **cli})


@dataclass(frozen=True)
class RunConfig:
    dataset: str = option("synthetic", "the training and test data", choices=DATASETS, sweep=True)
    data_root: str | None = option(
        None,
        "folder holding cifar-10-batches-py; with --dataset imagefolder, the folder holding train/<class>/ and "
        "val/<class>/",
        none_means="./data",
        sweep=True,
    )
    download: bool = option(False, "fetch CIFAR-10 if missing (needs network)")
    pipeline: str = option("preloaded", "how batches are loaded", choices=PIPELINES, axis="--pipelines")
    model: str = option(
        "paper-alexnet",
        "the network. torchvision models get random weights and the dataset's class count; a plug-in is "
        "factory(num_classes=, image_shape=(C, H, W)) -> torch.nn.Module",
        choices=MODELS,
        sweep=True,
    )
    batch_size: int = option(256, "minibatch size m", aliases=("-m",), metavar="M", at_least=1, axis="--batch-sizes")
    persistency: int = option(
        1,
        "SGD steps per loaded minibatch K, or auto / auto:N: step again on the batch in hand only while the next one "
        f"is late, at most N times (auto: {AUTO_CAP})",
        aliases=("-K",),
        metavar="K",
        parse=parse_persistency,
        at_least=1,
        allowed="integer >= 1, auto, auto:N (N >= 2)",
        axis="--persistencies",
        axis_help="include 1: the baseline",
    )
    adaptive: bool = option(False, "adaptive persistency (set by --persistency auto)", cli=False)
    lr: float = option(0.001, "learning rate mu (--dataset imagefolder: 0.00625 x m/256)", allowed="number > 0")
    momentum: float = option(0.5, "momentum gamma (--dataset imagefolder: 0.9)", allowed="0 <= gamma < 1")
    lr_schedule: str = option(
        "constant",
        "the lr of the k-th use of a batch; a plug-in is function(mu, k) -> lr",
        choices=LR_SCHEDULES,
        axis="--schedules",
    )
    epochs: int = option(
        1,
        "passes over the distinct training data (with a budget: the most it may take)",
        at_least=1,
        sweep=True,
    )
    budget_s: float | None = option(
        None,
        "train until a budget is spent: 120s (training seconds, evaluation excluded), 2e6sample-steps (steps x m) or "
        "10epochs; with a time budget, K=1 trains as long as K=5",
        flag="--budget",
        parse=parse_budget,
        none_means="none: --epochs ends the run",
        allowed="Ns, Nsample-steps, Nepochs",
        sweep=True,
    )
    budget_sample_steps: int | None = option(
        None, "stop once steps x m reaches this (set by --budget)", at_least=1, cli=False, sweep=True
    )
    seed: int = option(
        0,
        "weights and batch order",
        allowed="integer from -2**63 to 2**64-1",
        axis="--seeds",
        axis_parse=parse_seeds,
        axis_help="a list of seeds (0,1,2), or a count Nx: seeds 0..N-1 (3x: 0,1,2); 3 alone is the one seed 3",
    )
    device: str = option("auto", "where to train", allowed="auto, cpu, cuda or cuda:N", sweep=True)
    compute: str = option(
        "real",
        "real: train; emulated:SPEC: each use of a batch waits an accelerator's step time on the host instead of "
        "training, loading stays real (docs/emulated.md)",
        allowed=f"real, emulated:PROFILE ({', '.join(COMPUTE_PROFILES.names())}), emulated:module:attr, "
        "emulated:12.5ms@256, emulated:RUN_DIR",
        metavar="real|emulated:SPEC",
        sweep=True,
    )
    width: float = option(
        1.0, "paper-alexnet's channel multiplier (1.0 = the paper's); no other model", allowed="number > 0"
    )
    train_size: int | None = option(
        None, "use the first N training samples", none_means="the whole training split", at_least=1
    )
    test_size: int | None = option(None, "use the first N test samples", none_means="the whole test split", at_least=1)
    loss_reduction: str = option("sum", "how losses combine (paper: sum; imagefolder: mean)", choices=LOSS_REDUCTIONS)
    delay_ms: float = option(
        0.0, "extra host delay per load, simulating slow storage", allowed="number >= 0", sweep=True
    )
    eval_batch_size: int = option(1000, "minibatch size of evaluation (test accuracy and loss)", at_least=1)
    normalization: str = option("unit", "input scale", choices=NORMALIZATIONS)
    eval_every: int | None = option(
        None,
        "evaluate every N fresh training samples; rows in evals.jsonl",
        none_means="a quarter of the training set",
        at_least=1,
    )
    storage: str = option(
        "raw",
        "raw: arrays in memory; jpeg: files under --data-root, read and decoded by each pipeline",
        choices=STORAGES,
        sweep=True,
    )
    storage_dir: str | None = option(
        None,
        "read a folder that persist prepare --out wrote (implies --storage jpeg)",
        none_means="one under --data-root",
        sweep=True,
    )
    jpeg_quality: int = option(90, "quality of --storage jpeg's files", allowed="an integer from 1 to 100")
    augment: str = option(
        "none",
        "none: the paper's; crop-flip: pad 4, random 32x32 crop, horizontal flip, from the shared seed",
        choices=AUGMENTS,
        sweep=True,
    )
    reuse: str = option(
        "same",
        "same: the loaded batch K times (the paper's persistency); reaugment: a fresh crop-flip for each of the K "
        "uses, on the device (needs --augment crop-flip)",
        choices=REUSES,
        axis="--reuses",
    )
    deterministic: bool = option(
        False, "CUDA: deterministic cuDNN and cuBLAS algorithms, so runs through different pipelines are identical"
    )
    cudnn_benchmark: bool = option(
        False, "CUDA: cuDNN autotunes each convolution's algorithm on its first call (torch.backends.cudnn.benchmark)"
    )
    precision: str = option(
        "fp32",
        "tf32: CUDA tensor cores; bf16, fp16: autocast (fp16 with a gradient scaler)",
        choices=PRECISIONS,
        sweep=True,
    )
    channels_last: bool = option(False, "NHWC memory order for model and inputs", sweep=True)
    compile: bool = option(
        False,
        "torch.compile the training forward; compiled once before the first epoch and timed on its own (compile_s)",
    )
    image_size: int | None = option(
        None,
        "--dataset imagefolder: train on random-resized crops of S x S, evaluate on S/0.875 resized, center-cropped "
        "to S",
        none_means="224",
        at_least=8,
        sweep=True,
    )
    skip_bad_files: bool = option(
        False,
        "--dataset imagefolder: leave undecodable files out (the manifest lists them) instead of refusing the folder",
    )
    preload_size: int | None = option(
        None,
        "--dataset imagefolder: each image stored P x P on the device",
        none_means="round(S/0.875): 256 for S=224",
        at_least=8,
        pipeline="preloaded",
        sweep=True,
    )
    num_workers: int | None = option(
        None,
        "DataLoader worker processes (0: load in the training process)",
        none_means="with CUDA one per core but one, at most 8; on a CPU 0",
        at_least=0,
        pipeline="torchvision",
    )
    pin_memory: bool | None = option(
        None,
        "page-locked host batches, so host-to-device copies overlap",
        none_means="on with CUDA",
        pipeline="torchvision",
    )
    persistent_workers: bool | None = option(
        None,
        "keep the workers from epoch to epoch (needs workers)",
        none_means="on with workers",
        pipeline="torchvision",
    )
    prefetch_factor: int | None = option(
        None,
        "batches each worker loads ahead (needs workers)",
        none_means="2 with workers",
        at_least=1,
        pipeline="torchvision",
    )
    dali_threads: int | None = option(
        None,
        "DALI's CPU threads",
        none_means="with CUDA one per core, at most 4; on a CPU 1",
        at_least=1,
        pipeline="dali",
    )
    dali_prefetch_depth: int | None = option(
        None,
        "batches DALI prepares ahead (its prefetch queue depth)",
        none_means="2",
        at_least=1,
        pipeline="dali",
    )
    dali_py_workers: int | None = option(
        None, "parallel external source workers", none_means="0", at_least=0, pipeline="dali"
    )

    def __post_init__(self) -> None:
        for f in fields(self):  # what each field's metadata allows: a registry's names, choices, a lowest integer
            value, choices, low = getattr(self, f.name), f.metadata.get("choices"), f.metadata.get("at_least")
            if isinstance(choices, Registry):
                registered(f.name, value, choices)
            elif choices is not None:
                one_of(f.name, value, choices)
            elif low is not None and "pipeline" not in f.metadata and (value is not None or f.default is not None):
                at_least(f.name, value, low)
        check_values(self)  # the checks across fields, and of values no metadata can say (device, seed, ...)
        check_pipeline_options(self, PIPELINE_OPTIONS)
        check_folder_options(self)

    def as_dict(self) -> dict:
        return asdict(self)

    def differences(self, other: RunConfig, ignore: tuple[str, ...] = ()) -> list[str]:
        """Names of the fields whose values differ, except those in `ignore`."""
        return [
            f.name for f in fields(self) if f.name not in ignore and getattr(self, f.name) != getattr(other, f.name)
        ]


# Options that only one pipeline understands (each field's `pipeline`). Set for another pipeline, one is refused by
# name, never ignored.
PIPELINE_OPTIONS = {f.name: f.metadata["pipeline"] for f in fields(RunConfig) if "pipeline" in f.metadata}


# Named sizes. `smoke` keeps a 2-core CPU under minutes; `paper` is the paper's setup (Section 2.1).
PROFILES: dict[str, dict] = {
    "smoke": {"train_size": 1024, "test_size": 256, "width": 0.125, "epochs": 3},
    "paper": {"train_size": 50_000, "test_size": 10_000, "width": 1.0, "epochs": 100},
}


def with_profile(config: RunConfig, profile: str) -> RunConfig:
    """`config` with the sizes of a named profile (smoke | paper) applied."""
    one_of("profile", profile, tuple(PROFILES))
    return replace(config, **PROFILES[profile])
