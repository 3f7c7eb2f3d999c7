"""Small-sample statistics, in one place: Student t intervals, a distribution-free interval for a median, and the
significance rule of every ratio check in the bench.

A timing check on a shared machine must not fail on noise. Each check pairs rounds (reference, then ours, adjacent in
time, so slow drift cancels), takes one ratio per pair, and fails only when the 95% interval of the median ratio lies
wholly on the wrong side of its bound. The interval of a median comes from order statistics (the binomial sign-test
interval): it assumes nothing about the shape of the noise, and one spike from another process moves it by one rank.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

# two-sided 97.5% Student-t quantiles by degrees of freedom (1..30); 1.96 beyond
T_975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)
MIN_PAIRS = 6  # the fewest pairs whose median interval (the extremes) reaches 95%: 1 - 2/2^6 = 0.969


def t_975(df: int) -> float:
    return T_975[df - 1] if df <= len(T_975) else 1.96


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student t interval; half-width NaN for one value, both NaN for none."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    if len(values) == 1:
        return values[0], math.nan
    return statistics.fmean(values), t_975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def median_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(median, low, high): the distribution-free interval [x_(j), x_(n+1-j)] with the largest j whose coverage
    1 - 2 P(Binomial(n, 1/2) < j) is at least `confidence`. Needs MIN_PAIRS values for 95%."""
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        raise ValueError("median_ci needs at least one value")
    median = statistics.median(xs)
    j, tail = 0, 0.0  # tail = P(Binomial(n, 1/2) <= j - 1)
    while j + 1 <= n // 2:
        next_tail = tail + math.comb(n, j) / 2**n
        if 1 - 2 * next_tail < confidence:
            break
        j, tail = j + 1, next_tail
    if j == 0:  # too few values for this confidence: the interval is unbounded
        return median, -math.inf, math.inf
    return median, xs[j - 1], xs[n - j]


@dataclass(frozen=True)
class RatioCheck:
    """A ratio measured over paired rounds, its 95% interval, and the bound it is held to."""

    name: str
    ratio: float  # the median over pairs
    ci_low: float
    ci_high: float
    pairs: int
    low_bound: float | None  # fails only when ci_high < low_bound
    high_bound: float | None  # fails only when ci_low > high_bound

    @property
    def failed(self) -> bool:
        below = self.low_bound is not None and self.ci_high < self.low_bound
        above = self.high_bound is not None and self.ci_low > self.high_bound
        return below or above

    def as_dict(self) -> dict:
        return {**asdict(self), "failed": self.failed, "method": "median of paired rounds, sign-test 95% interval"}

    def message(self) -> str:
        return (
            f"{self.name}: ratio {self.ratio:.3f}, 95% interval [{self.ci_low:.3f}, {self.ci_high:.3f}] over "
            f"{self.pairs} paired rounds; needs {bound_text(self.low_bound, self.high_bound)} "
            "(fails only when the whole interval misses it)"
        )


def bound_text(low: float | None, high: float | None) -> str:
    parts = [] if low is None else [f">= {low:g}"]
    return " and ".join(parts + ([] if high is None else [f"<= {high:g}"]))


def ratio_check(
    name: str, ratios: Sequence[float], low_bound: float | None = None, high_bound: float | None = None
) -> RatioCheck:
    if len(ratios) < MIN_PAIRS:
        raise ValueError(f"{name}: {len(ratios)} paired rounds give no 95% interval; use at least {MIN_PAIRS}")
    median, low, high = median_ci(ratios)
    return RatioCheck(name, median, low, high, len(ratios), low_bound, high_bound)
