"""persist.reuse(..., optimizer=opt) scales each param group's current lr (as the user's scheduler left it) by the
use's factor during that use's optimizer.step(), and puts the scheduler's lr back right after it: it composes with
any scheduler, and a checkpoint or scheduler.step() anywhere in the loop sees the scheduler's lr."""

import threading

import pytest
import torch

import persist


def _sgd(lr: float = 0.1) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _lrs_in_step(optimizer) -> list[float]:
    """optimizer.step(), and each group's lr as the step ran at it (read by a pre-hook after persist's)."""
    lrs = []
    hook = optimizer.register_step_pre_hook(lambda opt, *_: lrs.extend(group["lr"] for group in opt.param_groups))
    optimizer.step()
    hook.remove()
    return lrs


def _lr_in_step(optimizer) -> float:
    return _lrs_in_step(optimizer)[0]


def _epochs(optimizer, scheduler, batches: list, epochs: int, **reuse) -> list[float]:
    """The lr every optimizer.step saw; the scheduler stepped once per epoch, after the loop."""
    seen = []
    for _ in range(epochs):
        for _batch, _use in persist.reuse(batches, optimizer=optimizer, **reuse):
            seen.append(_lr_in_step(optimizer))
        scheduler.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(scheduler.get_last_lr()[0])
    return seen


def test_linear_k2_scales_the_step_lr_scheduler_s_rate_and_gives_it_back():
    optimizer = _sgd(0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.1)
    seen = _epochs(optimizer, scheduler, ["a"], 2, k=2, schedule="linear")
    assert seen == pytest.approx([0.1, 0.2, 0.01, 0.02])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001) == scheduler.get_last_lr()[0]


def test_every_group_is_scaled_and_a_checkpoint_between_batches_saves_the_scheduler_s_lr():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD([{"params": [params[0]], "lr": 0.1}, {"params": [params[1]], "lr": 0.5}])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    seen, saved = [], []
    for _epoch in range(3):
        for _batch, _use in persist.reuse(["a", "b"], k=3, schedule="linear", optimizer=optimizer):
            seen.append(_lrs_in_step(optimizer))
        saved.append([group["lr"] for group in optimizer.state_dict()["param_groups"]])
        scheduler.step()
    decay = [1, 1, 0.5]
    expected = [[0.1 * d * k, 0.5 * d * k] for d in decay for _ in "ab" for k in (1, 2, 3)]
    assert seen == [pytest.approx(row) for row in expected]
    assert saved == [pytest.approx([0.1 * d, 0.5 * d]) for d in decay]


def test_a_scheduler_stepped_between_batches_inside_the_loop_is_kept():
    optimizer = _sgd(0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    seen = []
    for _batch, use in persist.reuse(["a", "b"], k=2, schedule="linear", optimizer=optimizer):
        seen.append(_lr_in_step(optimizer))
        if use.k == 2:
            scheduler.step()  # per batch, on its last use: it decays the scaled rate, the ratio is kept
    assert seen == pytest.approx([0.1, 0.2, 0.05, 0.1])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)  # the decayed rate, unscaled, kept for batch 3


@pytest.mark.parametrize("leave", ["break", "raise"])
def test_leaving_the_loop_early_restores_the_lr(leave):
    optimizer = _sgd(0.1)

    def loop():
        for _batch, use in persist.reuse(["a", "b"], k=2, schedule="linear", optimizer=optimizer):
            if use.k == 2:
                if leave == "raise":
                    raise RuntimeError("the user's step failed")
                break  # the dropped generator is closed: its finally gives the lr back
        assert optimizer.param_groups[0]["lr"] == 0.1

    if leave == "raise":
        with pytest.raises(RuntimeError):
            loop()
    else:
        loop()
    assert optimizer.param_groups[0]["lr"] == 0.1


