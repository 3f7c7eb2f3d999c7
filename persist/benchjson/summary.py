"""The bench summary table, computed from pytest-benchmark's JSON form, then rendered with rich.

The same rows come from a live session (`pytest bench`) and from a saved file (`persist summary out.json`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from persist.benchjson import schema
from persist.benchjson.checks import check_rows, render_checks
from persist.config import persistency_label
from persist.errors import PersistError
from persist.forecast import Measured, epoch_s, loader_of_pipeline, wait_figure
from persist.tables import table_console

AU_PASS_PCT = 90.0  # MLPerf Storage passes a training run when accelerator utilization (compute / wall) is >= 90%

COLUMNS = (
    "pipeline",
    "m",
    "K",
    "mean K",
    "epoch s (median)",
    "IQR s",
    "x K=1",
    "predicted s",
    "error %",
    "img/s",
    "data-wait %",
    "AU % (compute)",
    "AU >= 90%",
    "GPU-idle %",
    "util %",
    "note",  # shown only when a cell diverged: its model's loss became NaN, and the cell was timed on
)


def load_benchmarks(path: Path, needs: tuple[str, ...] = ("stats",)) -> dict:
    """The file's JSON, each benchmark checked for the keys its reader `needs` ("stats.median": a key of stats)."""
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise PersistError(f"{path} is not readable JSON: {error}") from error
    if not isinstance(payload, dict) or not isinstance(payload.get("benchmarks"), list):
        raise PersistError(f"{path} is not pytest-benchmark JSON: it has no 'benchmarks' list")
    for index, bench in enumerate(payload["benchmarks"]):
        check_entry(bench, f"{path}: benchmark {index + 1} of {len(payload['benchmarks'])}", needs)
    return payload


def check_entry(bench, where: str, needs: tuple[str, ...]) -> None:
    """One line naming the benchmark and the first key of `needs` it lacks (pytest-benchmark writes them all)."""
    name = (bench.get("name") or bench.get("fullname")) if isinstance(bench, dict) else None
    where += f" ({name})" if isinstance(name, str) else ""
    if not isinstance(bench, dict):
        raise PersistError(f"{where} is a {type(bench).__name__}, not a pytest-benchmark entry (an object)")
    for key in needs:
        outer, _, inner = key.partition(".")
        if outer not in bench or (inner and isinstance(bench[outer], dict) and inner not in bench[outer]):
            raise PersistError(f"{where} has no {key!r}: pytest-benchmark writes fullname, name and stats for each")
        if outer == "stats" and not isinstance(bench[outer], dict):
            raise PersistError(f"{where}: its 'stats' is a {type(bench[outer]).__name__}, not an object")


SUMMARY_STATS = ("stats.median", "stats.iqr", "stats.rounds")


def summary_rows(benchmarks: list[dict]) -> list[dict]:
    """One row per training-epoch cell, in pipeline, m, K order; other benchmarks are left out."""
    rows = []
    for bench, info in schema.of_kind(benchmarks, schema.TrainEpoch):
        stats = bench.get("stats", {})
        median_s = stats["median"]
        rows.append(
            {
                "workload": info.workload or "paper",
                "image_size": info.image_size,
                "model": info.model,
                "precision": info.precision,
                "pipeline": info.pipeline,
                "batch_size": info.batch_size,
                "persistency": info.persistency,
                "adaptive": bool(info.adaptive),
                "k_label": persistency_label(info.persistency, bool(info.adaptive)),
                "mean_k": info.steps / info.loads if info.loads and info.steps else None,
                "storage": info.storage,
                "device": info.device,
                "clock": info.clock,
                "epoch_median_s": median_s,
                "epoch_iqr_s": stats["iqr"],
                "rounds": stats["rounds"],
                "loads": info.loads,
                "steps": info.steps,
                "compute_s": info.compute_s,
                "data_wait_s": info.data_wait_s,
                "data_stall_s": info.data_stall_s,
                "loader": loader_of_pipeline(info.pipeline, info.pipeline_options),
                "fresh_img_per_s": info.fresh_samples / median_s,
                "data_wait_pct": 100 * info.data_wait_s / median_s,
                "compute_pct": 100 * info.compute_s / median_s,
                "gpu_idle_pct": 100 * info.gpu_idle_s / median_s,
                "util_pct": (info.nvml or {}).get("util_mean_pct"),
                "diverged_epoch": info.diverged_epoch if info.diverged else None,
            }
        )
    rows.sort(key=lambda r: (r["workload"], r["pipeline"], r["batch_size"], r["adaptive"], r["persistency"]))
    k1 = {
        (r["workload"], r["pipeline"], r["batch_size"]): r for r in rows if r["persistency"] == 1 and not r["adaptive"]
    }
    for r in rows:
        base = k1.get((r["workload"], r["pipeline"], r["batch_size"]))
        # how much longer an epoch takes than with K=1: the naive expectation is K
        r["epoch_vs_k1"] = r["epoch_median_s"] / base["epoch_median_s"] if base else None
        r["predicted_epoch_s"] = predict_epoch_s(base, r["loads"], r["steps"]) if base else None
        r["prediction_error_pct"] = (
            None if r["predicted_epoch_s"] is None else 100 * (r["predicted_epoch_s"] / r["epoch_median_s"] - 1)
        )
    return rows


