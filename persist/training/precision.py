"""Numeric precision, memory layout and compilation of a run: `--precision fp32|tf32|bf16|fp16`, `--channels-last`,
`--compile`, decided once per run from the RunConfig and the device.

- fp32: float32 tensors with torch's own math settings left as they are (by default IEEE matmuls, and cuDNN
  convolutions allowed TF32), so runs from before this option keep their numbers; the manifest's `math` records them.
- tf32: float32 tensors, CUDA matmuls and cuDNN convolutions both on TF32 tensor cores; a CUDA-only mode, refused on
  a CPU (there it would silently be fp32).
- bf16 / fp16: torch.autocast around forward and loss; weights, gradients and the optimizer stay float32. fp16 has
  a narrow exponent, so its gradients go through a GradScaler: the loss is scaled up before backward, the gradients
  are unscaled before the optimizer sees them, and a step whose gradients overflowed is skipped. The paper's
  optimizer (PaperSGD) declares AMP support: the scaler hands it the overflow flag as a device tensor and the skip
  happens on the device, so no fp16 step reads a flag on the host (torch's default path calls .item() per step).
- channels-last: the model's weights and every input batch in NHWC memory order (what tensor cores want).
- compile: torch.compile of the training forward; its first call compiles, and the trainer makes that call once
  before the first timed epoch (`warm_up_compile`), so the compile time is reported on its own (compile_s), never
  inside an epoch.
"""

from __future__ import annotations

import contextlib
import copy
import time

import torch
from torch import nn

from persist.config import PRECISIONS
from persist.errors import ConfigError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse, in one line, a precision that cannot run as asked on this device."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r} is not allowed: choose one of {', '.join(PRECISIONS)}")
    if precision == "tf32" and device.type != "cuda":
        raise ConfigError(
            f"precision='tf32' is not allowed on {device.type}: TF32 is a CUDA tensor-core mode (on a CPU it would be "
            "plain fp32); use fp32 or bf16"
        )


class Precision:
    """What one run's precision means on its device: the autocast context, the gradient scaler, the layout."""

    def __init__(self, precision: str, device: torch.device, channels_last: bool = False):
        check_precision(precision, device)
        self.precision, self.device, self.channels_last = precision, device, channels_last
        if device.type == "cuda" and precision == "tf32":  # per process, before the first kernel
            _allow_tf32()
        self.dtype = AUTOCAST_DTYPES.get(precision)
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None

    def autocast(self):
        """The context that forward and loss run in: autocast for bf16/fp16, nothing otherwise."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def model(self, model: nn.Module) -> nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the run's memory order (a no-op when it already is)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """backward and the optimizer step; under fp16 through the scaler (unscale, skip on overflow, update)."""
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)  # the paper's update must see true gradients: unscale before its step
        self.scaler.step(optimizer)  # skips the step when a gradient is inf/NaN
        self.scaler.update()

    def describe(self) -> dict:
        described = {"precision": self.precision, "channels_last": self.channels_last}
        if self.dtype is not None:
            described["autocast_dtype"] = str(self.dtype).removeprefix("torch.")
        if self.scaler is not None:
            described["grad_scaler"] = True
        return described


def _allow_tf32() -> None:
    """TF32 for matmuls and cuDNN convolutions, set so that both of torch's readers agree: the allow_tf32 flags, which
    torch >= 2.9 mirrors into the fp32_precision API. Setting only fp32_precision leaves the legacy state behind, and
    any later reader of it (inductor under --compile, get_float32_matmul_precision) raises on the mix."""
    torch.set_float32_matmul_precision("high")  # the legacy matmul state: TF32 allowed
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    tf32_state()  # both readers answer, and agree, or this raises here rather than inside a compile


def tf32_state() -> dict:
    """TF32 as each of torch's readers sees it: the allow_tf32 flags, the float32 matmul precision and, where torch
    has it, the fp32_precision API. Raises if the two APIs disagree (torch's own check)."""
    state = {
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        state["matmul_fp32_precision"] = torch.backends.cuda.matmul.fp32_precision
    return state


def warm_up_compile(step, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor):
    """Compile by running one forward+backward on a batch of the training shape, then put the model and optimizer
    back exactly as they were (weights, batch-norm statistics, momentum): the compile changes no training number.
    Returns the seconds it took. `step(x, y)` runs forward and backward only."""
    model_state = copy.deepcopy(model.state_dict())
    optimizer_state = copy.deepcopy(optimizer.state_dict())
    start = time.perf_counter()
    step(x, y)
    if x.device.type == "cuda":
        torch.cuda.synchronize(x.device)  # deliberate sync: the compiled kernels have run before the clock stops
    compile_s = time.perf_counter() - start
    model.load_state_dict(model_state)
    optimizer.load_state_dict(optimizer_state)
    optimizer.zero_grad(set_to_none=True)
    return compile_s
