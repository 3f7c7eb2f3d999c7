"""The statistics behind every ratio check: a median interval that needs no noise model, and the failure rule."""

import math
import random
import statistics

import pytest

from persist.stats import (
    MIN_PAIRS,
    mann_whitney_p,
    mean_ci,
    mean_interval,
    median_ci,
    ratio_check,
    sequential_pairs,
    t_975,
    verdict_of,
)


def test_median_interval_uses_the_sign_test_order_statistics():
    # n=9: j=2 keeps coverage 1 - 2*P(Bin(9, 1/2) <= 1) = 0.961 >= 0.95; j=3 would give 0.820
    values = [9, 1, 8, 2, 7, 3, 6, 4, 5]
    assert median_ci(values) == (5, 2, 8)
    # n=6 is the fewest with a 95% interval: the extremes, coverage 1 - 2/64
    assert median_ci([1, 2, 3, 4, 5, 6]) == (3.5, 1, 6)
    median, low, high = median_ci([1, 2, 3, 4, 5])
    assert median == 3 and low == -math.inf and high == math.inf


def test_median_interval_covers_the_true_median_at_least_95_percent_of_the_time():
    rng = random.Random(1)
    covered = 0
    for _ in range(2000):
        sample = [rng.lognormvariate(0, 0.5) for _ in range(9)]  # skewed noise, true median 1.0
        _, low, high = median_ci(sample)
        covered += low <= 1.0 <= high
    assert covered / 2000 >= 0.94


def test_a_ratio_check_passes_fails_or_is_inconclusive_by_where_the_whole_interval_lies():
    noisy = [0.90, 0.95, 0.97, 0.99, 1.00, 1.01, 1.02, 1.03, 1.10]  # median 1.00, interval [0.95, 1.03]
    assert ratio_check("noisy", noisy, low_bound=0.98).verdict == "inconclusive"  # straddles 0.98
    assert ratio_check("noisy", noisy, low_bound=0.95).verdict == "pass"  # wholly at or above
    assert ratio_check("noisy", noisy, low_bound=1.02).verdict == "inconclusive"  # median below, interval reaches it
    short = [r - 0.10 for r in noisy]  # interval [0.85, 0.93]: wholly below 0.98
    check = ratio_check("short", short, low_bound=0.98)
    assert check.verdict == "fail" and check.failed
    assert "interval [0.850, 0.930]" in check.message() and ">= 0.98" in check.message()
    assert ratio_check("slow", [r + 0.10 for r in noisy], high_bound=1.01).verdict == "fail"
    two_sided = ratio_check("delay", noisy, low_bound=0.90, high_bound=1.05)
    assert two_sided.verdict == "pass" and two_sided.as_dict()["failed"] is False
    assert two_sided.as_dict()["verdict"] == "pass" and two_sided.as_dict()["half_width"] == pytest.approx(0.04)
    assert ratio_check("delay", noisy, low_bound=0.96, high_bound=1.05).verdict == "inconclusive"
    assert ratio_check("delay", noisy, low_bound=0.90, high_bound=1.0).verdict == "inconclusive"
    assert verdict_of(0.5, 0.6, 0.95, 1.05) == "fail" and verdict_of(1.1, 1.2, 0.95, 1.05) == "fail"


def test_a_check_written_before_the_three_verdicts_reads_with_one():
    from persist.benchjson.schema import read_check

    old = {"name": "x", "ratio": 0.95, "ci_low": 0.93, "ci_high": 0.99, "pairs": 9, "low_bound": 0.98}
    check = read_check({**old, "high_bound": None, "failed": False, "method": "sign test"})
    assert check.verdict == "inconclusive" and check.half_width == pytest.approx(0.03) and check.stopped is None
    assert read_check({**old, "ci_low": 0.985}).verdict == "pass"


class _Tick:
    """A fake clock: every round advances it by `round_s`."""

    def __init__(self, round_s: float):
        self.t, self.round_s = 0.0, round_s

    def now(self) -> float:
        return self.t

    def round(self, value):
        self.t += self.round_s
        return value


def test_sequential_pairs_run_abba_and_stop_once_the_interval_is_narrow():
    order, rng = [], random.Random(3)
    tick = _Tick(0.5)

    def reference():
        order.append("A")
        return tick.round(1.0 + rng.gauss(0, 0.002))

    def measured():
        order.append("B")
        return tick.round(1.0 + rng.gauss(0, 0.002))

    pairs = sequential_pairs(reference, measured, lambda a, b: (a / b,), (0.02,), cap_s=1000, now=tick.now)
    assert pairs.stopped == "narrow" and len(pairs.ratios) == 12  # quiet: the fewest pairs (6 ABBA blocks) decide
    assert "".join(order[:8]) == "ABBAABBA"
    check = pairs.check(0, "quiet", low_bound=0.98)
    assert check.verdict == "pass" and check.half_width < 0.02 and check.pairs == 12 and check.stopped == "narrow"


