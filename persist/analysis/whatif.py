"""`persist whatif RUN_DIR [--replay DIR] [--persistencies 1,2,4] [--json]`: what K-fold reuse would give a loop.

From one K=1 run (a Meter run or a `persist train` run) it forecasts each K's epoch time, loading factor and AU
(compute / wall) with persist.forecast's model (prefetching or synchronous loader), and puts the ceiling beside them:
the time per step of a replay run of the same loop (persist.replay: ideal loading), or, with none given, the K=1
run's compute per step. Reads run folders only. On CUDA the wait it starts from is the device's data stall
(data_stall_s) where the records have it, the host's data_wait_s elsewhere (persist.forecast.wait_figure).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from persist.errors import PersistError
from persist.forecast import LOADERS, Forecast, Measured, forecast, loader_of_pipeline, wait_figure
from persist.records import EpochRecord, read_manifest, read_meter_lines, read_records

FIELDS = ("wall_s", "data_wait_s", "compute_s")
WAIT_LABELS = {"device": "device data stall", "host": "data wait"}  # which wait the forecast starts from
KEPT_UP = 0.02  # a prefetching loader whose wait per load is under this share of a step kept up: its load is unknown


def _epochs(run: Path) -> tuple[dict, list[EpochRecord]]:
    manifest = read_manifest(run)
    if manifest is None:
        raise PersistError(f"{run} is not a persist run folder (no manifest.json)")
    records = read_records(run)
    if not records:
        raise PersistError(f"{run} has no finished epoch to forecast from")
    # the first epoch warms up (allocator, caches, worker start-up paid once): left out when others exist
    return manifest, records[1:] if len(records) > 1 else records


def loader_of_run(manifest: dict) -> tuple[str, str]:
    """(async | sync, why) for a Meter run (what it recorded) or a persist train run (its pipeline)."""
    if manifest.get("source") == "persist.Meter":
        kind = (manifest.get("meter") or {}).get("loader")
        if kind in LOADERS:
            return kind, "recorded by the Meter"
        if kind == "replay":
            raise PersistError("this is a replay run (ideal loading): pass it as --replay beside the real K=1 run")
        return "sync", f"the Meter could not tell ({kind}): assumed synchronous; pass --loader async if it prefetches"
    described = manifest.get("pipeline") or {}
    pipeline = manifest.get("config", {}).get("pipeline", "?")
    kind = loader_of_pipeline(pipeline, described)
    if isinstance(described.get("plugin"), dict):  # a plug-in: what its class declared, recorded by the run
        declared = "declares prefetches = True" if kind == "async" else "does not declare prefetches = True"
        return kind, f"the plug-in pipeline {pipeline} {declared}"
    return kind, f"persist's {pipeline} pipeline"


def measured_k1(run: Path, loader: str | None = None) -> tuple[Measured, dict]:
    """The K=1 run's median epoch (after the first when there are several) as the forecast's input."""
    manifest, records = _epochs(run)
    bad = [r for r in records if r.steps != r.loads]
    if bad:
        raise PersistError(
            f"{run} is a K={bad[0].steps // max(1, bad[0].loads)} run: whatif forecasts from a K=1 run (one step per "
            "load)"
        )
    kind, why = (loader, "given with --loader") if loader else loader_of_run(manifest)
    measured = measured_of(records, read_meter_lines(run), kind)
    context = {
        "run": str(run),
        "epochs_used": [r.epoch for r in records],
        "loader_why": why,
        "clock": records[-1].clock,
        "wait_figure": figure_of(records),
        "host_data_wait_s": statistics.median(r.data_wait_s for r in records),
    }
    return measured, context


def figure_of(records: list[EpochRecord]) -> str:
    """ "device" when every epoch has the device's data stall (CUDA), else "host"."""
    figures = {wait_figure(r.clock, r.data_wait_s, r.data_stall_s)[1] for r in records}
    return "device" if figures == {"device"} else "host"


def measured_of(records: list[EpochRecord], meter_lines: list[dict], loader: str) -> Measured:
    """The median of K=1 epochs as the forecast's input; with a Meter's lines, the first fetch apart. The wait is
    the device's data stall on CUDA where every epoch has it (figure_of), the host's data wait otherwise."""
    numbers = {f: statistics.median(getattr(r, f) for r in records) for f in FIELDS}
    if figure_of(records) == "device":
        numbers["data_wait_s"] = statistics.median(r.data_stall_s for r in records)
    epochs = {r.epoch for r in records}
    first = [m["first_wait_s"] for m in meter_lines if m.get("epoch") in epochs and m.get("first_wait_s") is not None]
    return Measured(
        **numbers,
        loads=records[-1].loads,
        steps=records[-1].steps,
        loader=loader,
        first_wait_s=statistics.median(first) if first else None,
    )


