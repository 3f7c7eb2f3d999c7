"""PaperSGD is the paper's update; torch.optim.SGD agrees with it only while lr is constant."""

import torch

from persist.registry import LR_SCHEDULES
from persist.training.optim import PaperSGD, set_lr
from persist.training.schedules import counts, lr_of_use


def _problem(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
    x, y = torch.randn(16, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
    return model, x, y


def _trajectory(make_optimizer, lrs, seed=0):
    model, x, y = _problem(seed)
    optimizer = make_optimizer(model.parameters())
    for lr in lrs:
        set_lr(optimizer, lr)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
        optimizer.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_equals_torch_sgd_while_lr_is_constant():
    lrs = [0.01] * 12
    paper = _trajectory(lambda p: PaperSGD(p, lr=0.01, momentum=0.5), lrs)
    torch_sgd = _trajectory(lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.5), lrs)
    torch.testing.assert_close(paper, torch_sgd, rtol=1e-12, atol=1e-12)


def test_differs_from_torch_sgd_under_k_times_mu():
    lrs = lr_of_use("linear", 0.01, 5) * 3  # 0.01, 0.02, ..., 0.05, repeated: the paper's adaptive schedule
    paper = _trajectory(lambda p: PaperSGD(p, lr=0.01, momentum=0.5), lrs)
    torch_sgd = _trajectory(lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.5), lrs)
    assert (paper - torch_sgd).abs().max() > 1e-4


def test_is_exactly_the_papers_recurrence():
    """v = gamma*v - mu_t*g ; theta = theta + v, written out by hand in float64."""
    lrs, gamma = [0.01, 0.03, 0.02, 0.05], 0.5
    model, x, y = _problem()
    theta = [p.detach().clone() for p in model.parameters()]
    velocity = [torch.zeros_like(t) for t in theta]
    for lr in lrs:
        for p, t in zip(model.parameters(), theta, strict=True):
            p.data.copy_(t)
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
        for i, p in enumerate(model.parameters()):
            velocity[i] = gamma * velocity[i] - lr * p.grad
            theta[i] = theta[i] + velocity[i]
    expected = torch.cat([t.flatten() for t in theta])
    torch.testing.assert_close(
        _trajectory(lambda p: PaperSGD(p, lr=0.01, momentum=gamma), lrs), expected, rtol=1e-12, atol=1e-12
    )


def test_reads_lr_from_param_group_every_step():
    model, x, y = _problem()
    optimizer = PaperSGD(model.parameters(), lr=1.0, momentum=0.0)
    before = [p.detach().clone() for p in model.parameters()]
    set_lr(optimizer, 0.0)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_rejects_bad_hyperparameters():
    import pytest

    with pytest.raises(ValueError, match="lr=0"):
        PaperSGD([torch.zeros(1, requires_grad=True)], lr=0)
    with pytest.raises(ValueError, match="momentum=1"):
        PaperSGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=1)


def test_schedules_and_counts():
    assert lr_of_use("constant", 0.001, 3) == [0.001] * 3
    assert lr_of_use("linear", 0.5, 3) == [0.5, 1.0, 1.5]
    assert set(LR_SCHEDULES.names()) == {"constant", "linear"}
    assert counts(50_000, 512, 5) == {"loads": 97, "steps": 485, "fresh_samples": 49_664, "sample_steps": 248_320}
