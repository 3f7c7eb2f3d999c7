"""Run options are written once, in RunConfig's field metadata: --help, the sweep's flags and docs/options.md."""

import argparse
import re
from dataclasses import fields
from pathlib import Path

import pytest

from persist.cli.main import build_parser
from persist.cli.run_options import REGENERATE, RunOption, config_from_args, options_table, run_options
from persist.config import RunConfig
from persist.runs.sweep import AXIS_OVERRIDES, BASE_OVERRIDES

DOCS = Path(__file__).resolve().parents[1] / "docs" / "options.md"


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


def test_every_option_has_help_and_every_field_is_reached():
    assert len(run_options()) >= 40
    for option in run_options():
        assert option.meta["help"].strip(), option.name
    for f in fields(RunConfig):  # a field without a flag of its own is set through another one
        assert f.metadata.get("help"), f.name
        assert f.metadata.get("cli", True) or f.name in ("adaptive", "budget_sample_steps"), f.name


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_help_lists_each_option_once(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = capsys.readouterr().out
    listing = text.split("\noptions:")[1]  # after the usage line: one entry per option
    spellings = [s for a in _subparser(command)._actions for s in a.option_strings]
    assert len(spellings) == len(set(spellings))
    flags = [o.flag for o in run_options() if command == "train" or o.meta.get("sweep")]
    if command == "sweep":
        flags += [RunOption(f).axis_flag() for f in fields(RunConfig) if "axis" in f.metadata]
    assert "--batch-size" in flags if command == "train" else "--seeds" in flags
    for flag in flags:
        assert len(re.findall(rf"^  {flag}[ ,\n]", listing, re.MULTILINE)) == 1, flag
        assert spellings.count(flag) == 1, flag


def test_parser_defaults_mean_runconfigs():
    train = {a.dest: a for a in _subparser("train")._actions}
    for option in run_options():
        assert train[option.dest].default is None, option.flag  # not given: RunConfig's (or the profile's)
        shown = option.default_text()
        if shown:
            assert f"default{':' if option.default is None else ''} {shown}" in train[option.dest].help
    assert config_from_args(build_parser().parse_args(["train", "--out", "x"])) == RunConfig()
    assert "(default 256)" in train["batch_size"].help and "(default 1000)" in train["eval_batch_size"].help
    sweep = {a.dest: a for a in _subparser("sweep")._actions}
    assert all(sweep[o.dest].default is None for o in run_options() if o.meta.get("sweep"))


def test_the_sweep_takes_the_fields_the_metadata_names():
    axes = {RunOption(f).axis_dest() for f in fields(RunConfig) if "axis" in f.metadata}
    assert axes == set(AXIS_OVERRIDES)
    assert {"dataset", "precision", "budget_s", "budget_sample_steps", "channels_last"} <= set(BASE_OVERRIDES)


def test_sweep_flags_become_grid_overrides():
    from persist.cli.run_options import sweep_overrides

    axes = ["--pipelines", "preloaded", "--batch-sizes", "32,64", "--seeds", "2x", "--persistencies", "1,auto:4"]
    args = build_parser().parse_args(["sweep", "--out", "x", *axes, "--storage-dir", "d", "--budget", "60s"])
    values = sweep_overrides(args)
    assert values["pipelines"] == ["preloaded"] and values["batch_sizes"] == [32, 64]
    assert values["seeds"] == [0, 1] and values["persistencies"] == ["1", "auto:4"]
    assert values["storage"] == "jpeg" and values["budget_s"] == 60.0 and values["epochs"] == 1_000_000
    assert values["schedules"] is None and "dataset" not in values


@pytest.mark.parametrize("command", ["sweep", "stability"])
@pytest.mark.parametrize("text", ["0x", "a", "1,,2", "-1", "1,1", "2.5x"])
def test_bad_seeds_are_one_line_and_exit_2_in_both_commands(command, text, tmp_path, capsys):
    from persist.cli.main import main

    with pytest.raises(SystemExit) as exit:
        main([command, "--out", str(tmp_path / "s"), f"--seeds={text}"])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and f"seeds={text!r} is not allowed" in err and err.count("\n") == 1


@pytest.mark.parametrize("command", ["sweep", "stability"])
def test_seeds_mean_a_list_in_both_commands_and_nx_is_a_count(command):
    def seeds(text):
        return build_parser().parse_args([command, "--out", "x", "--seeds", text]).seeds

    assert seeds("3") == [3]  # one seed, 3: never a count
    assert seeds("0,1,2") == [0, 1, 2] and seeds("3x") == [0, 1, 2] and seeds("1x") == [0]


def test_docs_options_md_is_the_generated_table():
    made = options_table()
    assert "| `--batch-size`, `-m` | 256 | integer >= 1 |" in made
    assert "`--pin-memory`, `--no-pin-memory`" in made and "`--pipelines` (a grid axis)" in made
    assert DOCS.exists() and DOCS.read_text() == made, f"docs/options.md is out of date: run `{REGENERATE}`"
