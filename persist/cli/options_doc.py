"""docs/options.md, made from RunConfig's field metadata like --help. Regenerate with:
`python -m persist.cli.options_doc > docs/options.md`."""

from __future__ import annotations

from persist.cli.run_options import PIPELINE_GROUPS, SWEEP_AXES, SWEEP_BASE, run_options

REGENERATE = "python -m persist.cli.options_doc > docs/options.md"
INTRO = (
    "The options of `persist train`, one per field of `RunConfig` (persist/config.py), where each option's help, "
    "allowed values and default are written once; `--help` and this table are made from them. A flag not given keeps "
    "RunConfig's default, or the value of `--profile`'s size profile. In `persist sweep`, an option marked yes: "
    f"{SWEEP_BASE[0].lower()}{SWEEP_BASE[1:]} A grid axis: {SWEEP_AXES[0].lower()}{SWEEP_AXES[1:]}"
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ") if text else "-"


def options_table() -> str:
    """The Markdown page: an intro, then one row per run option."""
    rows = [
        "# Run options",
        "",
        f"<!-- made by {REGENERATE}; do not edit by hand -->",
        "",
        INTRO,
        "",
        "| flag | default | allowed values | what it does | persist sweep |",
        "| --- | --- | --- | --- | --- |",
    ]
    for option in run_options():
        flag = ", ".join(f"`{s}`" for s in option.spellings)
        if option.kind == "bool" and option.field.type == "bool | None":
            flag += f", `--no-{option.flag[2:]}`"
        what = option.meta["help"]
        if "pipeline" in option.meta:
            what += f" ({PIPELINE_GROUPS[option.meta['pipeline']]} only)"
        sweep = (
            f"`{option.axis_flag()}` (a grid axis)" if option.axis_flag() else "yes" if option.meta.get("sweep") else ""
        )
        rows.append(
            f"| {flag} | {_cell(option.default_text())} | {_cell(option.allowed())} | {_cell(what)} | {_cell(sweep)} |"
        )
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(options_table(), end="")
