"""The one place the bench reaches into pytest-benchmark's internals: handing it rounds the cell timed itself.

pytest-benchmark has no public way to record durations measured elsewhere (`benchmark(...)` and `pedantic` time the
whole call). A cell that times its own epochs fills the stats pedantic would: the fixture's `_make_stats` (which also
adds them to the session, for the JSON and the summary) and `_mode` (the fixture counts as used, as after pedantic).
These names are pytest-benchmark's own, read in its 5.2.3, 5.3.0 and 5.3.1 sources (fixture.py, BenchmarkFixture);
pyproject.toml pins the range, and tests/test_pytest_benchmark_compat.py fails, naming the attribute, if one changes.
"""

from __future__ import annotations

SUPPORTED = "pytest-benchmark>=5.2,<6"
INTERNALS = ("_make_stats", "_mode")  # what record_rounds uses of BenchmarkFixture beyond its public API


def missing_internals(benchmark) -> list[str]:
    """The INTERNALS this `benchmark` fixture lacks (none on a supported pytest-benchmark)."""
    return [name for name in INTERNALS if not hasattr(benchmark, name)]


def record_rounds(benchmark, durations_s: list[float]) -> None:
    """Record `durations_s` (one per round, 1 iteration each) as `benchmark`'s stats, as pedantic would have."""
    missing = missing_internals(benchmark)
    if missing:
        import pytest_benchmark

        raise RuntimeError(
            f"pytest-benchmark {pytest_benchmark.__version__}'s benchmark fixture has no {', '.join(missing)}: "
            f"bench/pytest_benchmark_compat.py supports {SUPPORTED}"
        )
    benchmark._mode = "benchmark.pedantic(...)"
    stats = benchmark._make_stats(1)
    for duration_s in durations_s:
        stats.update(duration_s)