def test_sequential_pairs_stop_at_the_cap_after_a_whole_abba_block():
    rng, tick = random.Random(4), _Tick(1.0)
    noisy = lambda: tick.round(rng.lognormvariate(0, 0.3))  # noqa: E731
    pairs = sequential_pairs(noisy, noisy, lambda a, b: (a / b,), (0.02,), cap_s=30, now=tick.now)
    assert pairs.stopped == "cap" and len(pairs.ratios) == 16  # 12 pairs = 24 s, then checked every block: 32 s at 16
    assert pairs.spent_s == 32.0
    assert pairs.check(0, "noisy", low_bound=0.98).verdict == "inconclusive"


def test_sequential_pairs_stop_when_every_check_is_narrow():
    rng, tick = random.Random(5), _Tick(1.0)
    calls = {"n": 0}

    def value():
        calls["n"] += 1
        return tick.round(1.0 + rng.gauss(0, 0.001))

    # the second ratio is noisy: the pairs go on until the cap, though the first is narrow from the start
    pairs = sequential_pairs(
        value, value, lambda a, b: (a / b, rng.lognormvariate(0, 0.3)), (0.02, 0.02), cap_s=40, now=tick.now
    )
    assert pairs.stopped == "cap" and len(pairs.ratios) == 20
    with pytest.raises(ValueError, match="min_pairs=4"):
        sequential_pairs(value, value, lambda a, b: (1.0,), (0.1,), cap_s=1, min_pairs=4)


def test_a_ratio_check_needs_enough_pairs_for_an_interval():
    with pytest.raises(ValueError, match=f"use at least {MIN_PAIRS}"):
        ratio_check("few", [1.0] * (MIN_PAIRS - 1), low_bound=0.98)


def test_mean_interval_uses_student_t():
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-4)  # t(0.975, 2) = 4.3027
    assert math.isnan(mean_ci([5.0])[1])
    assert mean_interval([5.0]) == (5.0, 5.0) and mean_interval([1.0, 2.0, 3.0]) == pytest.approx((2 - half, 2 + half))


# the two-sided 95% t factors of the table stats.py held before scipy (df 1..30), to three decimals
OLD_T_TABLE = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145)
OLD_T_TABLE += (2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048)
OLD_T_TABLE += (2.045, 2.042)


def test_the_t_factor_is_students_at_every_df():
    assert [round(t_975(df), 3) for df in range(1, 31)] == list(OLD_T_TABLE)
    # changed: the old table gave 1.96 (the normal's factor) for every df above 30; Student's t is wider there
    assert t_975(40) == pytest.approx(2.021, abs=5e-4) and t_975(100) == pytest.approx(1.984, abs=5e-4)
    values = [float(i % 7) for i in range(41)]
    _, half = mean_ci(values)
    assert half == pytest.approx(2.021 * statistics.stdev(values) / math.sqrt(41), rel=1e-3)


def test_the_median_interval_matches_the_binomial_rule_at_every_n():
    for n in range(1, 60):  # the rank j from the exact binomial sum, as stats.py computed it before scipy
        j, tail = 0, 0.0
        while j + 1 <= n // 2 and 1 - 2 * (tail + math.comb(n, j) / 2**n) >= 0.95:
            j, tail = j + 1, tail + math.comb(n, j) / 2**n
        _, low, high = median_ci(list(range(1, n + 1)))
        assert (low, high) == ((j, n + 1 - j) if j else (-math.inf, math.inf)), n


def test_mann_whitney_is_exact_to_20_a_side_and_approximate_above():
    assert mann_whitney_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)
    assert mann_whitney_p(list(range(20)), list(range(20, 40))) == pytest.approx(2 / math.comb(40, 20))
    # 21 a side: the normal approximation, with continuity correction (U = 0, z = (220.5 - 0.5) / sd)
    sd = math.sqrt(21 * 21 * 43 / 12)
    expected = math.erfc((220.5 - 0.5) / sd / math.sqrt(2))
    assert mann_whitney_p(list(range(21)), list(range(21, 42))) == pytest.approx(expected)


def test_an_abba_block_cancels_what_going_first_does():
    # the measured pipeline is as fast as the reference, but whichever round runs second is 5% slower
    tick, rounds = _Tick(1.0), {"n": 0}

    def round_s():
        rounds["n"] += 1
        return tick.round(1.05 if rounds["n"] % 2 == 0 else 1.0)

    pairs = sequential_pairs(round_s, round_s, lambda a, b: (a / b,), (0.02,), cap_s=100, now=tick.now)
    assert {round(r[0], 3) for r in pairs.ratios} == {0.952, 1.05}  # each pair alone is biased one way or the other
    check = pairs.check(0, "order", low_bound=0.98)
    assert check.ratio == pytest.approx(1.0) and check.verdict == "pass" and check.pairs == 12
