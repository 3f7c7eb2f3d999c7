"""`persist report` of emulated runs (--compute emulated:SPEC): their loading figures, and no convergence.

An emulated run trains nothing, so it has no loss or accuracy to judge, and its timing cannot be composed with a real
run's convergence: the report shows, per run, the data wait, the accelerator utilization (AU), img/s and the uses per
load, and says why it judges nothing else. AU is MLPerf Storage's: the emulated compute time over the epoch's time,
here per epoch, compute_s / wall_s, averaged over the epochs after the first (the first holds the workers' start;
with one epoch, that one). MLPerf Storage passes a system whose AU stays at or above 90%.
"""

from __future__ import annotations

from pathlib import Path

import pandas
from rich.console import Console
from rich.table import Table

from persist.errors import PersistError
from persist.records import read_manifest
from persist.tables import table_console
from persist.validation import persistency_label

AU_PASS = 0.90  # MLPerf Storage's pass mark: accelerator utilization at or above 90%
NOT_JUDGED = (
    "Convergence is not judged: these runs emulated their compute (each step a host wait of an accelerator's step "
    "time), so they trained nothing and have no loss or accuracy; only their loading figures are shown."
)
COLUMNS = [  # (column, header, format)
    ("name", "run", "{}"),
    ("pipeline", "pipeline", "{}"),
    ("batch_size", "m", "{}"),
    ("k_label", "K", "{}"),
    ("compute", "compute", "{}"),
    ("step_ms", "step ms", "{:.3f}"),
    ("epochs", "epochs", "{}"),
    ("data_wait_s", "data wait s/epoch", "{:.3f}"),
    ("wall_s", "wall s/epoch", "{:.3f}"),
    ("au", "AU %", "{:.1f}"),
    ("au_pass", "AU >= 90%", "{}"),
    ("fresh_img_per_s", "img/s", "{:,.0f}"),
    ("uses_per_load", "uses/load", "{:.2f}"),
]


def is_emulated(epochs: pandas.DataFrame) -> pandas.Series:
    """Per epoch row: whether its run emulated its compute (records from before --compute are real)."""
    compute = epochs["compute"] if "compute" in epochs else pandas.Series("real", index=epochs.index)
    return compute.fillna("real") != "real"


def check_not_mixed(epochs: pandas.DataFrame) -> bool:
    """True where every run is emulated; False where none is; refused in one line where they are mixed."""
    emulated = is_emulated(epochs)
    if emulated.all() or not emulated.any():
        return bool(emulated.all()) and len(epochs) > 0
    fake = sorted(set(epochs.loc[emulated, "run"].map(lambda r: Path(r).name)))
    raise PersistError(
        f"the runs mix emulated compute ({', '.join(fake)}) with real compute: an emulated run trained nothing, so "
        "its timing is neither judged for convergence nor composed with a real run's; report them apart"
    )


def loading_table(epochs: pandas.DataFrame) -> pandas.DataFrame:
    """One row per run: its loading figures over the epochs after the first (all, with one epoch)."""
    rows = []
    for run, frame in epochs.groupby("run", sort=True):
        timed = frame[frame["epoch"] > frame["epoch"].min()] if len(frame) > 1 else frame
        first = frame.iloc[0]
        emulated = ((read_manifest(Path(run)) or {}).get("compute") or {}).get("emulated") or {}
        au = float((timed["compute_s"] / timed["wall_s"]).mean())
        rows.append(
            {
                "run": run,
                "name": Path(run).name,
                "pipeline": first["pipeline"],
                "batch_size": int(first["batch_size"]),
                "k_label": persistency_label(int(first["persistency"]), bool(first["adaptive"])),
                "compute": first["compute"],
                "step_ms": 1e3 * emulated["step_s_used"] if "step_s_used" in emulated else float("nan"),
                "source": emulated.get("source", ""),
                "epochs": len(frame),
                "data_wait_s": float(timed["data_wait_s"].mean()),
                "wall_s": float(timed["wall_s"].mean()),
                "au": 100 * au,
                "au_pass": "pass" if au >= AU_PASS else "fail",
                "fresh_img_per_s": float(timed["fresh_samples"].sum() / timed["wall_s"].sum()),
                "uses_per_load": float(timed["steps"].sum() / max(1, timed["loads"].sum())),
            }
        )
    return pandas.DataFrame(rows)


def _text(value, fmt: str) -> str:
    return "-" if isinstance(value, float) and value != value else fmt.format(value)


def rich_loading(table: pandas.DataFrame) -> Table:
    out = Table(*[c[1] for c in COLUMNS], title="Loading for an emulated accelerator (compute emulated: no training)")
    for _, row in table.iterrows():
        out.add_row(*[_text(row[c], fmt) for c, _, fmt in COLUMNS])
    return out


def loading_markdown(table: pandas.DataFrame) -> str:
    lines = [
        "# persist report: emulated compute",
        "",
        NOT_JUDGED,
        "",
        f"AU: compute_s / wall_s per epoch, the epochs after the first; MLPerf Storage's pass mark is AU >= "
        f"{AU_PASS:.0%}.",
        "",
        "| " + " | ".join(c[1] for c in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(_text(row[c], fmt) for c, _, fmt in COLUMNS) + " |" for _, row in table.iterrows()]
    sources = sorted(set(table["source"]) - {""})
    lines += ["", "## Step times used", "", *(f"- {source}" for source in sources)]
    return "\n".join(lines) + "\n"


def write_loading_report(epochs: pandas.DataFrame, out: Path, console: Console | None = None) -> Path:
    """loading.csv and report.md for emulated runs; the table and the reason nothing else is judged, printed."""
    table = loading_table(epochs)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "loading.csv", index=False)
    console = console or table_console()
    console.print(rich_loading(table))
    console.print(NOT_JUDGED)
    report = out / "report.md"
    report.write_text(loading_markdown(table))
    return report
