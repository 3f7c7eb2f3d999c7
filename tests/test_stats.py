"""The statistics behind every ratio check: a median interval that needs no noise model, and the failure rule."""

import math
import random

import pytest

from persist.stats import MIN_PAIRS, mean_ci, median_ci, ratio_check


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


def test_a_ratio_check_fails_only_when_the_whole_interval_misses_the_bound():
    noisy = [0.90, 0.95, 0.97, 0.99, 1.00, 1.01, 1.02, 1.03, 1.10]  # median 1.00, interval [0.95, 1.03]
    assert not ratio_check("noisy", noisy, low_bound=0.98).failed
    assert not ratio_check("noisy", noisy, low_bound=1.02).failed  # median below, interval reaches it: not shown
    short = [r - 0.10 for r in noisy]  # interval [0.85, 0.93]: wholly below 0.98
    check = ratio_check("short", short, low_bound=0.98)
    assert check.failed
    assert "interval [0.850, 0.930]" in check.message() and ">= 0.98" in check.message()
    assert ratio_check("slow", [r + 0.10 for r in noisy], high_bound=1.01).failed
    two_sided = ratio_check("delay", noisy, low_bound=0.95, high_bound=1.05)
    assert not two_sided.failed and two_sided.as_dict()["failed"] is False


def test_a_ratio_check_needs_enough_pairs_for_an_interval():
    with pytest.raises(ValueError, match=f"use at least {MIN_PAIRS}"):
        ratio_check("few", [1.0] * (MIN_PAIRS - 1), low_bound=0.98)


def test_mean_interval_uses_student_t():
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert math.isnan(mean_ci([5.0])[1])