def predict_epoch_s(k1: dict, loads: int | None, steps: int | None) -> float | None:
    """The forecast of `persist whatif` (persist/forecast.py) from the K=1 cell alone: each step costs what a step
    and its share of the loop cost there (the epoch less its data wait, per step); each load stalls for the whole
    K=1 wait per load with a synchronous loader (preloaded, torchvision with 0 workers), and with a prefetching one
    (DALI, torchvision workers; the cell's pipeline options say which) only by what the load's production time
    (inferred as K=1 wait + step) exceeds the K steps it overlaps. The error column shows how far it explains
    every K's epoch. On CUDA the wait is the device's data stall where the cell recorded it (forecast.wait_figure)."""
    if not (k1.get("loads") and k1.get("steps") and loads and steps) or k1.get("data_wait_s") is None:
        return None
    measured = Measured(
        wall_s=k1["epoch_median_s"],
        data_wait_s=wait_figure(k1.get("clock"), k1["data_wait_s"], k1.get("data_stall_s"))[0],
        compute_s=k1["compute_s"],
        loads=k1["loads"],
        steps=k1["steps"],
        loader=k1.get("loader", "sync"),
    )
    return epoch_s(measured, steps / loads) * loads / k1["loads"]  # K = steps / loads: a mean K under auto


def scaling_rows(benchmarks: list[dict]) -> list[schema.Scaling]:
    return sorted(
        (info for _, info in schema.of_kind(benchmarks, schema.Scaling)), key=lambda i: (i.pipeline, i.persistency)
    )


def render_scaling(rows: list[schema.Scaling]) -> Table:
    table = Table(
        "pipeline",
        "K",
        "backend",
        "img/s 1 rank",
        "img/s 2 ranks",
        "efficiency %",
        "all-reduce ms (probe)",
        title="persist: scaling with torchrun (weak: m per rank fixed; efficiency = img/s(2) / 2 img/s(1))",
        title_justify="left",
    )
    for r in rows:
        table.add_row(
            r.pipeline,
            str(r.persistency),
            r.backend,
            f"{r.img_per_s_1_rank:,.0f}",
            f"{r.img_per_s_2_ranks:,.0f}",
            f"{100 * r.scaling_efficiency:.0f}",
            f"{1000 * r.allreduce_probe_s:.2f}",
        )
    return table


def _pct(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.0f}"


def render(rows: list[dict], title: str) -> Table:
    notes = any(r["diverged_epoch"] is not None for r in rows)  # the note column only when some cell has one
    table = Table(*(COLUMNS if notes else COLUMNS[:-1]), title=title, title_justify="left")
    for r in rows:
        note = [] if not notes else ["" if r["diverged_epoch"] is None else f"diverged in epoch {r['diverged_epoch']}"]
        table.add_row(
            r["pipeline"],
            str(r["batch_size"]),
            r["k_label"],
            "-" if r["mean_k"] is None else f"{r['mean_k']:.2f}",
            f"{r['epoch_median_s']:.3f}",
            f"{r['epoch_iqr_s']:.3f}",
            "-" if r["epoch_vs_k1"] is None else f"{r['epoch_vs_k1']:.2f}",
            "-" if r["predicted_epoch_s"] is None else f"{r['predicted_epoch_s']:.3f}",
            "-" if r["prediction_error_pct"] is None else f"{r['prediction_error_pct']:+.1f}",
            f"{r['fresh_img_per_s']:,.0f}",
            _pct(r["data_wait_pct"]),
            _pct(r["compute_pct"]),  # AU: accelerator utilization, compute time / wall time
            "yes" if r["compute_pct"] >= AU_PASS_PCT else "no",
            _pct(r["gpu_idle_pct"]),
            _pct(r["util_pct"]),
            *note,
            style="yellow" if r["diverged_epoch"] is not None else None,
        )
    return table


