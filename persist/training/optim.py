"""The paper's momentum SGD, exactly:  v = gamma*v - mu_t*g ;  theta = theta + v.

torch.optim.SGD keeps the learning rate outside the velocity (b = gamma*b + g ; theta -= lr_t*b). The two agree while
lr is constant. Under the paper's adaptive schedule (lr = k*mu on the k-th use of a batch) they do not: SGD would
rescale the whole momentum history by the current lr, the paper scales only the newest gradient.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class PaperSGD(Optimizer):
    """The paper's update. Under fp16, GradScaler hands it `found_inf` (and `grad_scale` when the gradients are still
    scaled) as device tensors, and a step whose gradients overflowed leaves weights and velocities as they were, on the
    device: the scaler then reads no flag on the host, so no fp16 step waits for the GPU."""

    _step_supports_amp_scaling = True  # GradScaler.step: set found_inf/grad_scale and call step(), no .item()

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
        found_inf = getattr(self, "found_inf", None)  # set by GradScaler.step for this call only
        grad_scale = getattr(self, "grad_scale", None)  # None once the scaler has unscaled the gradients
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            velocities = [self._velocity(p) for p in params]
            grads = [p.grad for p in params]
            if grad_scale is not None:
                grads = torch._foreach_div(grads, grad_scale.to(grads[0].device))
            # lr is read from the group at every step, so a schedule may change it between steps
            if found_inf is None:
                torch._foreach_mul_(velocities, group["momentum"])
                torch._foreach_add_(velocities, grads, alpha=-group["lr"])
                torch._foreach_add_(params, velocities)
            else:
                _step_unless_inf(params, velocities, grads, group["lr"], group["momentum"], found_inf)
        return loss

    def _velocity(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "velocity" not in state:
            state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["velocity"]


def _step_unless_inf(params, velocities, grads, lr: float, momentum: float, found_inf: torch.Tensor) -> None:
    """The paper's update where `found_inf` is 0, nothing where it is not: decided on the device, per tensor."""
    keep = found_inf.to(params[0].device).reshape(()) == 0
    for p, v, g in zip(params, velocities, grads, strict=True):
        v.copy_(torch.where(keep, v * momentum - lr * g, v))  # an inf gradient never reaches v (where, not a product)
        p.add_(torch.where(keep, v, torch.zeros((), dtype=v.dtype, device=v.device)))


def set_lr(optimizer: Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
