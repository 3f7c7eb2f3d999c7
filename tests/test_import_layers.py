"""persist's layers ([tool.importlinter] in pyproject.toml) hold, checked by `lint-imports`: no import runs up a
layer, analysis and benchjson import no training code, and no package's modules import each other in a circle."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> str:
    beside_python = Path(sys.executable).parent / "lint-imports"
    command = str(beside_python) if beside_python.exists() else shutil.which("lint-imports")
    if command is None:
        pytest.skip("lint-imports is not installed: pip install 'persist[dev]' (import-linter)")
    return command


def _run(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the persist under `root`, not an installed one
    return subprocess.run(
        [_lint_imports(), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def test_persist_keeps_its_import_layers():
    done = _run(ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout


def test_an_import_up_a_layer_and_a_circle_break_the_contracts(tmp_path):
    shutil.copytree(ROOT / "persist", tmp_path / "persist", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / "persist" / "errors.py", "a") as up:  # the bottom layer importing the top one
        up.write("\nfrom persist.cli import main  # noqa\n")
    with open(tmp_path / "persist" / "analysis" / "claims.py", "a") as circle:  # report imports claims already
        circle.write("\nfrom persist.analysis import report  # noqa\n")
    done = _run(tmp_path)
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-2000:]
    assert "persist.errors is not allowed to import persist.cli" in done.stdout
    assert "No cycles are allowed in persist.analysis" in done.stdout
