"""The power of the bench's ratio checks, shown: simulated paired rounds with known noise and a known shortfall go
through the same driver and verdict rule as the bench (persist.stats.sequential_pairs, RatioCheck.verdict), and the
pass / inconclusive / fail rates are asserted.

Noise levels are those of reports/cpu-smoke (9 pairs, sign-test interval [x_(2), x_(8)], about +-0.93 sd of the
per-pair ratio): torchvision's interval [0.960, 1.001] gives a ratio sd of about 0.02, DALI's [0.766, 1.017] about
0.135, preloaded's [0.821, 1.208] about 0.2. A round's time is lognormal with sigma = ratio sd / sqrt(2), and on the
noisy levels one round in ten is hit by a 1.5x spike (another process); the second round of every pair runs 3% slower
(an order effect that ABBA must cancel). Each round lasts about 1 s on a fake clock, and the cap is the smoke's 30 s.

Rates over 1000 seeded trials (`simulate` below), for a check held to >= 0.98 with tolerance 0.02; pairs is the
median number of pairs used:

    noise        true ratio   pass    inconclusive   fail    pairs
    quiet        0.90         0.000   0.000          1.000   12
    torchvision  0.90         0.000   0.000          1.000   12
    dali         0.90         0.000   0.905          0.095   14
    preloaded    0.90         0.000   0.953          0.047   14
    quiet        1.00         1.000   0.000          0.000   12
    torchvision  1.00         0.614   0.386          0.000   12
    dali         1.00         0.016   0.981          0.003   16
    preloaded    1.00         0.013   0.983          0.004   14

A 10% shortfall never passes: it fails on quiet and torchvision-like noise, and on DALI's or preloaded's noise it is
inconclusive at the 30 s cap (the interval is too wide to tell), which a quiet machine or a longer cap resolves.
Without a shortfall, a check fails at most at the sign test's one-sided error rate.
"""

from __future__ import annotations

import collections
import random

import pytest

from persist.stats import sequential_pairs

NOISE = {  # name: (sigma of one round's lognormal time, share of rounds hit by a 1.5x spike)
    "quiet": (0.005, 0.0),
    "torchvision": (0.014, 0.0),
    "dali": (0.095, 0.1),
    "preloaded": (0.14, 0.1),
}


def simulate(
    throughput_ratio: float,
    sigma: float,
    spike: float,
    *,
    trials: int = 500,
    seed: int = 0,
    order: float = 0.03,
    cap_s: float = 30.0,
    low_bound: float = 0.98,
    tolerance: float = 0.02,
) -> dict:
    """Verdict rates (and the median pairs used) of a check whose measured rounds are 1/throughput_ratio as long as
    the reference's, on a fake clock that advances by each round's simulated time."""
    rng = random.Random(seed)
    verdicts, pairs_used = collections.Counter(), []
    for _ in range(trials):
        clock = {"t": 0.0, "rounds": 0}

        def round_s(base_s: float, clock: dict = clock) -> float:
            s = base_s * rng.lognormvariate(0, sigma) * (1.5 if rng.random() < spike else 1.0)
            s *= 1 + order * (clock["rounds"] % 2)  # the second round of each pair is slower
            clock["rounds"] += 1
            clock["t"] += s
            return s

        pairs = sequential_pairs(
            lambda: round_s(1.0),
            lambda: round_s(1.0 / throughput_ratio),
            lambda ref, ours: (ref / ours,),
            (tolerance,),
            cap_s,
            now=lambda clock=clock: clock["t"],
        )
        check = pairs.check(0, "simulated", low_bound=low_bound)
        verdicts[check.verdict] += 1
        pairs_used.append(check.pairs)
    rates = {v: verdicts[v] / trials for v in ("pass", "inconclusive", "fail")}
    return {**rates, "median_pairs": sorted(pairs_used)[trials // 2]}


@pytest.mark.parametrize("noise", NOISE)
def test_a_10_percent_shortfall_never_passes(noise):
    rates = simulate(0.90, *NOISE[noise], trials=1000, seed=1)
    assert rates["pass"] == 0
    if noise in ("quiet", "torchvision"):
        assert rates["fail"] == 1.0  # caught within the cap
    else:  # the noisiest of reports/cpu-smoke: mostly inconclusive at the cap, sometimes caught
        assert rates["fail"] >= 0.03 and rates["median_pairs"] > 12  # it used its cap


@pytest.mark.parametrize("noise", NOISE)
def test_no_shortfall_is_failed_at_most_at_the_sign_tests_error_rate(noise):
    rates = simulate(1.0, *NOISE[noise], trials=1000, seed=2)
    assert rates["fail"] <= 0.025


def test_a_quiet_check_without_a_shortfall_passes_in_the_fewest_pairs_despite_an_order_effect():
    # the second round of each pair is 3% slower (the default `order`): each ABBA block cancels it
    rates = simulate(1.0, *NOISE["quiet"], trials=1000, seed=1)
    assert rates["pass"] == 1.0 and rates["median_pairs"] == 12