def ceiling_per_step(measured: Measured, replay: Path | None) -> tuple[float, str]:
    """Time per step with ideal loading: a replay run's (median epoch wall / steps), else the K=1 compute per step."""
    if replay is None:
        return measured.compute_s / measured.steps, "compute per step of the K=1 run (no replay run given)"
    _, records = _epochs(replay)
    per_step = statistics.median(r.wall_s / r.steps for r in records)
    return per_step, f"replay run {replay}: median epoch wall / steps"


def whatif(run: Path, persistencies=(1, 2, 4), replay: Path | None = None, loader: str | None = None) -> dict:
    """The forecast for each K, the ceiling, and where every input came from (what --json prints)."""
    measured, context = measured_k1(Path(run), loader)
    ceiling, ceiling_source = ceiling_per_step(measured, None if replay is None else Path(replay))
    k1_per_step = measured.wall_s / measured.steps
    rows = []
    for k in persistencies:
        f: Forecast = forecast(measured, k)
        rows.append(
            {
                **f.as_dict(),
                "ceiling_epoch_s": ceiling * f.steps,
                "ceiling_loading_factor": k1_per_step / ceiling,
            }
        )
    kept_up = measured.loader == "async" and measured.load_s is None
    kept_up = kept_up and measured.wait_per_load_s < KEPT_UP * measured.step_s
    caveats = []
    if kept_up:
        caveats.append(
            "the loader kept up at K=1 (it prefetches and the loop hardly waited), so its load time is only bounded "
            "by the step time: K cannot save loading here"
        )
    if ceiling > k1_per_step:
        caveats.append(
            f"the replay ceiling ({1e3 * ceiling:.2f} ms/step) is slower than the real run's "
            f"{1e3 * k1_per_step:.2f} ms/step: the two runs did not see the same machine (other load, another "
            "device or settings), so the ceiling columns say nothing here"
        )
    return {
        **context,
        "loader": measured.loader,
        "load_per_batch_s": measured.load_per_batch_s,
        "load_is_upper_bound": kept_up,
        "load_source": "at most the step time (the loader kept up at K=1)" if kept_up else measured.load_source,
        "caveats": caveats,
        "step_s": measured.step_s,
        "first_wait_s": measured.first_wait_s,
        "measured_k1": {
            "wall_s": measured.wall_s,
            "data_wait_s": measured.data_wait_s,
            "compute_s": measured.compute_s,
            "loads": measured.loads,
            "steps": measured.steps,
            "au": measured.compute_s / measured.wall_s,
        },
        "ceiling_per_step_s": ceiling,
        "ceiling_source": ceiling_source,
        "model": "epoch(K) = first_wait + (loads-1) x stall(K) + loads x K x step; stall(K) = load (sync) or "
        "max(0, load - K x step) (async)",
        "forecasts": rows,
    }


def render(result: dict) -> Table:
    k1 = result["measured_k1"]
    table = Table(
        "K", "epoch s", "time/step ms", "stall/load ms", "loading x", "AU %", "ceiling epoch s", "ceiling loading x",
        title=(
            f"persist whatif {result['run']}: K=1 measured {k1['wall_s']:.3f} s/epoch ({k1['loads']} loads, "
            f"{WAIT_LABELS[result['wait_figure']]} {k1['data_wait_s']:.3f} s, AU {100 * k1['au']:.0f}%); "
            f"loader {result['loader']} "
            f"({result['loader_why']}); load {'<= ' if result['load_is_upper_bound'] else ''}"
            f"{1e3 * result['load_per_batch_s']:.2f} ms/batch from {result['load_source']}; "
            f"ceiling {1e3 * result['ceiling_per_step_s']:.2f} ms/step from {result['ceiling_source']}; "
            f"clock {result['clock']}"
        ),
        title_justify="left",
    )  # fmt: skip
    for r in result["forecasts"]:
        table.add_row(
            str(r["k"]), f"{r['epoch_s']:.3f}", f"{1e3 * r['time_per_step_s']:.2f}",
            f"{1e3 * r['stall_per_load_s']:.2f}", f"{r['loading_factor']:.2f}", f"{100 * r['au']:.0f}",
            f"{r['ceiling_epoch_s']:.3f}", f"{r['ceiling_loading_factor']:.2f}",
        )  # fmt: skip
    return table


def print_whatif(result: dict, console: Console | None = None) -> None:
    # piped to a file or another program, rich would wrap at 80 columns and cut names: a wide console keeps them whole
    console = console or Console(width=None if sys.stdout.isatty() else 200)
    console.print(render(result))
    for caveat in result["caveats"]:
        console.print(f"[bold]Caveat:[/bold] {caveat}")
