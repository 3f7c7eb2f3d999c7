"""The bench's one reach into pytest-benchmark's internals (bench/pytest_benchmark_compat.py) still works on the
installed pytest-benchmark, and says which attribute is gone when a release drops one."""

import pytest


@pytest.fixture
def compat(bench_import):
    return bench_import("pytest_benchmark_compat")


def test_the_installed_benchmark_fixture_takes_rounds_timed_elsewhere(compat, benchmark):
    assert compat.missing_internals(benchmark) == [], (
        f"pytest-benchmark changed its fixture: {compat.missing_internals(benchmark)} gone; "
        f"bench/pytest_benchmark_compat.py supports {compat.SUPPORTED}"
    )
    compat.record_rounds(benchmark, [0.25, 0.5, 0.75])
    assert benchmark.stats.stats.data == [0.25, 0.5, 0.75] and benchmark.stats["median"] == 0.5


def test_a_fixture_without_an_internal_is_refused_by_name(compat):
    class WithoutMakeStats:
        _mode = None

    with pytest.raises(
        RuntimeError, match=r"benchmark fixture has no _make_stats: .*supports pytest-benchmark>=5.2,<6"
    ):
        compat.record_rounds(WithoutMakeStats(), [1.0])
