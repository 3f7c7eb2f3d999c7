from functools import partial

import pytest

from persist.measure.clock import HostClock, NullClock, StepTimes, sum_intervals


def test_host_clock_sums_steps_and_gaps():
    # steps at [1,3], [4,8], [10,11]: busy 2+4+1 = 7, idle (3->4) + (8->10) = 3
    clock = HostClock(now=partial(next, iter([1.0, 3.0, 4.0, 8.0, 10.0, 11.0])))
    clock.begin_epoch(steps=3)
    for _ in range(3):
        clock.step_start()
        clock.step_end()
    assert clock.resolve() == StepTimes(compute_s=7.0, gpu_idle_s=3.0, steps=3)


def test_begin_epoch_forgets_the_previous_epoch():
    clock = HostClock(now=partial(next, iter([0.0, 1.0, 5.0, 5.5])))
    clock.begin_epoch(1)
    clock.step_start(), clock.step_end()
    clock.begin_epoch(1)
    clock.step_start(), clock.step_end()
    assert clock.resolve() == StepTimes(0.5, 0.0, 1)


def test_unbalanced_steps_are_an_error():
    with pytest.raises(RuntimeError, match="2 step starts but 1 step ends"):
        sum_intervals([0.0, 1.0], [0.5], lambda a, b: b - a)


def test_null_clock_times_nothing():
    clock = NullClock()
    clock.begin_epoch(3)
    clock.step_start()
    clock.step_end()
    assert clock.resolve().steps == 0
