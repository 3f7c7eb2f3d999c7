"""persist.reuse(..., optimizer=opt) scales each param group's current lr (as the user's scheduler left it) by the
use's factor during that use, and puts the scheduler's lr back after the batch's uses: it composes with any
scheduler, and a checkpoint between batches saves the scheduler's lr."""

import threading

import pytest
import torch

import persist


def _sgd(lr: float = 0.1) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _epochs(optimizer, scheduler, batches: list, epochs: int, **reuse) -> list[float]:
    """The lr every optimizer.step saw; the scheduler stepped once per epoch, after the loop."""
    seen = []
    for _ in range(epochs):
        for _batch, _use in persist.reuse(batches, optimizer=optimizer, **reuse):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
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
            seen.append([group["lr"] for group in optimizer.param_groups])
            optimizer.step()
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
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
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
        seen.append((batch, use.k, optimizer.param_groups[0]["lr"]))
        if (batch, use.k) == ("a", 3):
            gate.set()
    assert [(b, k) for b, k, _ in seen] == [("a", 1), ("a", 2), ("a", 3), ("b", 1)]
    assert [lr for *_, lr in seen] == pytest.approx([0.1, 0.2, 0.3, 0.1])
    assert optimizer.param_groups[0]["lr"] == 0.1


def test_an_optimizer_without_param_groups_is_one_clear_error():
    with pytest.raises(persist.ConfigError, match=r"optimizer=.*param_groups"):
        persist.reuse(["a"], k=2, optimizer="sgd")
