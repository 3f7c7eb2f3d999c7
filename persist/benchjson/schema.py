"""The bench's `extra_info`, typed: one frozen dataclass per kind of benchmark cell.

bench/ writes every cell's extra_info through `to_extra_info`, and the summary and the regression gate read it back
through `read`, so a field is named in one place. The JSON keys are the fields' names plus `kind`; files written before
a field existed still read (the field takes its default, or None), and keys this version does not know are ignored.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import ClassVar


@dataclass(frozen=True)
class TrainEpoch:
    """One training epoch of a (pipeline, m, K) cell: pytest-benchmark times the epoch; these are its parts."""

    kind: ClassVar[str] = "train_epoch"
    pipeline: str
    batch_size: int
    persistency: int
    device: str
    clock: str  # cuda_events | host
    data_wait_s: float
    compute_s: float
    gpu_idle_s: float
    wall_s: float | None = None  # median over timed rounds of the epoch's own wall time
    loads: int | None = None
    steps: int | None = None
    fresh_samples: int = 0
    sample_steps: int = 0
    fresh_img_per_s: float | None = None
    sample_steps_per_s: float | None = None
    lr_schedule: str = "constant"
    storage: str = "raw"
    augment: str = "none"
    reuse: str = "same"
    delay_ms: float = 0.0
    model: str = "paper-alexnet"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    compile_s: float | None = None  # torch.compile's one-off compile, before the first round: in no epoch
    workload: str = "paper"  # paper | imagenet (bench/bench_imagenet.py)
    image_size: int | None = None  # the imagenet workload's S (random-resized crops of S x S)
    diverged: bool = False
    diverged_epoch: int | None = None
    train_loss_last: float | None = None
    nvml: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # asdict(RunConfig): what produced the cell
    pipeline_options: dict = field(default_factory=dict)
    plugins: dict = field(default_factory=dict)  # plug-ins by field, with their module's sha256
    checks: list = field(default_factory=list)


@dataclass(frozen=True)
class ModelOnly:
    """An epoch's worth of steps on one batch already on the device: pure compute, the anchor."""

    kind: ClassVar[str] = "model_only"
    batch_size: int
    steps: int
    device: str
    sample_steps: int
    config: dict = field(default_factory=dict)
    checks: list = field(default_factory=list)


@dataclass(frozen=True)
class PipelineOnly:
    """One epoch of loading, no model."""

    kind: ClassVar[str] = "pipeline_only"
    pipeline: str
    batch_size: int
    samples: int
    img_per_s: float
    device: str
    storage: str = "raw"
    decoder: str = "-"
    decode_setup_s: float | None = None  # preloaded with encoded storage: every file decoded once, before epoch 1
    files_decoded: int = 0
    config: dict = field(default_factory=dict)
    pipeline_options: dict = field(default_factory=dict)
    checks: list = field(default_factory=list)


@dataclass(frozen=True)
class VsReference:
    """A pipeline against the hand-written loop its users would write, over paired rounds."""

    kind: ClassVar[str] = "vs_reference"
    pipeline: str
    batch_size: int
    reference_median_s: float
    throughput_ratio: float
    min_ratio: float
    config: dict = field(default_factory=dict)
    checks: list = field(default_factory=list)


@dataclass(frozen=True)
class ClockOverhead:
    kind: ClassVar[str] = "clock_overhead"
    clock: str
    overhead_fraction: float
    max_overhead_fraction: float
    steps: int
    config: dict = field(default_factory=dict)
    checks: list = field(default_factory=list)


@dataclass(frozen=True)
class PlantedDelay:
    kind: ClassVar[str] = "planted_delay"
    delay_ms: float
    data_wait_ratio: float
    epoch_model_ratio: float
    config: dict = field(default_factory=dict)
    checks: list = field(default_factory=list)


@dataclass(frozen=True)
class Scaling:
    """1 against 2 ranks under torchrun (weak scaling: m per rank fixed)."""

    kind: ClassVar[str] = "scaling"
    pipeline: str
    persistency: int
    per_rank_batch_size: int
    backend: str
    ranks: int
    img_per_s_1_rank: float
    img_per_s_2_ranks: float
    scaling_efficiency: float
    data_wait_s_max: float
    data_wait_s_mean: float
    compute_s_max: float
    compute_s_mean: float
    allreduce_probe_s: float
    steps_per_epoch: int
    allreduce_share_of_step: float
    config: dict = field(default_factory=dict)
    checks: list = field(default_factory=list)


KINDS = {cls.kind: cls for cls in (TrainEpoch, ModelOnly, PipelineOnly, VsReference, ClockOverhead, PlantedDelay)}
KINDS[Scaling.kind] = Scaling
Info = TrainEpoch | ModelOnly | PipelineOnly | VsReference | ClockOverhead | PlantedDelay | Scaling


def to_extra_info(info: Info) -> dict:
    """What a bench cell writes into benchmark.extra_info."""
    return {"kind": info.kind, **asdict(info)}


def read(extra_info: dict) -> Info | None:
    """A benchmark's extra_info as its typed record; None for a kind this version does not know (or none)."""
    cls = KINDS.get((extra_info or {}).get("kind"))
    if cls is None:
        return None
    # a field the file lacks (written before it existed) reads as its default, or None where it has none
    return cls(**{f.name: extra_info.get(f.name) for f in fields(cls) if f.name in extra_info or _required(f)})


def _required(f) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def of_kind(benchmarks: list[dict], cls: type) -> list[tuple[dict, Info]]:
    """(benchmark, typed extra_info) for every benchmark of one kind."""
    found = []
    for bench in benchmarks:
        info = read(bench.get("extra_info", {}))
        if isinstance(info, cls):
            found.append((bench, info))
    return found
