"""The run options of `persist train` and `persist sweep`, made from RunConfig's field metadata (persist/config.py,
`option`): a field's flag, help, allowed values and default are written there once, and --help, the sweep's flags
and docs/options.md (`options_table`) are made from them. Every parser default is None: "not given", so
RunConfig's default, a profile's or a preset's value stands. `config_from_args` and `sweep_overrides` are the way back
from parsed flags."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, dataclass, fields

from persist.config import PROFILES, ConfigError, PersistError, RunConfig, budget_fields
from persist.registry import Registry
from persist.validation import image_folder_fields, parse_seeds

PIPELINE_GROUPS = {"preloaded": "preloaded pipeline", "torchvision": "torchvision pipeline", "dali": "DALI pipeline"}
SWEEP_BASE = (
    "Each changes one field of the preset's base config, for every run of the grid; unset, the preset's value stands "
    "(persist train --help gives what each does alone)."
)
SWEEP_AXES = (
    "Each replaces one axis of the preset's grid (unset: the preset's); the sweep runs every combination of the axes."
)


def ints_arg(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from error


def words_arg(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _text_parser(parse):
    """`parse` for argparse: its ConfigError becomes argparse's one-line error for the flag."""

    def parse_text(text: str):
        try:
            return parse(text)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from error

    parse_text.__name__ = parse.__name__
    return parse_text


seeds_arg = _text_parser(parse_seeds)  # --seeds of persist sweep and persist stability: one meaning, one parser


@dataclass(frozen=True)
class RunOption:
    """One RunConfig field as a command-line option."""

    field: Field

    @property
    def name(self) -> str:
        return self.field.name

    @property
    def meta(self):
        return self.field.metadata

    @property
    def flag(self) -> str:
        return self.meta.get("flag", "--" + self.name.replace("_", "-"))

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def spellings(self) -> tuple[str, ...]:
        return (self.flag, *self.meta.get("aliases", ()))

    @property
    def kind(self) -> str:
        """The field's type without None: bool, int, float or str."""
        return str(self.field.type).replace(" | None", "")

    @property
    def default(self):
        return self.field.default if self.field.default is not MISSING else None

    def choices(self, described: bool = False) -> str:
        choices = self.meta.get("choices")
        if isinstance(choices, Registry):  # read now, not at import: a plug-in registered later is listed
            return choices.described() if described else choices.choices()
        return ", ".join(choices) if choices else ""

    def allowed(self) -> str:
        if self.choices():
            return self.choices()
        if "allowed" in self.meta:
            return self.meta["allowed"]
        if "at_least" in self.meta:
            return f"integer >= {self.meta['at_least']}"
        return "on/off" if self.kind == "bool" else ""

    def default_text(self) -> str:
        """What happens when the flag is not given, in words ('' for an off switch)."""
        if self.default is None:
            return self.meta.get("none_means", "")
        if self.default is False:
            return ""
        return str(self.default)

    def help(self, with_default: bool = True) -> str:
        text = self.meta["help"]
        if isinstance(self.meta.get("choices"), Registry):
            text += f": {self.choices(described=True)}"
        elif self.choices():
            text += f"; one of: {self.choices()}"
        elif self.kind == "str" and "allowed" in self.meta:
            text += f": {self.meta['allowed']}"
        if with_default and self.default_text():
            text += f" (default{':' if self.default is None else ''} {self.default_text()})"
        return text.replace("%", "%%")

    def arguments(self) -> dict:
        """add_argument's keywords, every default None: not given."""
        if self.kind == "bool":
            boolean = argparse.BooleanOptionalAction if self.field.type == "bool | None" else "store_true"
            return {"action": boolean, "default": None}
        parse = self.meta.get("parse")
        parse = _text_parser(parse) if parse else {"int": int, "float": float}.get(self.kind)
        return {"type": parse, "metavar": self.meta.get("metavar")} if parse else {"metavar": self.meta.get("metavar")}

    def axis_flag(self) -> str | None:
        return self.meta.get("axis")

    def axis_dest(self) -> str:
        return self.axis_flag().lstrip("-").replace("-", "_")

    def axis_help(self) -> str:
        if self.meta.get("axis_parse"):
            text = self.meta["axis_help"]
        else:
            choices = self.choices()
            text = f"comma-separated {self.flag} values" + (f", of: {choices}" if choices else "")
            text += f"; {self.meta['axis_help']}" if "axis_help" in self.meta else ""
        return text.replace("%", "%%")