def loading_rows(benchmarks: list[dict]) -> list[dict]:
    """Pipeline-only cells (no model): img/s per pipeline and m, and with JPEG storage the decoder and, for preloaded,
    its one decode of every file before training (decode img/s = files / decode_setup_s)."""
    rows = []
    for _, info in schema.of_kind(benchmarks, schema.PipelineOnly):
        setup_s, files = info.decode_setup_s, info.files_decoded or 0
        rows.append(
            {
                "pipeline": info.pipeline,
                "batch_size": info.batch_size,
                "storage": info.storage,
                "img_per_s": info.img_per_s,
                "decoder": info.decoder,
                "decode_setup_s": setup_s,
                "setup_decode_img_per_s": files / setup_s if setup_s else None,
            }
        )
    return sorted(rows, key=lambda r: (r["pipeline"], r["batch_size"]))


def render_loading(rows: list[dict]) -> Table:
    table = Table(
        "pipeline", "m", "storage", "img/s per epoch", "decoder", "decode once s", "decode once img/s",
        title="persist: pipelines alone (no model): one epoch of loading; preloaded decodes every file once, before it",
    )  # fmt: skip
    for r in rows:
        once = r["decode_setup_s"]
        table.add_row(
            r["pipeline"], str(r["batch_size"]), r["storage"], f"{r['img_per_s']:,.0f}", r["decoder"],
            "-" if once is None else f"{once:.2f}",
            "-" if r["setup_decode_img_per_s"] is None else f"{r['setup_decode_img_per_s']:,.0f}",
        )  # fmt: skip
    return table


def title_for(rows: list[dict]) -> str:
    devices = sorted({r["device"] for r in rows})
    clocks = sorted({r["clock"] for r in rows})
    storage = ", ".join(sorted({r.get("storage", "raw") for r in rows}))
    workload = ""
    if rows and rows[0].get("workload") == "imagenet":
        models = ", ".join(sorted({f"{r['model']} {r['precision']} at {r['image_size']} px" for r in rows}))
        workload = f" imagenet workload ({models}):"
    return (
        f"persist:{workload} one training epoch per cell on {', '.join(devices) or '?'} (clock: "
        f"{', '.join(clocks) or '?'}; storage: {storage}); "
        "img/s = fresh samples per second; % of the epoch's median wall time; AU = compute / wall (MLPerf Storage "
        f"passes a run at AU >= {AU_PASS_PCT:.0f}%)"
    )


def print_summary(benchmarks: list[dict], console: Console | None = None) -> list[dict]:
    rows = summary_rows(benchmarks)
    console = console or table_console()
    if rows:
        for workload in sorted({r["workload"] for r in rows}, key=lambda w: w != "paper"):
            part = [r for r in rows if r["workload"] == workload]
            console.print(render(part, title_for(part)))
    else:
        console.print("persist: no training-epoch cells in these benchmarks")
    loading = loading_rows(benchmarks)
    if loading:
        console.print(render_loading(loading))
    scaling = scaling_rows(benchmarks)
    if scaling:
        console.print(render_scaling(scaling))
    checks = check_rows(benchmarks)
    if checks:
        console.print(render_checks(checks))
    return rows


def print_summary_file(path: Path, console: Console | None = None) -> list[dict]:
    console = console or table_console()  # piped, names stay whole (persist/tables.py)
    benchmarks = load_benchmarks(path)["benchmarks"]
    epochs = [bench for bench, _ in schema.of_kind(benchmarks, schema.TrainEpoch)]
    for index, bench in enumerate(benchmarks):  # what summary_rows reads of a training cell's stats
        if any(bench is cell for cell in epochs):
            check_entry(bench, f"{path}: benchmark {index + 1} of {len(benchmarks)}", SUMMARY_STATS)
    return print_summary(benchmarks, console)
