"""Consoles for persist's tables, so that names stay whole when output is piped.

On a terminal rich fits a table to the window. Piped (a CI log, a file, `| less`), rich assumes 80 columns and cuts
every column that does not fit ("predict…", "bench_ep…"); there it gets PIPED_WIDTH columns instead, so a table takes
its natural width. Tables are not expanded, so nothing is padded out to that width.
"""

from __future__ import annotations

from typing import IO

from rich.console import Console

PIPED_WIDTH = 1000


def table_console(file: IO[str] | None = None, stderr: bool = False) -> Console:
    """A rich Console for tables: the terminal's width on a terminal, PIPED_WIDTH columns otherwise."""
    console = Console(file=file, stderr=stderr)
    return console if console.is_terminal else Console(file=file, stderr=stderr, width=PIPED_WIDTH)


def summary_console(file: IO[str], terminal: bool, terminal_width: int) -> Console:
    """The bench summary's console (bench/conftest.py writes it through pytest's terminal writer): at least 120
    columns on a terminal, PIPED_WIDTH when pytest's output is not one."""
    width = max(120, terminal_width) if terminal else PIPED_WIDTH
    return Console(file=file, width=width, force_terminal=terminal)
