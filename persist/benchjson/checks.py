"""The bench's ratio checks (extra_info["checks"], persist/stats.py), tabled: one row per check with its interval,
bound, pairs, why it stopped and its verdict."""

from __future__ import annotations

from dataclasses import asdict

from rich.table import Table

from persist.benchjson import schema
from persist.stats import bound_text


def check_rows(benchmarks: list[dict]) -> list[dict]:
    """Every ratio check the bench made (extra_info["checks"], read through the schema), with its benchmark."""
    rows = []
    for bench in benchmarks:  # every kind may carry checks: the field is common to all of them
        for check in schema.checks_of(bench):
            rows.append({"benchmark": bench.get("name", "?"), **asdict(check)})
    return rows


VERDICT_STYLES = {"fail": "bold red", "inconclusive": "yellow", "pass": None}


def render_checks(rows: list[dict]) -> Table:
    table = Table(
        "check",
        "ratio (median)",
        "95% interval",
        "half-width / aim",
        "bound",
        "pairs",
        "stopped",
        "verdict",
        title="persist: ratio checks over paired rounds (ABBA order; pass: the whole interval meets the bound, fail: "
        "the whole interval misses it, inconclusive: it straddles it)",
        title_justify="left",
    )
    for r in rows:
        aim = "" if r.get("tolerance") is None else f" / {r['tolerance']:g}"
        cap = "" if r.get("cap_s") is None else f" ({r.get('spent_s') or 0:.0f} of {r['cap_s']:g} s)"
        table.add_row(
            r["name"],
            f"{r['ratio']:.3f}",
            f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]",
            f"{r['half_width']:.3f}{aim}",
            bound_text(r.get("low_bound"), r.get("high_bound")),
            str(r["pairs"]),
            f"{r.get('stopped') or 'fixed'}{cap}",
            r["verdict"],
            style=VERDICT_STYLES.get(r["verdict"]),
        )
    return table
