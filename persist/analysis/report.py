"""`persist report RUN_DIR... --out DIR`: the paper's figures, the decomposition table, and a short report.

Reads records only (persist.records and persist.analysis.decomposition); it never imports the trainer.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas
from rich.console import Console
from rich.table import Table

from persist.analysis.claims import claim_lines
from persist.analysis.compose import checks, composition_markdown, refusals, sources
from persist.analysis.decomposition import TARGET_FRACTION, cell_table, check_comparable, composed_runs
from persist.analysis.figures import adaptive_figures, paper_figures, reuse_figures
from persist.analysis.loading import check_not_mixed, write_loading_report
from persist.records import load_evals, load_runs, load_unfinished, read_manifest
from persist.tables import table_console

TABLE_COLUMNS = [  # (column, header, format)
    ("pipeline", "pipeline", "{}"),
    ("batch_size", "m", "{}"),
    ("k_label", "K", "{}"),
    ("mean_k", "mean K", "{:.2f}"),
    ("lr_schedule", "lr", "{}"),
    ("reuse", "reuse", "{}"),
    ("seeds", "seeds", "{}"),
    ("target", "target acc", "{:.3f}"),
    ("overhead_per_load_s", "overhead/load ms", "{:.3f}", 1e3),
    ("compute_per_step_s", "compute/step ms", "{:.3f}", 1e3),
    ("time_per_step_s", "time/step ms", "{:.3f}", 1e3),
    ("steps_to_target", "steps", "{:.0f}"),
    ("epochs_to_target", "epochs", "{:.1f}"),
    ("fresh_samples_to_target", "fresh samples", "{:,.0f}"),
    ("seconds_to_target", "s to target", "{:.2f}"),
    ("loading_factor", "loading x", "{:.2f}"),
    ("convergence_factor", "convergence x", "{:.2f}"),
    ("speedup", "speedup x", "{:.2f}"),
    ("allreduce_probe_s", "all-reduce ms (probe)", "{:.3f}", 1e3),
    ("note", "note", "{}"),
]
# the terminal gets the columns that tell the story; the markdown and CSV files get all of them
TERMINAL_COLUMNS = [
    spec
    for spec in TABLE_COLUMNS
    if spec[0]
    in {
        "pipeline",
        "batch_size",
        "k_label",
        "mean_k",
        "lr_schedule",
        "reuse",
        "target",
        "overhead_per_load_s",
        "time_per_step_s",
        "steps_to_target",
        "seconds_to_target",
        "loading_factor",
        "convergence_factor",
        "speedup",
        "note",
    }
]


TO_TARGET = {"steps_to_target", "epochs_to_target", "fresh_samples_to_target", "seconds_to_target", "speedup"}


def cell_text(row, column: str, fmt: str, scale: float = 1.0, per_seed: bool = False) -> str:
    """mean ± 95% half-width; with `per_seed`, then n and every seed's value. A figure to a target that no seed
    reached reads "not reached", never a number."""
    value = row[column]
    if isinstance(value, float) and math.isnan(value):
        return "not reached" if column in TO_TARGET or column == "convergence_factor" else "-"
    text = fmt.format(value * scale) if isinstance(value, float) else fmt.format(value)
    ci = row.get(column + "_ci")
    if ci is not None and not math.isnan(ci) and ci > 0:
        text += " ± " + fmt.format(ci * scale).strip()
    values = row.get(column + "_values")
    if per_seed and isinstance(values, list) and len(values) > 1:
        shown = ", ".join("not reached" if math.isnan(v) else fmt.format(v * scale).strip() for v in values)
        text += f" (n={len(values)}: {shown})"
    return text


def rows_as_text(table: pandas.DataFrame, columns=TABLE_COLUMNS, per_seed: bool = False) -> list[list[str]]:
    return [[cell_text(row, spec[0], *spec[2:], per_seed=per_seed) for spec in columns] for _, row in table.iterrows()]


def targets_text(targets: dict[tuple[str, int], float]) -> str:
    return ", ".join(f"{pipeline} m={m}: {acc:.4f}" for (pipeline, m), acc in sorted(targets.items()))


def rich_table(table: pandas.DataFrame, targets: dict[tuple[str, int], float]) -> Table:
    out = Table(
        *[spec[1] for spec in TERMINAL_COLUMNS],
        title=f"Decomposition to test accuracy ({targets_text(targets)}) "
        "(mean ± 95% CI over seeds; factors against K=1 of the same pipeline, m and seed)",
    )
    for cells in rows_as_text(table, TERMINAL_COLUMNS):
        out.add_row(*cells)
    return out


def markdown_table(table: pandas.DataFrame) -> str:
    header = [spec[1] for spec in TABLE_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows_as_text(table, per_seed=True)]
    return "\n".join(lines)


CHANCE_MARGIN = 2.0  # a target under twice the chance accuracy (1/classes) says little about convergence


def verdicts(table: pandas.DataFrame, classes: int = 10) -> list[str]:
    """One plain sentence per (pipeline, m): did persistency pay off, and through loading or convergence?"""
    sentences = []
    for (pipeline, m), target in table.groupby(["pipeline", "batch_size"])["target"].first().items():
        if target < CHANCE_MARGIN / classes:
            sentences.append(
                f"- {pipeline}, m={m}: the target {target:.3f} is not clearly above chance ({1 / classes:.2f}): "
                "the reference hardly learned, so its convergence factors say little."
            )
    for (pipeline, m), cell in table[table["persistency"] > 1].groupby(["pipeline", "batch_size"]):
        best = cell.loc[cell["speedup"].idxmax()] if cell["speedup"].notna().any() else None
        if best is None and (cell["steps_to_target"] == 0).all():
            sentences.append(
                f"- {pipeline}, m={m}: the untrained model already met the target, so there is no convergence "
                "factor to give: pass a higher --target."
            )
            continue
        if best is None:
            sentences.append(f"- {pipeline}, m={m}: no K>1 run reached the target, so persistency did not pay off.")
            continue
        paid = "paid off" if best["speedup"] > 1 else "did not pay off"
        source = (
            "convergence"
            if abs(math.log(best["convergence_factor"])) >= abs(math.log(best["loading_factor"]))
            else "loading"
        )
        caveat = f" Caveat, as the table notes: {best['note']}." if best.get("note") else ""
        sentences.append(
            f"- {pipeline}, m={m}: persistency {paid}; the best K={best['k_label']} ({best['lr_schedule']} lr) "
            f"reached the target {best['speedup']:.2f}x as fast as K=1, mostly through {source} "
            f"(loading x{best['loading_factor']:.2f}, convergence x{best['convergence_factor']:.2f}).{caveat}"
        )
    return sentences


def write_report(run_dirs: list[Path], out: Path, target: float | None = None, console: Console | None = None) -> Path:
    epochs, evals = load_runs(run_dirs), load_evals(run_dirs)
    if check_not_mixed(epochs):  # emulated compute: loading figures only, and why nothing else is judged
        return write_loading_report(epochs, out, console)
    target_given = target is not None
    check_comparable(epochs)
    found = sources(epochs)  # timing runs -> the runs they borrow convergence from, found once for every use below
    runs, targets = composed_runs(epochs, target, evals, found)
    table = cell_table(runs, targets, target)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "decomposition.csv", index=False)
    (out / "decomposition.md").write_text(markdown_table(table) + "\n")
    figures, measured = [], epochs[~epochs["run"].isin(found)]  # a timing run's short curve says little
    for pipeline in sorted(measured["pipeline"].unique()):
        for draw in (paper_figures, adaptive_figures, reuse_figures):
            figures += draw(measured, pipeline, out)
    (console or table_console()).print(rich_table(table, targets))  # piped, names stay whole
    report = out / "report.md"
    unfinished = load_unfinished(run_dirs)
    extra = ["", "## The paper's claims", "", *claim_lines(runs, unfinished), ""]
    extra += composition_markdown(runs, checks(epochs, runs, found), refusals(epochs))
    if len(unfinished):
        names = ", ".join(
            f"{Path(r).name} ({str(status).split(':')[0]})"
            for r, status in zip(unfinished["run"], unfinished["status"], strict=True)
        )
        extra += [
            f"Runs with no finished epoch (in no table or figure; the claims count a divergence as a miss): {names}",
            "",
        ]
    report.write_text(
        _markdown(epochs, table, targets, target_given, figures, _machine(run_dirs[0]), not evals.empty, sections=extra)
    )
    return report


def _machine(run_dir: Path) -> str:
    manifest = read_manifest(run_dir) or {}
    host, versions = manifest.get("host", {}), manifest.get("versions", {})
    return (
        f"{host.get('platform', '?')}, {host.get('cpu_count', '?')} CPUs; torch {versions.get('torch')}, "
        f"torchvision {versions.get('torchvision')}, DALI {versions.get('nvidia-dali-cuda120')}"
    )


def _values(epochs: pandas.DataFrame, column: str) -> str:
    """The column's distinct values, sorted; as text where the runs recorded it with mixed types (5 and "5")."""
    values = epochs[column].dropna().unique().tolist()
    try:
        ordered = sorted(values)
    except TypeError:
        ordered = sorted(values, key=str)
    return ", ".join(str(v) for v in ordered)


