"""The command line: `persist train | sweep | report | summary | compare | prepare | stability`."""

from persist.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
