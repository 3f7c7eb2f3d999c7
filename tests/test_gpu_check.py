"""scripts/gpu-check: its dry run (every stage at tiny sizes on the CPU, in at most 8 files), and that one stage's
failure or hang leaves the others' results."""

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu-check"
STAGES = ["preflight", "tests", "sync-audit", "bench", "determinism", "imagenet"]


def _module(name: str, path: Path):
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    sys.modules[name] = module  # dataclasses look their module up while it runs
    try:
        loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def _script():
    return _module("gpu_check", SCRIPT)


@pytest.mark.slow
def test_the_dry_run_runs_every_stage_into_at_most_eight_files(tmp_path):
    out = tmp_path / "check"
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), "--dry-run"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = [p.relative_to(out) for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(len(p.parts) <= 3 for p in files), files  # at most two folders down
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mode"] == "dry run (CPU)" and list(summary["stages"]) == STAGES
    statuses = {name: stage["status"] for name, stage in summary["stages"].items()}
    assert statuses == dict.fromkeys(STAGES, "passed")
    assert all(stage["wall_s"] >= 0 and stage["note"] for stage in summary["stages"].values())
    preflight = json.loads((out / "preflight.json").read_text())
    assert "cudnn_benchmark" in preflight["machine"]["math"] and preflight["nvml"]["available"] is False
    audit = json.loads((out / "sync-audit.json").read_text())
    assert audit["preloaded crop-flip"]["epochs"][0]["reason"] == "no CUDA: sync debug mode not available"
    assert audit["tf32, compile"]["note"].startswith("skipped in a dry run")
    assert all(audit[name]["note"] == "ran 1 epoch(s)" for name in ("fp16", "auto:8", "image folder, preloaded"))
    bench = json.loads((out / "out.json").read_text())
    assert [b["name"] for b in bench["benchmarks"]] == ["bench_epoch[preloaded-m32-K1]"]
    assert "1 passed" in (out / "bench.txt").read_text() and " passed" in (out / "tests.txt").read_text()
    assert json.loads((out / "determinism.json").read_text())["ratio_with_over_without"]["m32"] > 0
    imagenet = json.loads((out / "imagenet.json").read_text())["pipelines"]
    assert all(0 < imagenet[p]["au"] <= 1.01 for p in ("preloaded", "torchvision")), imagenet


def test_a_failing_stage_leaves_the_others_and_the_summary(tmp_path, monkeypatch):
    gpu_check = _script()
    ran = []

    def run_stage(stage, out, cuda, timeout_s, env):
        ran.append(stage)
        if stage == "tests":
            raise RuntimeError("pytest vanished")
        return {"status": "passed", "note": "ok", "wall_s": 0.0}

    monkeypatch.setattr(gpu_check, "run_stage", run_stage)
    assert gpu_check.main([str(tmp_path), "--dry-run"]) == 1
    assert ran == STAGES
    stages = json.loads((tmp_path / "summary.json").read_text())["stages"]
    assert stages["tests"] == {"status": "failed", "note": "gpu-check: RuntimeError: pytest vanished"}
    assert stages["bench"]["status"] == "passed"


def test_a_stage_past_its_deadline_is_interrupted(tmp_path):
    gpu_check = _script()
    hang = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]
    rc, output = gpu_check.run_process(hang, 2.0, {}, subprocess.PIPE)
    assert rc is None and output.startswith("started")


def test_an_interrupted_bench_still_writes_its_finished_cells(bench_import):
    """At gpu-check's deadline the bench gets SIGINT; the cell cut off has no round, and would stop pytest-benchmark
    from writing out.json at all."""
    bench_conftest = _module("bench_conftest", SCRIPT.parents[1] / "bench" / "conftest.py")  # imports bench/options
    finished, cut_off = (SimpleNamespace(stats=SimpleNamespace(data=data)) for data in ([1.5], []))
    benchmarks = [finished, cut_off]  # the session's list, as pytest-benchmark passes it to the hook
    hook = bench_conftest.pytest_benchmark_generate_json(None, benchmarks, True, {}, {})
    next(hook)  # the wrapper's part before pytest-benchmark's own generate_json
    assert benchmarks == [finished]


def test_a_stage_passes_when_its_result_line_is_followed_by_other_output(tmp_path, monkeypatch):
    gpu_check = _script()
    child = 'import sys; print(\'RESULT {"status": "passed", "note": "ok"}\'); print(\'exit warning\', file=sys.stderr)'
    monkeypatch.setattr(gpu_check, "stage_command", lambda stage, out, cuda: ([sys.executable, "-c", child], None))
    result = gpu_check.run_stage("preflight", tmp_path, False, 30, {})
    assert result["status"] == "passed" and result["note"] == "ok"
    assert gpu_check.result_line("noise\nmore noise") is None


def test_a_relative_out_is_resolved_before_any_stage(tmp_path, monkeypatch):
    gpu_check = _script()
    seen = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(
        gpu_check, "run_stage", lambda stage, out, *_: seen.append(out) or {"status": "passed", "note": ""}
    )
    assert gpu_check.main(["relative/check", "--dry-run"]) == 0
    assert set(seen) == {tmp_path / "relative" / "check"} and all(out.is_absolute() for out in seen)


def test_the_default_budget_fits_every_stage_and_leaves_a_short_slot_room_for_a_rerun():
    gpu_check = _script()
    assert sum(gpu_check.TIMEOUT_S.values()) <= gpu_check.DEFAULT_BUDGET_S <= 300
    assert {"fp16", "auto:8", "tf32, compile", "image folder, preloaded"} <= set(gpu_check.AUDIT)


def test_preflight_reports_the_compiler_headers_and_shared_memory():
    gpu_check = _script()
    tools, shm = gpu_check.toolchain(), gpu_check.shared_memory()
    assert set(tools) >= {"c_compiler", "python_h", "python_h_exists", "can_compile"}
    assert shm.get("total_bytes", 1) > 0
