"""Small-sample statistics, in one place: Student t intervals, a distribution-free interval for a median, the
Mann-Whitney test of `persist compare`, the three verdicts of every ratio check in the bench, and the driver that adds
pairs until a check can decide. The distributions are scipy.stats' (imported on first use).

A timing check on a shared machine must not fail on noise, and must not pass on it either. Each check pairs rounds
(reference and measured, adjacent in time, in ABBA order), takes one ratio per ABBA block (the geometric mean of a
pair run each way round, so slow drift and any effect of going first cancel), and judges the 95% interval of the
median ratio against its bound(s): **pass** when the interval lies
wholly inside, **fail** when it lies wholly outside, **inconclusive** otherwise. The interval of a median comes from
order statistics (the binomial sign-test interval): it assumes nothing about the shape of the noise, and one spike
from another process moves it by one rank. `sequential_pairs` adds pairs until every interval's half-width is below
its check's tolerance or a time cap is spent; it stops on the interval's width, never on its verdict, so the stopping
rule does not pick a lucky run.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

MIN_PAIRS = 6  # the fewest pairs whose median interval (the extremes) reaches 95%: 1 - 2/2^6 = 0.969
EXACT_U_MAX_N = 20  # the Mann-Whitney p-value is exact up to 20 values a side, the normal approximation above


def t_975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (the two-sided 95% interval's factor)."""
    from scipy import stats  # lazy: scipy.stats costs a few hundred ms, and most readers of persist never need it

    return float(stats.t.ppf(0.975, df))


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student t interval; half-width NaN for one value, both NaN for none."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    if len(values) == 1:
        return values[0], math.nan
    return statistics.fmean(values), t_975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def mean_interval(values: Sequence[float]) -> tuple[float, float]:
    """(low, high) of the mean's 95% Student t interval; (mean, mean) for a single value."""
    mean, half = mean_ci(values)
    half = 0.0 if math.isnan(half) else half
    return mean - half, mean + half


def median_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(median, low, high): the distribution-free interval [x_(j), x_(n+1-j)] with the largest j whose coverage
    1 - 2 P(Binomial(n, 1/2) < j) is at least `confidence`. Needs MIN_PAIRS values for 95%."""
    from scipy import stats

    xs = sorted(values)
    n = len(xs)
    if n == 0:
        raise ValueError("median_ci needs at least one value")
    median = statistics.median(xs)
    # the coverage of j = 1 .. n//2, which falls as j grows: j is how many of them reach `confidence`
    coverage = 1 - 2 * stats.binom.cdf(range(n // 2), n, 0.5)
    j = int((coverage >= confidence).sum())
    if j == 0:  # too few values for this confidence: the interval is unbounded
        return median, -math.inf, math.inf
    return median, xs[j - 1], xs[n - j]


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the Mann-Whitney U test: exact up to EXACT_U_MAX_N values a side, the normal
    approximation (with continuity and tie corrections) above."""
    from scipy import stats

    exact = len(a) <= EXACT_U_MAX_N and len(b) <= EXACT_U_MAX_N
    method = "exact" if exact else "asymptotic"
    return float(stats.mannwhitneyu(a, b, alternative="two-sided", method=method).pvalue)


VERDICTS = ("pass", "inconclusive", "fail")


def verdict_of(ci_low: float, ci_high: float, low_bound: float | None, high_bound: float | None) -> str:
    """pass: the whole interval inside the bound(s); fail: the whole interval outside one; inconclusive otherwise."""
    if (low_bound is not None and ci_high < low_bound) or (high_bound is not None and ci_low > high_bound):
        return "fail"
    if (low_bound is None or ci_low >= low_bound) and (high_bound is None or ci_high <= high_bound):
        return "pass"
    return "inconclusive"


@dataclass(frozen=True)
class RatioCheck:
    """A ratio measured over paired rounds, its 95% interval, the bound(s) it is held to, and how the pairs ended."""

    name: str
    ratio: float  # the median over pairs
    ci_low: float
    ci_high: float
    pairs: int
    low_bound: float | None  # passes when ci_low >= low_bound, fails when ci_high < low_bound
    high_bound: float | None  # passes when ci_high <= high_bound, fails when ci_low > high_bound
    tolerance: float | None = None  # the half-width the pairs aimed for (the margin the bound allows)
    stopped: str | None = None  # why the pairs ended: narrow | cap | max-pairs (None: a fixed number of pairs)
    cap_s: float | None = None  # the time cap on the pairs
    spent_s: float | None = None  # the time the pairs took

    @property
    def verdict(self) -> str:
        return verdict_of(self.ci_low, self.ci_high, self.low_bound, self.high_bound)

    @property
    def failed(self) -> bool:
        return self.verdict == "fail"

    @property
    def half_width(self) -> float:
        return (self.ci_high - self.ci_low) / 2

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "verdict": self.verdict,
            "failed": self.failed,  # kept for readers of files written before the three verdicts
            "half_width": self.half_width,
            "method": "median over ABBA blocks (geometric mean of a block's two pair ratios), sign-test 95% interval",
        }

    def message(self) -> str:
        spent = "" if self.stopped is None else f", stopped: {self.stopped}"
        aim = "" if self.tolerance is None else f", half-width {self.half_width:.3f} (aim {self.tolerance:g}{spent})"
        return (
            f"{self.name}: {self.verdict}: ratio {self.ratio:.3f}, 95% interval [{self.ci_low:.3f}, "
            f"{self.ci_high:.3f}] over {self.pairs} paired rounds{aim}; needs "
            f"{bound_text(self.low_bound, self.high_bound)} (passes when the whole interval meets it, fails when the "
            "whole interval misses it)"
        )


