"""The persist benchmark suite's hooks and fixtures: its options (bench/options.py), the grid's parametrization,
machine info, an interrupted run's JSON, and the rich summary at the end.

pytest bench --benchmark-json out.json                      # auto: paper sizes on CUDA, smoke sizes on CPU
pytest bench --persist-profile paper --persist-device cuda:1
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from options import PIPELINES, BenchSetup, add_options, setup_of
from persist.config import RunConfig
from persist.data import load_dataset
from persist.data.pipelines.dali_loader import dali_available
from persist.errors import ConfigError
from persist.measure.machine import machine_info as persist_machine_info

TIMED = pytest.StashKey[list]()  # each benchmark with rounds, as pytest-benchmark's fixture left it, in test order


def pytest_addoption(parser):
    add_options(parser)


def pytest_configure(config):
    config.stash[TIMED] = []
    try:
        config.persist_setup = setup_of(config)
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
    return replace(setup.base, pipeline=pipeline, batch_size=batch_size, compute=setup.compute)


@pytest.fixture(autouse=True)
def timed_benchmark(request):
    """Keeps each cell's benchmark (its stats and extra_info) for the summary, once the cell has run."""
    if "benchmark" not in request.fixturenames:
        yield
        return
    benchmark = request.getfixturevalue("benchmark")
    yield
    if benchmark.stats:  # rounds were recorded (none under --benchmark-disable, or in a cell cut off)
        request.config.stash[TIMED].append(benchmark.stats)


@pytest.hookimpl(wrapper=True)
def pytest_benchmark_generate_json(config, benchmarks, include_data, machine_info, commit_info):
    """An interrupted bench (Ctrl-C, or scripts/gpu-check's deadline) still writes its JSON with the finished cells:
    the cell cut off has no round yet, and pytest-benchmark would fail on it and write nothing at all."""
    benchmarks[:] = [b for b in benchmarks if b.stats.data]  # the session's list: update_json sees the same
    return (yield)


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["persist"] = persist_machine_info(config.persist_setup.device)
    machine_info["persist"]["profile"] = config.persist_setup.profile


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    timed = config.stash.get(TIMED, [])
    if not timed:
        return
    import io

    from persist.benchjson.summary import print_summary
    from persist.tables import summary_console

    text = io.StringIO()
    # piped (a CI log), rich would cut the names at 120 columns: summary_console gives it room (persist/tables.py)
    console = summary_console(text, terminalreporter.hasmarkup, config.get_terminal_writer().fullwidth)
    print_summary([b.as_dict(include_data=False) for b in timed], console)
    terminalreporter.write("\n" + text.getvalue())
