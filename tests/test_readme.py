"""README's Python examples run as written, and its layout section names every package and module of the tree."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


@pytest.mark.slow
def test_the_api_examples_run_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # they write runs/... under the working folder
    from persist.registry import LR_SCHEDULES, MODELS

    monkeypatch.setattr(MODELS, "entries", dict(MODELS.entries))  # the examples register names: undo it after
    monkeypatch.setattr(LR_SCHEDULES, "entries", dict(LR_SCHEDULES.entries))
    blocks = re.findall(r"```python\n(.*?)```", _section("Python API and plug-ins"), re.S)
    assert len(blocks) == 2
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    for run in ("api-resnet18", "api-tiny"):
        assert (tmp_path / "runs" / run / "epochs.jsonl").read_text().count("\n") == 1


def test_the_layout_section_names_every_module():
    layout = _section("Layout")
    package = README.parent / "persist"
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        name = f"{relative.parent.name}/" if relative.name == "__init__.py" and relative.parent != Path(".") else ""
        name = name or relative.name  # a package by its folder, a module by its file name
        assert name in layout, f"README's layout does not name persist/{relative}"
