"""The persist benchmark suite: options, the grid's sizes, machine info, and the rich summary at the end.

pytest bench --benchmark-json out.json                      # auto: paper sizes on CUDA, smoke sizes on CPU
pytest bench --persist-profile paper --persist-device cuda:1
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
import torch

from persist.config import PROFILES, RunConfig
from persist.data import load_dataset
from persist.data.pipelines.dali_loader import dali_available
from persist.errors import ConfigError
from persist.measure.machine import machine_info as persist_machine_info
from persist.training.device import resolve_device

BATCH_SIZES = {"smoke": (32, 256), "paper": (32, 256, 512)}
PERSISTENCIES = (1, 2, 5, "auto")  # auto: --persistency auto (cap 8), its K chosen by the loader's timing
PIPELINES = ("preloaded", "torchvision", "dali")
# pipeline-only cells need more loads per epoch than the smoke training set gives
PIPELINE_ONLY_SAMPLES = {"smoke": 8192, "paper": 50_000}
# Time caps (s) on each ratio check's pairs (persist.stats.sequential_pairs): a check adds pairs until its interval is
# narrower than its tolerance or its cap is spent (then checked after each whole ABBA block, at least 12 pairs).
# The smoke caps keep `make bench` under 10 minutes on a busy 2-core CPU; a check still wide at its cap is
# inconclusive, and says so.
CHECK_CAP_S = {
    "smoke": {
        "vs_reference": 30.0,
        "planted_slowdown": 20.0,
        "clock_overhead": 10.0,
        "planted_delay": 30.0,
        "auto_overhead": 20.0,
        "whatif": 30.0,
    },
    "paper": {
        "vs_reference": 120.0,
        "planted_slowdown": 60.0,
        "clock_overhead": 30.0,
        "planted_delay": 120.0,
        "auto_overhead": 60.0,
        "whatif": 60.0,
    },
}


def pytest_addoption(parser):
    group = parser.getgroup("persist")
    group.addoption(
        "--persist-profile",
        default="auto",
        choices=("auto", "smoke", "paper"),
        help="sizes: paper on CUDA and smoke on CPU when auto",
    )
    group.addoption("--persist-device", default="auto", help="auto | cpu | cuda | cuda:N")
    group.addoption("--persist-dataset", default="synthetic", help="synthetic | cifar10 | digits")
    group.addoption("--persist-data-root", default=None, help="folder holding cifar-10-batches-py")
    group.addoption(
        "--persist-workload",
        default="all",
        choices=("all", "paper", "imagenet"),
        help="paper: the paper's grid (32 px, reduced AlexNet); imagenet: ResNet-50 at 224 px from an image folder "
        "(bench_imagenet.py; a smoke version on a CPU); all (default): both",
    )
    group.addoption("--persist-rounds", type=int, default=3, help="timed rounds per cell, after 1 warm-up round")
    group.addoption(
        "--persist-storage",
        default="raw",
        choices=("raw", "jpeg"),
        help="raw arrays (default) | jpeg: files under the data root, read and decoded by every pipeline",
    )
    group.addoption(
        "--persist-storage-dir",
        default=None,
        help="read a folder that persist prepare --out wrote (implies --persist-storage jpeg)",
    )
    group.addoption(
        "--persist-augment",
        default="none",
        choices=("none", "crop-flip", "crop-flip-reaugment"),
        help="none (default) | crop-flip in every pipeline | crop-flip-reaugment: a fresh crop-flip per use, on the "
        "device (training cells; the checks against hand-written loops stay unaugmented)",
    )
    group.addoption(
        "--persist-strict",
        action="store_true",
        help="an inconclusive ratio check fails its cell too (for quiet CI machines); by default only a failed one",
    )
    group.addoption(
        "--persist-train-size",
        type=int,
        default=None,
        help="cut the training set to N images (e.g. the paper profile's full-width cells on a CPU)",
    )


@dataclass(frozen=True)
class BenchSetup:
    profile: str
    device: torch.device
    base: RunConfig  # the profile's sizes on the chosen device and dataset
    batch_sizes: tuple[int, ...]
    rounds: int
    skip_reason: str | None = None  # set when the requested device does not exist here
    strict: bool = False  # --persist-strict: an inconclusive check fails its cell


def _setup(config) -> BenchSetup:
    requested, skip_reason = config.getoption("--persist-device"), None
    try:
        device = resolve_device(requested)
    except ConfigError as error:  # a GPU asked for on a machine without it: skip every cell, never fake one
        device, skip_reason = torch.device("cpu"), f"--persist-device {requested}: {error}"
    profile = config.getoption("--persist-profile")
    if profile == "auto":
        profile = "paper" if device.type == "cuda" else "smoke"
    sizes = {k: v for k, v in PROFILES[profile].items() if k != "epochs"}
    train_size = config.getoption("--persist-train-size")
    if train_size is not None:
        if train_size < max(BATCH_SIZES[profile]):
            raise pytest.UsageError(
                f"--persist-train-size={train_size} is not allowed: the {profile} profile needs at least "
                f"{max(BATCH_SIZES[profile])} images (its largest m)"
            )
        sizes["train_size"] = train_size
    base = RunConfig(
        dataset=config.getoption("--persist-dataset"),
        data_root=config.getoption("--persist-data-root"),
        storage="jpeg" if config.getoption("--persist-storage-dir") else config.getoption("--persist-storage"),
        storage_dir=config.getoption("--persist-storage-dir"),
        augment="none" if config.getoption("--persist-augment") == "none" else "crop-flip",
        reuse="reaugment" if config.getoption("--persist-augment") == "crop-flip-reaugment" else "same",
        device=str(device),
        **sizes,
    )
    rounds = config.getoption("--persist-rounds")
    if rounds < 1:
        raise pytest.UsageError(f"--persist-rounds={rounds} is not allowed: use 1 or more timed rounds")
    strict = config.getoption("--persist-strict")
    return BenchSetup(profile, device, base, BATCH_SIZES[profile], rounds, skip_reason, strict)


def pytest_configure(config):
    try:
        config.persist_setup = _setup(config)
    except ConfigError as error:  # a bad --persist-dataset, say: one line, not a traceback
        raise pytest.UsageError(str(error)) from error


def pytest_collection_modifyitems(config, items):
    workload = config.getoption("--persist-workload")
    if workload != "all":  # bench_imagenet.py holds the imagenet workload; every other file the paper's
        chosen = [item for item in items if (item.module.__name__ == "bench_imagenet") == (workload == "imagenet")]
        config.hook.pytest_deselected(items=[item for item in items if item not in chosen])
        items[:] = chosen
    reason = config.persist_setup.skip_reason
    if reason:
        for item in items:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_generate_tests(metafunc):
    """The grid: pipeline x m x K, with m from the profile (smoke keeps every pipeline and every K)."""
    setup = metafunc.config.persist_setup
    if "batch_size" in metafunc.fixturenames:
        metafunc.parametrize("batch_size", setup.batch_sizes, ids=[f"m{m}" for m in setup.batch_sizes])


@pytest.fixture(scope="session")
def setup(pytestconfig) -> BenchSetup:
    return pytestconfig.persist_setup


@pytest.fixture(scope="session")
def bench_data(setup):
    return load_dataset(setup.base)


@pytest.fixture(params=PIPELINES)
def pipeline(request):
    if request.param == "dali":  # by hand, not importorskip: a broken DALI (not ModuleNotFoundError) must skip too
        ok, why = dali_available()
        if not ok:
            pytest.skip(why)
    return request.param


@pytest.fixture
def cell_config(setup, pipeline, batch_size) -> RunConfig:
    return replace(setup.base, pipeline=pipeline, batch_size=batch_size)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """An interrupted bench (Ctrl-C, or scripts/gpu-check's deadline) still writes its JSON with the finished cells:
    the cell cut off has no round yet, and pytest-benchmark would fail on it and write nothing at all."""
    benchmarks = getattr(getattr(session.config, "_benchmarksession", None), "benchmarks", None)
    if benchmarks:
        benchmarks[:] = [b for b in benchmarks if b.stats.data]
    yield


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["persist"] = persist_machine_info(config.persist_setup.device)
    machine_info["persist"]["profile"] = config.persist_setup.profile


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)  # pytest-benchmark keeps its results here
    if session is None or not session.benchmarks:
        return
    import io

    from persist.benchjson.summary import print_summary
    from persist.tables import summary_console

    text = io.StringIO()
    # piped (a CI log), rich would cut the names at 120 columns: summary_console gives it room (persist/tables.py)
    console = summary_console(text, terminalreporter.hasmarkup, terminalreporter._tw.fullwidth)
    print_summary([b.as_dict(include_data=False) for b in session.benchmarks], console)
    terminalreporter.write("\n" + text.getvalue())
