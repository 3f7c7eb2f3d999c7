"""The paper's momentum SGD, exactly:  v = gamma*v - mu_t*g ;  theta = theta + v.

torch.optim.SGD keeps the learning rate outside the velocity (b = gamma*b + g ; theta -= lr_t*b). The two agree while
lr is constant. Under the paper's adaptive schedule (lr = k*mu on the k-th use of a batch) they do not: SGD would
rescale the whole momentum history by the current lr, the paper scales only the newest gradient.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class PaperSGD(Optimizer):
    def __init__(self, params, lr: float = 0.001, momentum: float = 0.5):
        if not lr > 0:
            raise ValueError(f"lr={lr!r} is not allowed: use lr > 0")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum={momentum!r} is not allowed: use 0 <= momentum < 1")
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            velocities = [self._velocity(p) for p in params]
            # lr is read from the group at every step, so a schedule may change it between steps
            torch._foreach_mul_(velocities, group["momentum"])
            torch._foreach_add_(velocities, [p.grad for p in params], alpha=-group["lr"])
            torch._foreach_add_(params, velocities)
        return loss

    def _velocity(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "velocity" not in state:
            state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["velocity"]


def set_lr(optimizer: Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