def test_auto_scales_each_use_it_takes_and_gives_the_lr_back():
    gate = threading.Event()

    def loader():
        yield "a"
        gate.wait(5)  # stuck until "a" has been used as often as the cap allows
        yield "b"

    optimizer = _sgd(0.1)
    seen = []
    for batch, use in persist.reuse(loader(), k="auto", cap=3, schedule="linear", optimizer=optimizer):
        seen.append((batch, use.k, _lr_in_step(optimizer)))
        if (batch, use.k) == ("a", 3):
            gate.set()
    assert [(b, k) for b, k, _ in seen] == [("a", 1), ("a", 2), ("a", 3), ("b", 1)]
    assert [lr for *_, lr in seen] == pytest.approx([0.1, 0.2, 0.3, 0.1])
    assert optimizer.param_groups[0]["lr"] == 0.1


def test_an_optimizer_without_param_groups_is_one_clear_error():
    with pytest.raises(persist.ConfigError, match=r"optimizer=.*torch.optim.Optimizer"):
        persist.reuse(["a"], k=2, optimizer="sgd")


def _optimizer(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _seen(optimizer):
    """The lr each optimizer.step() ran at (read inside the step, after any pre-hook)."""
    lrs = []
    optimizer.register_step_post_hook(lambda opt, *_: lrs.append(opt.param_groups[0]["lr"]))
    return lrs


def _step(optimizer):
    optimizer.param_groups[0]["params"][0].grad = torch.zeros(1)
    optimizer.step()


def test_a_steplr_stepped_per_batch_decays_and_the_factors_ride_on_it():
    optimizer = _optimizer()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.1)
    lrs = _seen(optimizer)
    for _, use in persist.reuse([0, 1], k=2, schedule="linear", optimizer=optimizer):
        _step(optimizer)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(scheduler.get_last_lr()[0])  # between steps
        if use.k == 2:
            scheduler.step()
    assert lrs == pytest.approx([0.1, 0.2, 0.01, 0.02])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001) == pytest.approx(scheduler.get_last_lr()[0])


def test_a_steplr_stepped_per_epoch_and_a_checkpoint_between_batches_keeps_the_schedulers_lr():
    optimizer = _optimizer()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.1)
    lrs, saved = _seen(optimizer), []
    for _epoch in range(2):
        for _, use in persist.reuse([0, 1], k=2, schedule="linear", optimizer=optimizer):
            _step(optimizer)
            if use.k == 2:
                saved.append(optimizer.state_dict()["param_groups"][0]["lr"])
        scheduler.step()
    assert lrs == pytest.approx([0.1, 0.2, 0.1, 0.2, 0.01, 0.02, 0.01, 0.02])
    assert saved == pytest.approx([0.1, 0.1, 0.01, 0.01])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(scheduler.get_last_lr()[0]) == pytest.approx(0.001)


def test_leaving_the_loop_early_or_a_failing_step_restores_the_lr():
    optimizer = _optimizer()
    for _, _use in persist.reuse([0, 1], k=3, schedule="linear", optimizer=optimizer):
        _step(optimizer)
        break
    assert optimizer.param_groups[0]["lr"] == 0.1
    failing = _optimizer()
    failing.register_step_pre_hook(lambda *_: (_ for _ in ()).throw(RuntimeError("boom")))
    loop = persist.reuse([0], k=2, schedule="linear", optimizer=failing)
    with pytest.raises(RuntimeError, match="boom"):
        for _, use in loop:
            if use.k == 2:
                _step(failing)
    loop.close()
    assert failing.param_groups[0]["lr"] == 0.1
    assert len(failing._optimizer_step_pre_hooks) == 1  # the test's own hook only


def test_adaptive_reuse_scales_each_use_and_restores_it():
    optimizer = _optimizer()
    lrs = _seen(optimizer)
    taken = []
    for _, use in persist.reuse([0, 1], k="auto", cap=2, schedule="linear", optimizer=optimizer):
        _step(optimizer)
        taken.append(use.lr_factor)
    assert lrs == pytest.approx([0.1 * f for f in taken])
    assert optimizer.param_groups[0]["lr"] == 0.1
    assert not optimizer._optimizer_step_pre_hooks and len(optimizer._optimizer_step_post_hooks) == 1  # _seen's
