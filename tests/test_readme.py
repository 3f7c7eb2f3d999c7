"""README and docs/ hold to the tree: their Python examples run as written, docs/architecture.md names every module,
every relative link resolves, the README stays short, and mkdocs builds the site."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
REPORTS = sorted((ROOT / "reports").rglob("*.md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _python_blocks(path: Path) -> list[str]:
    """The ```python blocks of a page: each runs as written (a ```py block is an excerpt and is not run)."""
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


@pytest.mark.slow
def test_the_python_examples_run_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # they write runs/... under the working folder
    from persist.registry import LR_SCHEDULES, MODELS

    monkeypatch.setattr(MODELS, "entries", dict(MODELS.entries))  # the examples register names: undo it after
    monkeypatch.setattr(LR_SCHEDULES, "entries", dict(LR_SCHEDULES.entries))
    from persist.compute import COMPUTE_PROFILES

    monkeypatch.setattr(COMPUTE_PROFILES, "entries", dict(COMPUTE_PROFILES.entries))  # docs/emulated.md registers one
    ran = 0
    for page in [README, *DOCS]:
        for code in _python_blocks(page):
            exec(compile(code, str(page.relative_to(ROOT)), "exec"), {})
            ran += 1
    assert len(_python_blocks(ROOT / "docs" / "api.md")) == 2
    assert ran >= 2
    for run in ("api-resnet18", "api-tiny"):
        assert (tmp_path / "runs" / run / "epochs.jsonl").read_text().count("\n") == 1


def test_the_readme_loop_diff_is_python_after_it_is_applied():
    diff = re.search(r"```diff\n(.*?)```", README.read_text(), re.S)
    assert diff, "README shows the Meter loop as a diff"
    after = "\n".join(line[1:] for line in diff.group(1).splitlines() if line[:1] in "+ ")
    compile(after, "README.md (the loop after the diff)", "exec")
    assert "persist.Meter(" in after and "meter.step(" in after and "persist.reuse(" in after


def test_the_architecture_page_names_every_module():
    page = (ROOT / "docs" / "architecture.md").read_text()
    package = ROOT / "persist"
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(ROOT)
        is_package = path.name == "__init__.py" and path.parent != package
        name = f"{relative.parent.as_posix()}/" if is_package else relative.as_posix()
        assert f"`{name}`" in page, f"docs/architecture.md does not name {name}"


def test_the_readme_is_short():
    lines = README.read_text().count("\n")
    assert lines <= 220, f"README.md has {lines} lines; the reference belongs in docs/"


def _slugs(page: Path) -> set[str]:
    """The anchors mkdocs (and GitHub) give a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    slugs = set()
    for heading in re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", page.read_text(), flags=re.S), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "")).strip().lower()
        slugs.add(re.sub(r"[ ]+", "-", slug))
    return slugs


@pytest.mark.parametrize("page", [README, *DOCS, *REPORTS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # links inside code blocks are not links
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto: leave the repository
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"
        assert ROOT in resolved.parents, f"{page.relative_to(ROOT)} links outside the repository: {target}"
        if anchor and resolved.suffix == ".md":
            assert anchor in _slugs(resolved), f"{page.relative_to(ROOT)} links to a missing anchor: {target}"


def test_the_docs_build_with_mkdocs(tmp_path):
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    if not Path(mkdocs).exists():
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    done = subprocess.run(
        [mkdocs, "build", "--strict", "-q", "-d", str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "index.html").exists()


FIRST_COMMAND_PAGES = [README, ROOT / "docs" / "training-runs.md"]


def _train_commands(page: Path) -> list[tuple[str, str]]:
    """Each `persist train` command of a page's bash blocks (continuation lines joined), with the comment above it."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
        comment = ""
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("#"):
                comment = line
            elif line.startswith("persist train "):
                commands.append((" ".join(line.split()), comment))
    return commands


@pytest.mark.parametrize("page", FIRST_COMMAND_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_first_train_command_is_the_smoke_profile_and_paper_sizes_say_gpu(page):
    commands = _train_commands(page)
    first, comment = commands[0]
    assert "--profile smoke" in first and "--device cpu" in first, f"{page.name} starts with {first}"
    assert "a minute" in comment
    paper = [(c, note) for c, note in commands if "--profile paper" in c or "--epochs 100" in c]
    assert paper and all("GPU" in note for _, note in paper), "the paper-size command is labelled as for a GPU"