def bound_text(low: float | None, high: float | None) -> str:
    parts = [] if low is None else [f">= {low:g}"]
    return " and ".join(parts + ([] if high is None else [f"<= {high:g}"]))


def ratio_check(
    name: str,
    ratios: Sequence[float],
    low_bound: float | None = None,
    high_bound: float | None = None,
    *,
    pairs: int | None = None,
    **how: float | str | None,
) -> RatioCheck:
    """The check of `ratios` (one per pair, or per ABBA block with `pairs` the pairs behind them); `how` takes
    RatioCheck's tolerance, stopped, cap_s and spent_s."""
    if len(ratios) < MIN_PAIRS:
        raise ValueError(f"{name}: {len(ratios)} paired rounds give no 95% interval; use at least {MIN_PAIRS}")
    median, low, high = median_ci(ratios)
    return RatioCheck(name, median, low, high, pairs or len(ratios), low_bound, high_bound, **how)


def block_ratios(pair_ratios: Sequence[float]) -> list[float]:
    """One ratio per ABBA block (pairs 2i and 2i+1, run in opposite orders): the geometric mean of its two pairs'
    ratios. Whatever going first or second multiplies a round by cancels exactly in it."""
    return [math.sqrt(a * b) for a, b in zip(pair_ratios[0::2], pair_ratios[1::2], strict=False)]


@dataclass(frozen=True)
class Pairs:
    """What `sequential_pairs` measured: one reference and one measured result per pair, the ratios taken from each
    pair (one tuple per pair, one entry per check), and why it stopped."""

    references: list
    measured: list
    ratios: list[tuple[float, ...]]
    tolerances: tuple[float, ...]
    stopped: str  # narrow | cap | max-pairs
    cap_s: float
    spent_s: float

    def blocks(self, index: int) -> list[float]:
        return block_ratios([r[index] for r in self.ratios])

    def check(self, index: int, name: str, low_bound: float | None = None, high_bound: float | None = None):
        """The ratio check of entry `index` of the pairs' ratios: its median and interval over ABBA blocks."""
        return ratio_check(
            name,
            self.blocks(index),
            low_bound,
            high_bound,
            pairs=len(self.ratios),
            tolerance=self.tolerances[index],
            stopped=self.stopped,
            cap_s=self.cap_s,
            spent_s=self.spent_s,
        )


DEFAULT_MIN_PAIRS = 2 * MIN_PAIRS  # 6 ABBA blocks: the fewest with a 95% interval of their median


def sequential_pairs(
    reference: Callable[[], object],
    measured: Callable[[], object],
    ratios_of: Callable[[object, object], Sequence[float]],
    tolerances: Sequence[float],
    cap_s: float,
    *,
    before_pair: Callable[[], None] | None = None,
    min_pairs: int = DEFAULT_MIN_PAIRS,
    max_pairs: int = 400,
    now: Callable[[], float] = time.perf_counter,
) -> Pairs:
    """Run pairs in ABBA order (reference, measured; measured, reference; ...) until every check's 95% interval has a
    half-width below its tolerance, or `cap_s` seconds are spent, or `max_pairs` pairs are run; at least `min_pairs`,
    and only whole ABBA blocks (two pairs, one each way round), the unit each check's interval is taken over.

    `reference()` and `measured()` each run one round and return what it measured (seconds, or a round's stats);
    `ratios_of(reference_result, measured_result)` turns a pair into one ratio per check. `before_pair()`, when
    given, runs before each pair (a fresh pipeline and its warm-up, say); its time counts against the cap. Alternating
    the order cancels what comes from going first or second (a warm cache, a thread that has not yet started)."""
    if min_pairs < DEFAULT_MIN_PAIRS:
        raise ValueError(
            f"min_pairs={min_pairs} is not allowed: a 95% interval needs {MIN_PAIRS} ABBA blocks, {DEFAULT_MIN_PAIRS} "
            "pairs"
        )
    start = now()
    references, measures, ratios = [], [], []
    stopped = "max-pairs"
    while len(ratios) < max_pairs:
        if before_pair is not None:
            before_pair()
        if len(ratios) % 2 == 0:
            ref = reference()
            ours = measured()
        else:
            ours = measured()
            ref = reference()
        references.append(ref)
        measures.append(ours)
        ratios.append(tuple(ratios_of(ref, ours)))
        if len(ratios) < min_pairs or len(ratios) % 2:  # stop only after whole ABBA blocks
            continue
        if all(_half_width(block_ratios([r[i] for r in ratios])) < tol for i, tol in enumerate(tolerances)):
            stopped = "narrow"
            break
        if now() - start >= cap_s:
            stopped = "cap"
            break
    return Pairs(references, measures, ratios, tuple(tolerances), stopped, cap_s, now() - start)


def _half_width(values: Sequence[float]) -> float:
    _, low, high = median_ci(values)
    return (high - low) / 2