def run_options() -> list[RunOption]:
    """RunConfig's fields that are command-line options, in field order."""
    return [RunOption(f) for f in fields(RunConfig) if f.metadata.get("cli", True)]


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """`persist train`'s flags, one per RunConfig option, grouped by the pipeline each applies to."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in run_options():
        title = PIPELINE_GROUPS[option.meta["pipeline"]] if "pipeline" in option.meta else "run"
        group = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))
        group.add_argument(*option.spellings, dest=option.dest, help=option.help(), **option.arguments())


def add_sweep_options(parser: argparse.ArgumentParser) -> None:
    """`persist sweep`'s flags from the same metadata: the base config's (`sweep`) and the grid's axes (`axis`)."""
    base = parser.add_argument_group("every run (the preset's base config)", SWEEP_BASE)
    axes = parser.add_argument_group("grid axes", SWEEP_AXES)
    for option in run_options():
        if option.meta.get("sweep"):
            base.add_argument(
                *option.spellings, dest=option.dest, help=option.help(with_default=False), **option.arguments()
            )
    for option in (RunOption(f) for f in fields(RunConfig) if "axis" in f.metadata):
        numbers = option.kind == "int" and "parse" not in option.meta  # K's words (auto:N) are parsed per cell
        parse = ints_arg if numbers else words_arg
        parse = _text_parser(option.meta["axis_parse"]) if "axis_parse" in option.meta else parse
        axes.add_argument(option.axis_flag(), dest=option.axis_dest(), type=parse, help=option.axis_help())


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Profile sizes first, then every flag the user gave; RunConfig validates the result."""
    values = dict(PROFILES[args.profile]) if args.profile in PROFILES else {}
    if args.profile is not None and args.profile not in PROFILES:
        raise PersistError(f"profile={args.profile!r} is not allowed: choose one of {', '.join(PROFILES)}")
    values.update(_given(args, run_options()))
    if values.get("model", RunConfig.model) != RunConfig.model and args.width is None:
        values.pop("width", None)  # a profile's width is the default model's; another model has none
    values.update(budget_fields(args.budget, args.epochs))
    if values.get("dataset") == "imagefolder":  # what is not given trains there; the manifest's config records it
        fields_given = image_folder_fields(values.get("batch_size", RunConfig.batch_size))
        values = {**fields_given, **values}
    if values.get("storage_dir") is not None:
        values.setdefault("storage", "jpeg")  # --storage-dir is encoded storage; an explicit --storage raw is refused
    return RunConfig(**values)


def sweep_overrides(args: argparse.Namespace) -> dict:
    """The keywords of persist.runs.sweep.grid_from_args from `persist sweep`'s flags (None: the preset's)."""
    values = _given(args, [o for o in run_options() if o.meta.get("sweep")])
    values.update(budget_fields(args.budget, args.epochs))
    if values.get("storage_dir") and not values.get("storage"):
        values["storage"] = "jpeg"  # --storage-dir is encoded storage
    for option in (RunOption(f) for f in fields(RunConfig) if "axis" in f.metadata):
        given = getattr(args, option.axis_dest())
        values[option.axis_dest()] = given
    return values


def _given(args: argparse.Namespace, options: list[RunOption]) -> dict:
    """The fields the user gave a flag for; a flag that parses to a dict (K with auto, a budget) sets several."""
    values = {}
    for option in options:
        given = getattr(args, option.dest, None)
        if isinstance(given, dict):
            values.update(given)
        elif given is not None:
            values[option.name] = given
    return values


REGENERATE = (
    "python -c 'from persist.cli.run_options import options_table; print(options_table(), end=\"\")' > docs/options.md"
)
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
