"""bench/bench_scaling.py's torchrun jobs get the bench's storage and augmentation, in flags `persist train` takes."""

import importlib.util
from pathlib import Path

from persist.cli.main import build_parser
from persist.config import RunConfig

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_scaling.py"


def _bench_scaling():
    spec = importlib.util.spec_from_file_location("bench_scaling_under_test", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scaling_jobs_take_the_bench_storage_and_augmentation():
    sizes = {"train_size": 1024, "test_size": 256, "device": "cpu"}  # the bench always sets sizes
    base = RunConfig(storage="jpeg", augment="crop-flip", reuse="reaugment", data_root="/data", **sizes)
    args = _bench_scaling().torchrun_args(base, "dali", 5, "/out")
    flags = {flag: args[i + 1] for i, flag in enumerate(args[:-1]) if flag.startswith("-") and flag != "--quiet"}
    assert (flags["--storage"], flags["--augment"], flags["--reuse"]) == ("jpeg", "crop-flip", "reaugment")
    assert flags["--data-root"] == "/data" and flags["--pipeline"] == "dali" and flags["-K"] == "5"
    parsed = build_parser().parse_args(["train", *args])  # the flags `persist train` actually takes
    assert (parsed.storage, parsed.augment, parsed.reuse, parsed.pipeline) == ("jpeg", "crop-flip", "reaugment", "dali")
    plain = _bench_scaling().torchrun_args(RunConfig(**sizes), "preloaded", 1, "/out")
    assert plain[plain.index("--storage") + 1] == "raw" and plain[plain.index("--augment") + 1] == "none"


def test_a_misspelt_bench_device_is_one_usage_line():
    import subprocess
    import sys

    bench = BENCH.parent
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(bench), "--collect-only", "-q", "--persist-device", "cuda:\u00b2"],
        capture_output=True,
        text=True,
        cwd=bench.parent,
    )
    assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage error, not a traceback
    assert "--persist-device: device='cuda:\u00b2' is not allowed" in done.stderr
    assert "Traceback" not in done.stderr
