"""Forecast an epoch at K from a measured K=1 epoch: the asynchronous-loader model of `persist whatif` and of the bench
summary's "predicted s" column. Pure arithmetic: no torch, no files.

Per epoch at K, with the same loads (one pass over the data) and K steps on each:
    epoch(K) = first_wait + (loads - 1) x stall(K) + loads x K x step
    step     = (wall - data_wait) / steps at K=1: everything but the wait, per step (compute and the loop's own time)
    stall(K) = load                      a synchronous loader loads on demand: every load is waited for in full
             = max(0, load - K x step)   a prefetching loader (DataLoader workers, DALI) produces the next batch
                                         while the model computes; a load stalls only by what its production time
                                         exceeds the K steps it overlaps (DS-Analyzer's model)
    load     = the pipeline's production time per batch. When it was not measured alone, it is inferred from the
               K=1 wait: synchronous, load = wait per load; prefetching, stall(1) = wait per load, so
               load = wait + step when the wait is > 0 (when it is ~0, load <= step, and no K stalls either).
The first fetch of an epoch (iter(): worker start-up, the first batch, which nothing overlaps) is a fixed cost per
epoch when it was measured apart (Meter runs); otherwise it is averaged in with the other loads.

"wait" is the host's data_wait_s on a CPU. On CUDA it is the device's data stall (data_stall_s, docs/clocks.md) when
the record has it: when the device is the bottleneck the host blocks in whichever launch finds CUDA's queue full,
often a load's, so the host's wait grows with compute and would make K seem to save what the device never idled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

LOADERS = ("async", "sync")
DEVICE_CLOCK = "cuda_events"  # the step clock with a device timeline of its own


def wait_figure(clock: str | None, data_wait_s: float, data_stall_s: float | None) -> tuple[float, str]:
    """(the data wait a forecast starts from, "device" | "host"): on CUDA the device's idle waiting for data when it
    was recorded; elsewhere (the CPU, records written before it existed) the host's time blocked fetching."""
    if clock == DEVICE_CLOCK and data_stall_s is not None:
        return data_stall_s, "device"
    return data_wait_s, "host"


def loader_of_pipeline(pipeline: str, options: dict | None) -> str:
    """Whether one of persist's pipelines prefetches: DALI always (its own threads), torchvision with workers;
    preloaded (already on the device) and torchvision with 0 workers load on demand. A plug-in prefetches when its
    class says so (`prefetches = True`, recorded under "plugin"); otherwise it is taken as synchronous."""
    options = options or {}
    if isinstance(options.get("plugin"), dict):
        return "async" if options["plugin"].get("prefetches") else "sync"
    if pipeline == "dali":
        return "async"
    if pipeline == "torchvision":
        return "async" if (options.get("num_workers") or 0) > 0 else "sync"
    return "sync"


@dataclass(frozen=True)
class Measured:
    """One K=1 epoch (or the median of several): what the forecast starts from."""

    wall_s: float
    data_wait_s: float
    compute_s: float
    loads: int
    steps: int
    loader: str  # async | sync
    first_wait_s: float | None = None  # the first fetch apart (worker start-up included); None: not measured
    load_s: float | None = None  # the pipeline's production time per batch, measured alone; None: inferred

    def __post_init__(self):
        if self.loader not in LOADERS:
            raise ValueError(f"loader={self.loader!r}: choose one of {', '.join(LOADERS)}")
        if not (self.loads > 0 and self.steps > 0):
            raise ValueError(f"a forecast needs loads and steps > 0, not {self.loads} and {self.steps}")

    @property
    def step_s(self) -> float:
        return max(0.0, self.wall_s - self.data_wait_s) / self.steps

    @property
    def first_apart(self) -> bool:
        return self.first_wait_s is not None and self.loads > 1

    @property
    def fixed_s(self) -> float:
        return self.first_wait_s if self.first_apart else 0.0

    @property
    def waited_loads(self) -> int:
        return self.loads - 1 if self.first_apart else self.loads

    @property
    def wait_per_load_s(self) -> float:
        return max(0.0, self.data_wait_s - self.fixed_s) / self.waited_loads

    @property
    def load_per_batch_s(self) -> float:
        """The load time the model uses, and `load_source` says where it came from."""
        if self.load_s is not None:
            return self.load_s
        if self.loader == "sync":
            return self.wait_per_load_s
        return self.wait_per_load_s + self.step_s if self.wait_per_load_s > 0 else self.step_s

    @property
    def load_source(self) -> str:
        if self.load_s is not None:
            return "measured from the pipeline alone"
        if self.loader == "sync":
            return "the K=1 data wait per load (a synchronous loader waits for the whole load)"
        return "inferred from the K=1 run: load = data wait per load + step time (the wait is what K=1 could not hide)"


@dataclass(frozen=True)
class Forecast:
    k: int
    epoch_s: float
    steps: int
    stall_per_load_s: float
    time_per_step_s: float
    loading_factor: float  # time per step at K=1 (forecast) / at K
    au: float  # compute / wall: the share of the epoch the model computes

    def as_dict(self) -> dict:
        return asdict(self)


def stall_s(measured: Measured, k: int) -> float:
    load = measured.load_per_batch_s
    if measured.loader == "sync":
        return load
    return max(0.0, load - k * measured.step_s)


def epoch_s(measured: Measured, k: int) -> float:
    return measured.fixed_s + measured.waited_loads * stall_s(measured, k) + measured.loads * k * measured.step_s


def forecast(measured: Measured, k: int) -> Forecast:
    """The epoch at K (same loads, K steps each), its stall per load, time per step, loading factor and AU."""
    if k < 1:
        raise ValueError(f"K={k}: use K >= 1")
    steps = measured.loads * k
    epoch = epoch_s(measured, k)
    compute_per_step = measured.compute_s / measured.steps
    per_step_1 = epoch_s(measured, 1) / measured.loads
    return Forecast(
        k=k,
        epoch_s=epoch,
        steps=steps,
        stall_per_load_s=stall_s(measured, k),
        time_per_step_s=epoch / steps,
        loading_factor=per_step_1 / (epoch / steps),
        au=compute_per_step * steps / epoch if epoch > 0 else float("nan"),
    )
