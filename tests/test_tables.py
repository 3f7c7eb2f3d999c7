"""Every table persist prints keeps its names whole when piped (a CI log): captured output is not a terminal, so
these read what a pipe would get. A cut name ends in rich's ellipsis, "…"."""

import io
import json

from test_compare import BASE, _write
from test_summary import _cell

from persist.benchjson.summary import print_summary
from persist.cli.main import main
from persist.tables import summary_console, table_console

PIPELINES = ("preloaded", "torchvision", "dali")


def _cells():
    return [_cell(p, m, k, 1.0 + k, 0.1, 0.8, 0.2) for p in PIPELINES for m in (32, 256, 512) for k in (1, 2, 5)]


def test_persist_summary_keeps_names_whole_when_piped(tmp_path, capsys):
    path = tmp_path / "out.json"
    path.write_text(json.dumps({"benchmarks": _cells(), "machine_info": {}}))
    assert main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and all(p in out for p in PIPELINES)


def test_the_bench_summary_keeps_names_whole_in_a_ci_log():
    text = io.StringIO()
    print_summary(_cells(), summary_console(text, terminal=False, terminal_width=80))  # pytest's view of a pipe
    assert "…" not in text.getvalue() and "torchvision" in text.getvalue()


def test_persist_compare_keeps_names_and_verdicts_whole_when_piped(tmp_path, capsys):
    names = [f"bench/bench_train.py::bench_epoch[{p}-m512-K{k}]" for p in PIPELINES for k in (1, 2, 5)]
    base = _write(tmp_path / "base.json", dict.fromkeys(names, BASE))
    fast = _write(tmp_path / "fast.json", {n: [0.5 * t for t in BASE] for n in names})
    assert main(["compare", base, fast]) == 0
    out = capsys.readouterr().out
    assert "…" not in out and "bench_epoch[torchvision-m512-K5]" in out and out.count("improvement") == len(names)


def test_a_table_console_is_wide_only_off_a_terminal():
    assert table_console(file=io.StringIO()).width == 1000
    assert table_console(file=io.StringIO()).is_terminal is False