def _markdown(
    epochs: pandas.DataFrame,
    table: pandas.DataFrame,
    targets: dict,
    target_given: bool,
    figures: list[Path],
    machine: str,
    interpolated: bool = False,
    sections: list[str] = (),
) -> str:
    """report.md: setup, verdicts, then `sections` (the claims and the composition), the decomposition, figures."""
    first = epochs.iloc[0]
    partial = table[table["partial"]]
    lines = [
        "# persist report",
        "",
        "## Setup",
        "",
        f"- dataset `{first['dataset']}`, {first['train_size'] or 'all'} training images, model width {first['width']}",
        f"- machine: {machine}",
        f"- device `{first['device']}`, clock `{first['clock']}`; lr {first['lr']}, momentum {first['momentum']}, "
        f"loss reduction `{first['loss_reduction']}`",
        f"- {epochs['run'].nunique()} runs with finished epochs: pipelines {_values(epochs, 'pipeline')}, "
        f"m {_values(epochs, 'batch_size')}, K {_values(epochs, 'persistency')}, "
        f"schedules {_values(epochs, 'lr_schedule')}, seeds {_values(epochs, 'seed')}",
        f"- target test accuracy: {targets_text(targets)}"
        + (
            ""
            if target_given
            else f" (default, per pipeline and m: {TARGET_FRACTION:.0%} of the best test accuracy of its K=1 "
            "reference, the mean over its seeds)"
        ),
        "- time to target: "
        + (
            "interpolated linearly between the evaluations (evals.jsonl) just below and at or above the target"
            if interpolated
            else "read once per epoch (these runs have no evals.jsonl), so it has epoch resolution"
        ),
    ]
    diverged = table[table["diverged"] > 0]
    if len(diverged):
        lines.append(
            f"- runs that diverged (NaN loss): {int(diverged['diverged'].sum())}, in {len(diverged)} cell(s)"
            " marked in the table; their finished epochs count, their targets are missed"
        )
    still = partial[partial["diverged"] == 0]
    if len(still):
        lines.append(f"- partial runs (still running or stopped): {len(still)} cell(s), marked in the table")
    lines += [
        "",
        "## Did persistency pay off?",
        "",
        *verdicts(table),
        *sections,
        "",
        "## Decomposition",
        "",
        markdown_table(table),
        "",
        "## Figures",
        "",
    ]
    lines += [f"![{f.stem}]({f.name})" for f in figures]
    return "\n".join(lines) + "\n"
