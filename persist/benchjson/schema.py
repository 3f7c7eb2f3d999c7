"""The bench's `extra_info`, typed: one frozen dataclass per kind of benchmark cell.

bench/ writes every cell's extra_info through `to_extra_info`, and the summary and the regression gate read it back
through `read`, so a field is named in one place. The JSON keys are the fields' names plus `kind`; files written before
a field existed still read (the field takes its default, or None), and keys this version does not know are ignored.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import ClassVar

from persist.stats import verdict_of


@dataclass(frozen=True)
class Check:
    """One ratio check over paired rounds (persist.stats.RatioCheck.as_dict), as every kind's `checks` holds it.

    Files written before the three verdicts have `failed` but no `verdict`: the verdict is then read from the interval
    and the bounds, by the same rule (persist.stats.verdict_of)."""

    name: str
    ratio: float
    ci_low: float
    ci_high: float
    pairs: int
    low_bound: float | None = None
    high_bound: float | None = None
    verdict: str | None = None  # pass | fail | inconclusive
    failed: bool = False
    half_width: float | None = None  # of the 95% interval
    tolerance: float | None = None  # the half-width the pairs aimed for
    stopped: str | None = None  # narrow | cap | max-pairs; None: a fixed number of pairs
    cap_s: float | None = None
    spent_s: float | None = None
    method: str = ""

    def __post_init__(self):
        if self.verdict is None:
            object.__setattr__(self, "verdict", verdict_of(self.ci_low, self.ci_high, self.low_bound, self.high_bound))
        if self.half_width is None:
            object.__setattr__(self, "half_width", (self.ci_high - self.ci_low) / 2)


def read_check(check: dict) -> Check:
    names = {f.name for f in fields(Check)}
    return Check(**{k: v for k, v in check.items() if k in names})


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
    wall_s: float | None = None  # median over timed rounds of the epoch's own wall time (what the bench times)
    data_stall_s: float | None = None  # median device idle before the first step after each load (docs/clocks.md)
    outside_wall_s: float | None = None  # median per round of the epoch call's time outside wall_s (NVML stop, resolve)
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
    adaptive: bool = False  # --persistency auto: persistency is the cap, uses_per_load what it chose
    uses_per_load: dict = field(default_factory=dict)
    compute: str = "real"  # --compute: real, or emulated:SPEC (each step a host wait; nothing trained)
    emulated: dict | None = None  # emulated: the profile, its source and the step time used (step_s_used)
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
    """The step clock's own cost: `steps` empty step_start/step_end pairs plus resolve(), against a bare epoch."""

    kind: ClassVar[str] = "clock_overhead"
    clock: str
    overhead_fraction: float
    max_overhead_fraction: float
    steps: int
    clock_cost_s: float | None = None  # median per epoch: the empty pairs plus resolve()
    bare_epoch_s: float | None = None  # median wall time of an epoch with no step clock
    config: dict = field(default_factory=dict)
    checks: list = field(default_factory=list)


@dataclass(frozen=True)
class AutoOverhead:
    """--persistency auto against K=1 with a loader that keeps up: its mean K, and what it costs."""

    kind: ClassVar[str] = "auto_overhead"
    mean_k: float
    overhead_fraction: float
    max_overhead_fraction: float
    config: dict = field(default_factory=dict)
    checks: list = field(default_factory=list)


@dataclass(frozen=True)
class PlantedDelay:
    kind: ClassVar[str] = "planted_delay"
    delay_ms: float
    data_wait_ratio: float
    epoch_model_ratio: float
    epoch_model: str = "serial"  # serial: loads*(d + load) + compute | overlapped: a load hides its K steps (CUDA)
    config: dict = field(default_factory=dict)
    checks: list = field(default_factory=list)


@dataclass(frozen=True)
class PlantedSlowdown:
    """A pipeline made slower on purpose by `slowdown_fraction` of its own load time, checked as any pipeline is: the
    verdict it got shows whether the bench can see such a shortfall (fail or inconclusive, never pass)."""

    kind: ClassVar[str] = "planted_slowdown"
    pipeline: str
    batch_size: int
    slowdown_fraction: float
    sleep_per_load_s: float
    verdict: str
    throughput_ratio: float
    min_ratio: float
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


@dataclass(frozen=True)
class WhatIf:
    """`persist whatif`'s forecast of a K>1 epoch from a K=1 Meter run of the same loop, against a real K>1 epoch."""

    kind: ClassVar[str] = "whatif"
    loader: str  # async | sync: how the loop's loader works, as the forecast models it
    persistency: int
    load_ms: float  # the planted sleep per sample
    predicted_epoch_s: float  # whatif on the whole K=1 run (median epoch after the first)
    measured_epoch_s: float  # median K>1 epoch after the first
    ratio: float  # median over paired rounds of predicted / measured
    config: dict = field(default_factory=dict)
    checks: list = field(default_factory=list)


KINDS = {cls.kind: cls for cls in (TrainEpoch, ModelOnly, PipelineOnly, VsReference, ClockOverhead, PlantedDelay)}
KINDS.update({cls.kind: cls for cls in (Scaling, AutoOverhead, PlantedSlowdown, WhatIf)})
Info = (
    TrainEpoch
    | ModelOnly
    | PipelineOnly
    | VsReference
    | ClockOverhead
    | AutoOverhead
    | PlantedDelay
    | PlantedSlowdown
    | Scaling
    | WhatIf
)


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


def checks_of(bench: dict) -> list[Check]:
    """Every ratio check one benchmark carries (any kind may), typed; old files read as above."""
    return [read_check(c) for c in (bench.get("extra_info") or {}).get("checks") or []]


def of_kind(benchmarks: list[dict], cls: type) -> list[tuple[dict, Info]]:
    """(benchmark, typed extra_info) for every benchmark of one kind."""
    found = []
    for bench in benchmarks:
        info = read(bench.get("extra_info", {}))
        if isinstance(info, cls):
            found.append((bench, info))
    return found
